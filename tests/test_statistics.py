"""Tests for screener.statistics: the gauges and the report, read from a real redis-server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from screener import report, statistics
from screener.errors import StoreError
from screener.metrics import Metrics
from screener.model import Flag, Presentation
from screener.store import Store
from tests.factories import make_flag
from tests.lab.redis import RedisServer

UTC_ZONE = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
MON = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)  # Monday 09h
X = "+8613812341234"  # the harasser: flagged before and during the period
Y = "+8613912345601"
BLOCK = "+86138123412"
CLUSTER = [f"{BLOCK}00", f"{BLOCK}50", f"{BLOCK}99"]
PAIR = ["+8613712345601", "+8613712345602"]  # two numbers in one block: no cluster
RETENTION = 400


def top_source_samples(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [
        dict(s.labels, value=str(s.value))
        for family in registry.collect()
        if family.name == "screener_top_source_flags"
        for s in family.samples
    ]


async def record(store: Store, flags: list[Flag]) -> None:
    for f in flags:
        assert await store.record_flag(f, RETENTION)


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"1709500000.{self.n}"


# --- refresh -------------------------------------------------------------------------------------


async def test_refresh_sets_the_pattern_gauges(store: Store) -> None:
    ids = Ids()
    flags = [
        make_flag(ids(), X, at=MON),
        make_flag(ids(), X, at=MON + timedelta(minutes=5)),
        make_flag(ids(), Y, at=MON + timedelta(days=2, hours=5)),  # Wednesday 14h
        *[make_flag(ids(), n, at=MON + timedelta(days=6, hours=-9)) for n in CLUSTER],  # Sun 0h
        *[make_flag(ids(), n, at=MON + timedelta(days=6, hours=-9)) for n in PAIR],
    ]
    await record(store, flags)
    registry = CollectorRegistry()
    await statistics.refresh(store, Metrics(registry))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("screener_flags_by_hour", hour="9") == 2
    assert value("screener_flags_by_hour", hour="14") == 1
    assert value("screener_flags_by_hour", hour="0") == 5
    assert value("screener_flags_by_hour", hour="3") == 0
    assert sum(value("screener_flags_by_hour", hour=str(h)) or 0 for h in range(24)) == 8
    assert value("screener_flags_by_weekday", weekday="1") == 2
    assert value("screener_flags_by_weekday", weekday="3") == 1
    assert value("screener_flags_by_weekday", weekday="7") == 5
    assert value("screener_flags_by_weekday", weekday="2") == 0
    assert value("screener_callers_flagged") == 7
    assert value("screener_prefix_clusters") == 1  # the pair is not a cluster
    samples = top_source_samples(registry)
    assert len(samples) == 7
    first = samples[0] if samples[0]["rank"] == "1" else None
    assert first is not None
    assert first == {
        "rank": "1",
        "source": "+86138****1234",
        "kind": "mobile",
        "region": "CN",
        "value": "2.0",
    }
    assert sorted(int(s["rank"]) for s in samples) == list(range(1, 8))


async def test_refresh_keeps_only_the_current_top_list(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    ids = Ids()
    await record(store, [make_flag(ids(), n) for n in (X, Y, *PAIR)])
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    await statistics.refresh(store, metrics)
    assert len(top_source_samples(registry)) == 4
    await redis_raw.flushdb()
    await record(store, [make_flag(ids(), "+12025550123")])
    await statistics.refresh(store, metrics)
    assert top_source_samples(registry) == [
        {
            "rank": "1",
            "source": "+1202***0123",
            "kind": "fixed_or_mobile",
            "region": "US",
            "value": "1.0",
        }
    ]
    assert registry.get_sample_value("screener_callers_flagged") == 1
    assert registry.get_sample_value("screener_prefix_clusters") == 0


async def test_top_source_series_stay_bounded_with_thousands_of_spoofed_numbers(
    store: Store,
) -> None:
    numbers = [f"+86138{n:08d}" for n in range(2000)]
    flags = [make_flag(f"1709600000.{n}", raw, at=MON) for n, raw in enumerate(numbers)]
    flags += [make_flag(f"1709700000.{n}", numbers[n], at=MON) for n in range(3)]  # a top 3
    for start in range(0, len(flags), 100):
        await asyncio.gather(*(store.record_flag(f, 30) for f in flags[start : start + 100]))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for _ in range(2):  # a second refresh neither adds nor keeps stale series
        await statistics.refresh(store, metrics)
        samples = top_source_samples(registry)
        assert len(samples) == statistics.TOP_SOURCES == 10
        assert {s["rank"] for s in samples} == {str(r) for r in range(1, 11)}
    assert registry.get_sample_value("screener_callers_flagged") == 2000
    top3 = {s["source"] for s in samples if s["rank"] in ("1", "2", "3")}
    assert top3 == {"+86138****0000", "+86138****0001", "+86138****0002"}
    for s in samples:
        assert s["source"] not in numbers  # masked, never the number
        assert "*" in s["source"]
    # 20 blocks of 100 numbers, each fully flagged
    assert registry.get_sample_value("screener_prefix_clusters") == 20


async def test_refresh_keeps_the_last_values_when_redis_fails(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.5)
    try:
        await record(s, [make_flag("1.1", X, at=MON)])
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        await statistics.refresh(s, metrics)
        dead_redis.stop()
        with pytest.raises(StoreError):
            await statistics.refresh(s, metrics)
        assert registry.get_sample_value("screener_flags_by_hour", {"hour": "9"}) == 1
        assert registry.get_sample_value("screener_callers_flagged") == 1
        assert len(top_source_samples(registry)) == 1
    finally:
        await s.aclose()


# --- gather_report -------------------------------------------------------------------------------


def period_flags() -> list[Flag]:
    """Around the period 2024-03-04 .. 2024-03-10 (UTC)."""
    ids = Ids()
    before = MON - timedelta(days=2)
    after = MON + timedelta(days=7)  # Monday 2024-03-11: outside
    return [
        *[make_flag(ids(), X, at=before + timedelta(minutes=m)) for m in range(5)],  # outside
        make_flag(ids(), X, at=MON),  # X: once in the period
        make_flag(ids(), Y, at=MON + timedelta(days=1, hours=2)),  # Y: twice (repeat offender)
        make_flag(ids(), Y, at=MON + timedelta(days=1, hours=3), hotline="sales"),
        *[make_flag(ids(), n, at=MON + timedelta(days=2)) for n in CLUSTER],
        *[make_flag(ids(), n, at=MON + timedelta(days=2)) for n in PAIR],
        *[
            make_flag(
                ids(),
                "anonymous",
                at=MON + timedelta(days=3, minutes=m, seconds=7),
                presentation=Presentation.UNAVAILABLE,
                called=f"40080012{m:02d}",
            )
            for m in range(4)
        ],
        make_flag(ids(), "anonymous", at=before, presentation=Presentation.WITHHELD),  # outside
        make_flag(ids(), "anonymous", at=after, presentation=Presentation.WITHHELD),  # outside
        make_flag(ids(), Y, at=after),  # outside
    ]


async def gather(store: Store, **kwargs: object) -> report.Report:
    args: dict[str, object] = {
        "first": date(2024, 3, 4),
        "last": date(2024, 3, 10),
        "zone": UTC_ZONE,
        **kwargs,
    }
    return await statistics.gather_report(store, **args)  # type: ignore[arg-type]


async def test_gather_report_counts_only_the_period(store: Store) -> None:
    await record(store, period_flags())
    r = await gather(store)
    # 1 (X) + 2 (Y) + 3 (cluster) + 2 (pair) + 4 (anonymous); 8 flags outside
    assert r.total_flags == 12
    assert sum(r.by_day.values()) == 12
    assert r.by_day["2024-03-04"] == 1
    assert r.by_day["2024-03-05"] == 2
    assert r.by_day["2024-03-06"] == 5
    assert r.by_day["2024-03-07"] == 4
    assert r.heatmap["2024-03-05"][11] == 1
    assert r.heatmap["2024-03-05"][12] == 1
    assert r.by_weekday == {1: 1, 2: 2, 3: 5, 4: 4, 5: 0, 6: 0, 7: 0}
    assert r.hotlines == {"service": 11, "sales": 1}
    assert r.distinct_callers == 8  # X, Y, 3 cluster, 2 pair, anonymous


async def test_gather_report_ranks_sources_over_the_period_not_all_time(store: Store) -> None:
    await record(store, period_flags())
    r = await gather(store, masked=False)
    # X has 6 flags in all (5 before the period) but only 1 in it: Y and anonymous lead
    assert [(s.number, s.flags) for s in r.top_sources[:2]] == [("anonymous", 4), (Y, 2)]
    x = next(s for s in r.top_sources if s.number == X)
    assert (x.flags, x.total_flags) == (1, 6)
    assert (x.carrier, x.area, x.kind, x.region) == (
        "China Mobile",
        "Lianyungang, Jiangsu",
        "mobile",
        "CN",
    )
    assert [(s.number, s.flags) for s in r.repeat_offenders] == [("anonymous", 4), (Y, 2)]
    assert r.repeat_offenders[1].total_flags == 3  # within retention, incl. after the period
    limited = await gather(store, masked=False, top=1)
    assert [s.number for s in limited.top_sources] == ["anonymous"]


async def test_gather_report_clusters(store: Store) -> None:
    await record(store, period_flags())
    r = await gather(store, masked=False)
    assert len(r.clusters) == 1  # the pair's block has only two numbers
    c = r.clusters[0]
    assert c.block == BLOCK
    assert c.numbers == tuple(sorted([*CLUSTER, X]))  # X is in that block too
    assert f"'{BLOCK}*'" in c.suggested_rule
    assert "4 flagged numbers" in c.suggested_rule
    masked = await gather(store)
    assert masked.clusters[0].numbers == (
        "+86138****1200",
        "+86138****1234",
        "+86138****1250",
        "+86138****1299",
    )
    assert BLOCK not in masked.clusters[0].block
    assert BLOCK not in masked.clusters[0].suggested_rule


async def test_gather_report_lists_anonymous_calls(store: Store) -> None:
    await record(store, period_flags())
    r = await gather(store)
    assert [(a.at, a.called) for a in r.anonymous_calls] == [
        ("2024-03-07T09:00:07+00:00", "4008001200"),
        ("2024-03-07T09:01:07+00:00", "4008001201"),
        ("2024-03-07T09:02:07+00:00", "4008001202"),
        ("2024-03-07T09:03:07+00:00", "4008001203"),
    ]
    assert {a.presentation for a in r.anonymous_calls} == {"unavailable"}
    assert r.anonymous_truncated is False
    cut = await gather(store, anonymous_limit=3)
    assert [a.called for a in cut.anonymous_calls] == ["4008001200", "4008001201", "4008001202"]
    assert cut.anonymous_truncated is True
    exact = await gather(store, anonymous_limit=4)
    assert exact.anonymous_truncated is False
    assert len(exact.anonymous_calls) == 4


async def test_gather_report_uses_local_days_of_the_zone(store: Store) -> None:
    ids = Ids()
    inside = datetime(2024, 3, 3, 17, 0, tzinfo=UTC)  # 2024-03-04 01:00 in Shanghai
    outside = datetime(2024, 3, 6, 23, 30, tzinfo=UTC)  # 2024-03-07 07:30 in Shanghai
    flags = [
        make_flag(ids(), X, at=at, tz="Asia/Shanghai", presentation=presentation)
        for at in (inside, outside)
        for presentation in (Presentation.ALLOWED, Presentation.WITHHELD)
    ]
    await record(store, flags)
    r = await gather(store, first=date(2024, 3, 4), last=date(2024, 3, 6), zone=SHANGHAI)
    assert r.total_flags == 2
    assert r.heatmap["2024-03-04"][1] == 2
    assert [a.at for a in r.anonymous_calls] == ["2024-03-04T01:00:00+08:00"]
    nxt = await gather(store, first=date(2024, 3, 7), last=date(2024, 3, 7), zone=SHANGHAI)
    assert nxt.total_flags == 2
    assert nxt.heatmap["2024-03-07"][7] == 2
    assert [a.at for a in nxt.anonymous_calls] == ["2024-03-07T07:30:00+08:00"]


async def test_gather_report_masked_holds_no_full_number(store: Store) -> None:
    await record(store, period_flags())
    masked = await gather(store)
    unmasked = await gather(store, masked=False)
    numbers = [X, Y, *CLUSTER]
    for render in (report.render_text, report.render_csv, report.render_json):
        hidden, shown = render(masked), render(unmasked)
        for number in numbers:
            assert number not in hidden
            assert number in shown
    assert masked.masked is True
    assert json.loads(report.render_json(masked))["masked"] is True


async def test_gather_report_of_a_caller_whose_details_expired_stays_masked(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    await record(store, [make_flag("1.1", X, at=MON), make_flag("1.2", X, at=MON)])
    await redis_raw.delete(store.keys.caller(X))  # its details expired before the day's
    r = await gather(store)
    assert [s.flags for s in r.top_sources] == [2]
    out = report.render_text(r)
    assert X not in out
    assert X[:9] not in out  # not even more of it than a mask shows
    assert r.top_sources[0].number == "+86138****1234"
    unmasked = await gather(store, masked=False)
    assert unmasked.top_sources[0].number == X


async def test_gather_report_refuses_a_reversed_period(store: Store) -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        await gather(store, first=date(2024, 3, 5), last=date(2024, 3, 4))


async def test_gather_report_of_an_empty_store(store: Store) -> None:
    r = await gather(store)
    assert r.total_flags == 0
    assert r.distinct_callers == 0
    assert (r.top_sources, r.repeat_offenders, r.clusters, r.anonymous_calls) == ([], [], [], [])
    assert len(r.heatmap) == 7
