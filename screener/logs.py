"""Logging configuration as a dictConfig dict (applied by ``cli.py`` only)."""

from __future__ import annotations

import json
import logging
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=True)


def log_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """A dictConfig for screener: ``text`` for people, ``json`` for log shippers.

    >>> log_config("DEBUG")["root"]["level"]
    'DEBUG'
    """
    formatters: dict[str, Any] = {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": JsonFormatter},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # panoramisk logs every reconnect attempt at ERROR (screener reports reconnects
            # itself) and, at DEBUG, whole AMI messages with unmasked caller numbers: never.
            "screener.ami.panoramisk": {"level": "CRITICAL"},
            "aiohttp.access": {"level": "WARNING"},
        },
    }
