"""Frequency and source statistics: gauges for Prometheus and the managers' report, both read
from Redis.

Counters in ``metrics.py`` count what this daemon saw since it started; the gauges refreshed here
describe what Redis has learned (shared by every screener of a deployment, surviving restarts):
flags by hour of day and weekday, the top sources (a fixed-length list, numbers masked: the rank
is the label that stays, so spoofing 100,000 numbers changes which masked numbers appear, never
how many series there are), distinct flagged callers and prefix clusters.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from screener import report
from screener.metrics import Metrics
from screener.model import Flag
from screener.store import CallerStats, DayTotals, Patterns

logger = logging.getLogger(__name__)

TOP_SOURCES = 10
CLUSTER_MIN_NUMBERS = 3


class StatsStore(Protocol):
    async def patterns(self) -> Patterns: ...

    async def top_sources(self, limit: int) -> tuple[list[CallerStats], int]: ...

    async def cluster_count(self, min_numbers: int) -> int: ...


async def refresh(store: StatsStore, metrics: Metrics, top: int = TOP_SOURCES) -> Patterns:
    """Reload every statistics gauge from Redis; returns the patterns read (the daemon learns
    the high-risk hours from the same read).

    Raises:
        StoreError: Redis failed (the gauges keep their last values).
    """
    patterns = await store.patterns()
    sources, callers = await store.top_sources(top)
    clusters = await store.cluster_count(CLUSTER_MIN_NUMBERS)
    for hour in range(24):
        metrics.flags_by_hour.labels(hour=str(hour)).set(patterns.hours.get(hour, 0))
    for day in range(1, 8):
        metrics.flags_by_weekday.labels(weekday=str(day)).set(patterns.weekdays.get(day, 0))
    metrics.top_sources.clear()
    for rank, caller in enumerate(sources, 1):
        metrics.top_sources.labels(
            rank=str(rank),
            source=caller.masked or "unknown",
            kind=caller.kind or "unknown",
            region=caller.region or "unknown",
        ).set(caller.count)
    metrics.callers_flagged.set(callers)
    metrics.prefix_clusters.set(clusters)
    return patterns


class ReportStore(Protocol):
    async def day_totals(self, days: list[str]) -> dict[str, DayTotals]: ...

    async def top_callers(
        self, days: list[str], limit: int, min_flags: int = 2
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]: ...

    async def caller_stats(self, caller_key: str) -> CallerStats | None: ...

    async def clusters(self, min_numbers: int, limit: int) -> list[tuple[str, list[str]]]: ...

    async def flags_between(
        self, since: float, until: float, *, anonymous: bool = False, limit: int | None = None
    ) -> list[Flag]: ...


async def _sources(
    store: ReportStore, ranked: list[tuple[str, int]], masked: bool
) -> list[report.Source]:
    out = []
    for key, flags in ranked:
        stats = await store.caller_stats(key)
        details: dict[str, Any]
        if stats is not None:
            details = asdict(stats)
        elif key.startswith("+"):
            # its details expired before the day's counts: an E.164 key is masked like any
            # other number (never cut to a longer prefix than a mask shows)
            details = {"e164": key}
        else:
            details = {"masked": key[:9]}
        out.append(report.source(details, flags, masked))
    return out


async def gather_report(
    store: ReportStore,
    *,
    first: date,
    last: date,
    zone: ZoneInfo,
    top: int = 20,
    anonymous_limit: int = 1000,
    masked: bool = True,
) -> report.Report:
    """Read everything a report over ``first`` .. ``last`` (local days) needs and build it.

    Raises:
        ValueError: a bad period.
        StoreError: Redis failed.
    """
    days = report.days_between(first, last)
    keys = [report.day_key(d) for d in days]
    totals = await store.day_totals(keys)
    ranked, repeat, distinct = await store.top_callers(keys, top)
    clusters = await store.clusters(CLUSTER_MIN_NUMBERS, top)
    since = datetime.combine(first, time.min, zone).timestamp()
    until = datetime.combine(last + timedelta(days=1), time.min, zone).timestamp()
    anonymous = await store.flags_between(since, until, anonymous=True, limit=anonymous_limit + 1)
    return report.build(
        days=days,
        zone=zone,
        day_hours={k: t.hours for k, t in totals.items()},
        day_hotlines={k: t.hotlines for k, t in totals.items()},
        distinct_callers=distinct,
        top_sources=await _sources(store, ranked, masked),
        repeat_offenders=await _sources(store, repeat, masked),
        clusters=[report.cluster(b, numbers, masked) for b, numbers in clusters],
        anonymous=anonymous,
        anonymous_limit=anonymous_limit,
        masked=masked,
    )
