"""Tests for screener.logs: the dictConfig the CLI applies."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
from collections.abc import Iterator

import pytest

from screener.logs import JsonFormatter, log_config


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    named = {n: logging.getLogger(n).level for n in ("screener.ami.panoramisk", "aiohttp.access")}
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                handler.close()
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in named.items():
            logging.getLogger(name).setLevel(level)


def record(msg: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("screener.test", logging.WARNING, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def test_json_formatter_one_object_per_line() -> None:
    line = JsonFormatter().format(record("flag caller=%s", "h1234\r\n\u202e"))
    assert "\n" not in line
    assert line.isascii()
    data = json.loads(line)
    assert data["level"] == "WARNING"
    assert data["logger"] == "screener.test"
    assert data["message"] == "flag caller=h1234\r\n\u202e"
    assert set(data) == {"time", "level", "logger", "message"}


def test_json_formatter_includes_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(record("failed", exc_info=exc_info)))
    assert "RuntimeError: boom" in data["exc"]


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_config_shape(level: str, fmt: str) -> None:
    config = log_config(level, fmt)
    assert config["root"]["level"] == level
    assert config["handlers"]["stderr"]["formatter"] == fmt
    assert config["disable_existing_loggers"] is False
    panoramisk = config["loggers"]["screener.ami.panoramisk"]["level"]
    assert panoramisk == "CRITICAL"  # its DEBUG lines hold unmasked caller numbers


def test_log_config_applies(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logging.config.dictConfig(log_config("INFO", "json"))
    logging.getLogger("screener.test").info("hello n=%d", 3)
    logging.getLogger("screener.test").debug("hidden")
    logging.getLogger("screener.ami.panoramisk").error("reconnecting")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["hello n=3"]
