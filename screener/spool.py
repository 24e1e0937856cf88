"""A durable local spool of flags not yet confirmed in Redis.

A flag is written here *before* the caller is moved and removed only after Redis confirmed it,
so neither a Redis outage nor a SIGKILL of the daemon loses a flag Asterisk delivered. One file
per flag, named by the flag id, written to a temporary name and renamed into place: a reader sees
a whole file or none. Because Redis recording is idempotent on the flag id, replaying a file that
was already stored (killed between the Redis write and the unlink) never doubles a flag.

By default the file is not fsynced: a process crash cannot lose it (the kernel has it); set
``fsync=True`` to also survive a power cut, at the price of a disk flush per flag.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from screener.model import Flag

logger = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class Spool:
    """Flags awaiting Redis, as files in ``directory``."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync

    def open(self) -> None:
        """Create the directory and clear half-written temporaries from a previous crash.

        Raises:
            OSError: the directory cannot be created or written.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _path(self, flag_id: str) -> Path:
        if not _ID.fullmatch(flag_id):
            raise ValueError(f"unsafe flag id {flag_id[:40]!r}")
        return self.directory / f"{flag_id}.json"

    def put(self, flag: Flag) -> bool:
        """Spool a flag; ``False`` if a flag with this id is already spooled."""
        path = self._path(flag.flag_id)
        if path.exists():
            return False
        tmp = self.directory / f".{flag.flag_id}.tmp"
        data = flag.to_json().encode("ascii")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True

    def remove(self, flag_id: str) -> None:
        """Forget a flag (stored in Redis, or dropped on purpose)."""
        self._path(flag_id).unlink(missing_ok=True)

    def pending(self) -> list[Flag]:
        """Every spooled flag, oldest first. Unreadable files are moved aside, never deleted."""
        flags = []
        for path in sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                flags.append(Flag.from_json(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as e:
                bad = path.with_name(f"{path.stem}.{time.time_ns()}.bad")
                logger.error(
                    "spool file unreadable file=%s kept_as=%s error=%s", path.name, bad.name, e
                )
                try:
                    path.rename(bad)
                except OSError as e2:
                    logger.error("spool file could not be moved aside file=%s error=%s", path, e2)
        return flags

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.json"))
