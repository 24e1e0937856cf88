"""Tests for screener.spool: flags that Redis has not confirmed yet, one file each."""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from screener.model import CallerId, Flag, FlagSource, Presentation
from screener.number import normalise
from screener.spool import Spool


def make_flag(flag_id: str = "1700000000.1", raw: str = "13812341234") -> Flag:
    return Flag(
        flag_id=flag_id,
        caller=CallerId(raw, "", Presentation.ALLOWED, normalise(raw, "CN")),
        called="4008001234",
        hotline="service",
        queue="hotline",
        agent="PJSIP/agent1",
        agent_channel="PJSIP/agent1-00000002",
        caller_channel="PJSIP/trunk-00000001",
        uniqueid=flag_id,
        linkedid=flag_id,
        source=FlagSource.FEATURE,
        at=datetime(2024, 3, 6, 14, 30, tzinfo=UTC),
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    s.open()
    return s


def test_open_creates_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "spool"
    Spool(directory).open()
    assert directory.is_dir()


def test_put_pending_remove(spool: Spool) -> None:
    flag = make_flag()
    assert len(spool) == 0
    assert spool.put(flag) is True
    assert len(spool) == 1
    assert spool.pending() == [flag]
    assert (spool.directory / "1700000000.1.json").is_file()
    spool.remove(flag.flag_id)
    assert len(spool) == 0
    assert spool.pending() == []


def test_remove_of_an_unknown_flag_is_a_no_op(spool: Spool) -> None:
    spool.remove("1700000000.99")
    assert len(spool) == 0


def test_duplicate_put_returns_false_and_keeps_the_first(spool: Spool) -> None:
    first = make_flag()
    second = dataclasses.replace(first, agent="PJSIP/agent9")
    assert spool.put(first) is True
    assert spool.put(second) is False
    assert spool.pending() == [first]
    assert len(spool) == 1


def test_file_is_private(spool: Spool) -> None:
    spool.put(make_flag())
    mode = (spool.directory / "1700000000.1.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_fsync_mode_writes_the_same_file(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", fsync=True)
    s.open()
    assert s.put(make_flag()) is True
    assert s.pending() == [make_flag()]


def test_pending_is_oldest_first(spool: Spool) -> None:
    ids = ["1700000000.3", "1700000000.1", "1700000000.2"]
    for n, flag_id in enumerate(ids):
        spool.put(make_flag(flag_id))
        path = spool.directory / f"{flag_id}.json"
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))
    assert [f.flag_id for f in spool.pending()] == ids


def test_a_leftover_temporary_is_never_visible_and_open_clears_it(spool: Spool) -> None:
    # A crash between os.write and os.replace leaves ".<id>.tmp": half a flag.
    leftover = spool.directory / ".1700000000.7.tmp"
    leftover.write_bytes(b'{"flag_id": "1700000000.7", "cal')
    assert spool.pending() == []
    assert len(spool) == 0
    restarted = Spool(spool.directory)
    restarted.open()
    assert not leftover.exists()
    assert restarted.pending() == []


def test_put_leaves_no_temporary_behind(spool: Spool) -> None:
    spool.put(make_flag())
    assert sorted(p.name for p in spool.directory.iterdir()) == ["1700000000.1.json"]


def test_put_over_a_stale_temporary_of_the_same_id(spool: Spool) -> None:
    (spool.directory / ".1700000000.1.tmp").write_bytes(
        b"garbage that is longer than the flag" * 50
    )
    assert spool.put(make_flag()) is True
    assert spool.pending() == [make_flag()]
    assert not (spool.directory / ".1700000000.1.tmp").exists()


def test_open_keeps_complete_files(spool: Spool) -> None:
    spool.put(make_flag())
    spool.open()
    assert spool.pending() == [make_flag()]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"null",
        b"[]",
        b'"a string"',
        b"{}",
        b"\xff\xfe\xfd",
        b'{"flag_id": "x", "caller": {"raw": "1"}}',
    ],
)
def test_unreadable_file_is_moved_aside_as_bad(
    spool: Spool, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    spool.put(make_flag("1700000000.1"))
    (spool.directory / "1700000000.2.json").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="screener.spool"):
        flags = spool.pending()
    assert [f.flag_id for f in flags] == ["1700000000.1"]
    (bad,) = spool.directory.glob("1700000000.2.*.bad")
    assert bad.read_bytes() == content
    assert not (spool.directory / "1700000000.2.json").exists()
    assert len(spool) == 1
    assert "1700000000.2.json" in caplog.text
    assert spool.pending() == flags  # the bad file is not read again


def test_hostile_flag_content_round_trips(spool: Spool) -> None:
    flag = make_flag(raw="123\r\nAction: Originate\r\n\x00\U0001f600" + "x" * 10_000)
    assert spool.put(flag) is True
    data = (spool.directory / "1700000000.1.json").read_bytes()
    assert data.isascii()
    assert b"\r" not in data
    assert b"\n" not in data
    assert spool.pending() == [flag]


@pytest.mark.parametrize(
    "flag_id",
    ["", "../escape", "a/b", "a\r\nb", "a b", "x" * 129, "*", "1700000000.1\x00", "é"],
)
def test_unsafe_flag_ids_are_rejected(spool: Spool, flag_id: str) -> None:
    with pytest.raises(ValueError, match="unsafe flag id"):
        spool.put(make_flag(flag_id))
    with pytest.raises(ValueError, match="unsafe flag id"):
        spool.remove(flag_id)
    assert list(spool.directory.iterdir()) == []
    assert not (spool.directory.parent / "escape.json").exists()


def test_len_counts_only_spooled_flags(spool: Spool) -> None:
    for n in range(5):
        spool.put(make_flag(f"1700000000.{n}"))
    (spool.directory / ".1700000000.9.tmp").write_bytes(b"")
    (spool.directory / "1700000000.8.bad").write_bytes(b"")
    assert len(spool) == 5


def test_a_file_that_cannot_be_read_is_moved_aside_too(spool: Spool) -> None:
    spool.put(make_flag("1700000000.1"))
    # root ignores file modes, so make the read fail with EISDIR instead of EACCES
    (spool.directory / "1700000000.2.json").mkdir()
    assert [f.flag_id for f in spool.pending()] == ["1700000000.1"]
    assert len(list(spool.directory.glob("1700000000.2.*.bad"))) == 1
