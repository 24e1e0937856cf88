"""The Redis key schema: every key screener uses is built here and nowhere else.

All keys share one hash tag (``{screener}`` by default), so the multi-key Lua scripts in
``store.py`` stay atomic on Redis Cluster too: screener's data (millions of flags, not billions)
fits one shard comfortably, and atomicity matters more than spreading it.

Caller-controlled text never reaches a key: callers appear only through ``CallerId.key`` (E.164,
``anonymous`` or a hash, see ``number.py``), and ids are checked by :func:`safe_part`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAFE_PART = re.compile(r"[A-Za-z0-9+._/@-]{1,128}")
_DAY = re.compile(r"[0-9]{8}")

DAY = 86_400
DEFAULT_RETENTION_DAYS = 400


def _day(day: str) -> str:
    if not _DAY.fullmatch(day):
        raise ValueError(f"day {day[:12]!r}: expected YYYYMMDD")
    return day


def safe_part(value: str) -> str:
    """Return ``value`` if it can be a key component, else raise ``ValueError``.

    >>> safe_part("+8613812341234")
    '+8613812341234'
    """
    if not _SAFE_PART.fullmatch(value):
        raise ValueError(f"unsafe key component {value[:40]!r}")
    return value


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Key builders for one deployment (``prefix`` separates deployments sharing a Redis)."""

    prefix: str = "screener"

    @property
    def root(self) -> str:
        return "{" + safe_part(self.prefix) + "}"

    # -- the event log ------------------------------------------------------------------------
    def flag(self, flag_id: str) -> str:
        """STRING: one flag as JSON, expiring after the retention period."""
        return f"{self.root}:flag:{safe_part(flag_id)}"

    @property
    def flags(self) -> str:
        """ZSET: flag id scored by epoch seconds (the event log's index)."""
        return f"{self.root}:flags"

    # -- per-caller aggregates ----------------------------------------------------------------
    def caller(self, caller_key: str) -> str:
        """HASH: count, first, last, last_flag, masked, kind, region, carrier, area."""
        return f"{self.root}:caller:{safe_part(caller_key)}"

    def caller_agents(self, caller_key: str) -> str:
        """ZSET: agent -> epoch of that agent's latest flag of this caller."""
        return f"{self.root}:caller:{safe_part(caller_key)}:agents"

    def caller_hours(self, caller_key: str) -> str:
        """HASH: hour of day (0-23) -> flags."""
        return f"{self.root}:caller:{safe_part(caller_key)}:hours"

    def caller_weekdays(self, caller_key: str) -> str:
        """HASH: ISO weekday (1-7) -> flags."""
        return f"{self.root}:caller:{safe_part(caller_key)}:weekdays"

    @property
    def callers(self) -> str:
        """ZSET: caller key -> flags (top sources)."""
        return f"{self.root}:callers"

    # -- overall patterns ---------------------------------------------------------------------
    @property
    def hours(self) -> str:
        """HASH: hour of day -> flags, all callers."""
        return f"{self.root}:pattern:hours"

    @property
    def weekdays(self) -> str:
        """HASH: ISO weekday -> flags, all callers."""
        return f"{self.root}:pattern:weekdays"

    @property
    def week(self) -> str:
        """HASH: ``weekday:hour`` -> flags (the heatmap)."""
        return f"{self.root}:pattern:week"

    @property
    def hotlines(self) -> str:
        """HASH: hotline name -> flags."""
        return f"{self.root}:pattern:hotlines"

    # -- per-day aggregates (reports over a period) -------------------------------------------
    def day_hours(self, day: str) -> str:
        """HASH: hour of day -> flags on ``day`` (``YYYYMMDD``, local date)."""
        return f"{self.root}:day:{_day(day)}:hours"

    def day_callers(self, day: str) -> str:
        """ZSET: caller key -> flags on ``day``."""
        return f"{self.root}:day:{_day(day)}:callers"

    def day_hotlines(self, day: str) -> str:
        """HASH: hotline name -> flags on ``day``."""
        return f"{self.root}:day:{_day(day)}:hotlines"

    @property
    def anonymous_flags(self) -> str:
        """ZSET: flag id of a withheld or unavailable caller -> epoch (for bill matching)."""
        return f"{self.root}:flags:anonymous"

    def number_block(self, block: str) -> str:
        """SET: flagged numbers of one 100-number block (E.164 without its last two digits)."""
        return f"{self.root}:block:{safe_part(block)}"

    @property
    def blocks(self) -> str:
        """ZSET: number block -> distinct flagged numbers in it (prefix clusters)."""
        return f"{self.root}:blocks"

    def scratch(self, name: str) -> str:
        """A short-lived working key (unions for reports), expiring by itself."""
        return f"{self.root}:tmp:{safe_part(name)}"

    # -- rules (blocklist and allowlist) ------------------------------------------------------
    @property
    def rules(self) -> str:
        """HASH: rule id -> rule JSON (every rule, both lists)."""
        return f"{self.root}:rules"

    @property
    def rules_seq(self) -> str:
        """STRING: the last rule number handed out (ids are ``r<n>``)."""
        return f"{self.root}:rules:seq"

    def rule_index(self, kind: str) -> str:
        """HASH: index value -> space-separated rule ids. ``kind`` is ``number`` (E.164),
        ``prefix`` (prefixes, and the prefixes covering each range) or ``anonymous``."""
        if kind not in ("number", "prefix", "anonymous"):
            raise ValueError(f"no rule index {kind!r}")
        return f"{self.root}:rules:idx:{kind}"

    @property
    def rule_counts(self) -> str:
        """HASH: ``list:match:origin`` -> rules (the blocklist size gauges)."""
        return f"{self.root}:rules:counts"

    @property
    def rules_expiry(self) -> str:
        """ZSET: rule id -> epoch of expiry (rules that expire)."""
        return f"{self.root}:rules:expiry"

    @property
    def imports(self) -> str:
        """HASH: import id -> ``pending:<epoch>``, ``committed`` or ``aborted``."""
        return f"{self.root}:imports"

    @property
    def imports_seq(self) -> str:
        """STRING: the last import number handed out (ids are ``i<n>``)."""
        return f"{self.root}:imports:seq"

    def import_members(self, import_id: str) -> str:
        """SET: rule ids staged by an import until it is committed or aborted."""
        return f"{self.root}:import:{safe_part(import_id)}"

    @property
    def audit(self) -> str:
        """STREAM: every change to the rules (who, when, what, why); append-only."""
        return f"{self.root}:audit"

    @property
    def autoblocks(self) -> str:
        """HASH: caller key -> automatic blocks so far (the escalation step)."""
        return f"{self.root}:autoblocks"

    def autoblock_guard(self, caller_key: str) -> str:
        """STRING: set while an automatic block of this caller runs (one at a time)."""
        return f"{self.root}:autoblock:{safe_part(caller_key)}"
