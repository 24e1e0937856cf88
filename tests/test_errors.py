"""Tests for screener.errors: the hierarchy boundaries rely on."""

from __future__ import annotations

import pytest

from screener.errors import (
    AgiProtocolError,
    AmiError,
    ChannelNotFound,
    ConfigError,
    ImportFormatError,
    LocalAgiError,
    RemoteAgiError,
    ScreenerError,
    StoreError,
    UnsafeValueError,
)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (ConfigError, ScreenerError),
        (StoreError, ScreenerError),
        (AmiError, ScreenerError),
        (ChannelNotFound, AmiError),
        (UnsafeValueError, AmiError),
        (AgiProtocolError, ScreenerError),
        (LocalAgiError, AgiProtocolError),
        (RemoteAgiError, AgiProtocolError),
        (ImportFormatError, ScreenerError),
        (ScreenerError, Exception),
    ],
)
def test_hierarchy(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)


def test_agi_error_hint() -> None:
    e = RemoteAgiError("line too long", hint="check the dialplan's AGI() URL")
    assert str(e) == "line too long"
    assert e.hint == "check the dialplan's AGI() URL"
    assert LocalAgiError("x").hint == ""


def test_import_format_error_lists_at_most_20_problems() -> None:
    problems = [(n, f"bad number {n}") for n in range(1, 26)]
    e = ImportFormatError(problems)
    assert e.problems == problems
    text = str(e)
    assert text.startswith("25 bad line(s), nothing imported: line 1: bad number 1; ")
    assert "line 20: bad number 20" in text
    assert "line 21" not in text
    assert text.endswith("(+5 more)")


def test_import_format_error_few_problems() -> None:
    assert str(ImportFormatError([(3, "x")])) == "1 bad line(s), nothing imported: line 3: x"
