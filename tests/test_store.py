"""Tests for screener.store against a real redis-server (tests/plugins/redis_fixtures.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from screener.errors import StoreError
from screener.keys import DAY, KeySpace
from screener.store import Store
from tests.factories import AT, make_flag
from tests.lab.redis import RedisServer

SAFE_KEY = re.compile(r"^\{screener\}:[A-Za-z0-9+._/@:-]+$")
CALLER = "+8613812341234"
RETENTION = 400


async def all_keys(raw: aioredis.Redis) -> list[str]:
    return [k async for k in raw.scan_iter(match="*", count=1000)]


async def test_ping(store: Store) -> None:
    await store.ping()
    await store.ping(timeout=0.5)


async def test_record_flag_is_idempotent(store: Store, redis_raw: aioredis.Redis) -> None:
    flag = make_flag()
    assert await store.record_flag(flag, RETENTION) is True
    before = {k: await redis_raw.dump(k) for k in await all_keys(redis_raw)}
    assert await store.record_flag(flag, RETENTION) is False
    # a replay with other details (a second spool flush, a different agent) changes nothing
    assert await store.record_flag(make_flag(agent="PJSIP/agent7"), RETENTION) is False
    after = {k: await redis_raw.dump(k) for k in await all_keys(redis_raw)}
    assert after == before
    stats = await store.caller_stats(CALLER)
    assert stats is not None
    assert stats.count == 1
    assert stats.agents == 1
    patterns = await store.patterns()
    assert patterns.hours == {14: 1}
    assert patterns.hotlines == {"service": 1}


async def test_get_flag(store: Store) -> None:
    flag = make_flag()
    assert await store.get_flag(flag.flag_id) is None
    await store.record_flag(flag, RETENTION)
    assert await store.get_flag(flag.flag_id) == flag


async def test_caller_aggregates(store: Store) -> None:
    t0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)  # Monday 09h
    flags = [
        make_flag("1700000000.1", at=t0, agent="PJSIP/agent1"),
        make_flag("1700000000.2", at=t0 + timedelta(hours=1), agent="PJSIP/agent2"),
        make_flag("1700000000.3", at=t0 + timedelta(days=2), agent="PJSIP/agent1"),  # Wed 09h
        make_flag("1700000000.4", "+8613900000000", at=t0, agent="PJSIP/agent3"),  # another caller
    ]
    for f in flags:
        assert await store.record_flag(f, RETENTION)
    stats = await store.caller_stats(CALLER)
    assert stats is not None
    assert stats.key == CALLER
    assert stats.count == 3
    assert stats.first == t0.timestamp()
    assert stats.last == (t0 + timedelta(days=2)).timestamp()
    assert stats.agents == 2  # distinct agents, not flags
    assert stats.masked == "+86138****1234"
    assert stats.kind == "mobile"
    assert stats.region == "CN"
    assert stats.hours == {9: 2, 10: 1}
    assert stats.weekdays == {1: 2, 3: 1}
    other = await store.caller_stats("+8613900000000")
    assert other is not None
    assert other.count == 1
    assert other.agents == 1


async def test_caller_hash_fields(store: Store, redis_raw: aioredis.Redis) -> None:
    flag = make_flag()
    await store.record_flag(flag, RETENTION)
    data = await redis_raw.hgetall(store.keys.caller(CALLER))
    assert data["last_flag"] == flag.flag_id
    assert data["e164"] == CALLER
    assert data["carrier"] == "China Mobile"
    assert data["area"]
    assert await redis_raw.zscore(store.keys.callers, CALLER) == 1


async def test_caller_stats_of_an_unknown_caller(store: Store) -> None:
    assert await store.caller_stats(CALLER) is None


async def test_patterns(store: Store) -> None:
    mon9 = datetime(2024, 3, 4, 9, 15, tzinfo=UTC)
    sun23 = datetime(2024, 3, 10, 23, 59, tzinfo=UTC)
    await store.record_flag(make_flag("1.1", at=mon9, hotline="service"), RETENTION)
    await store.record_flag(make_flag("1.2", "13900000000", at=mon9, hotline="other"), RETENTION)
    await store.record_flag(make_flag("1.3", at=sun23, hotline="service"), RETENTION)
    p = await store.patterns()
    assert p.hours == {9: 2, 23: 1}
    assert p.weekdays == {1: 2, 7: 1}
    assert p.week == {(1, 9): 2, (7, 23): 1}
    assert p.hotlines == {"service": 2, "other": 1}


async def test_patterns_when_empty(store: Store) -> None:
    p = await store.patterns()
    assert (p.hours, p.weekdays, p.week, p.hotlines) == ({}, {}, {}, {})


async def test_recent_flags_newest_first_with_limit(store: Store) -> None:
    flags = [make_flag(f"1700000000.{n}", at=AT + timedelta(minutes=n)) for n in range(5)]
    for f in (flags[2], flags[0], flags[4], flags[1], flags[3]):  # recording order is irrelevant
        await store.record_flag(f, RETENTION)
    assert await store.recent_flags() == flags[::-1]
    assert await store.recent_flags(limit=2) == [flags[4], flags[3]]


async def test_recent_flags_since_is_exclusive(store: Store) -> None:
    flags = [make_flag(f"1700000000.{n}", at=AT + timedelta(minutes=n)) for n in range(4)]
    for f in flags:
        await store.record_flag(f, RETENTION)
    since = flags[1].at.timestamp()
    assert await store.recent_flags(since=since) == [flags[3], flags[2]]
    assert await store.recent_flags(since=flags[3].at.timestamp()) == []
    assert await store.recent_flags(limit=1, since=since) == [flags[3]]


async def test_recent_flags_when_empty(store: Store) -> None:
    assert await store.recent_flags() == []


async def test_recent_flags_skips_records_that_expired(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    a, b = make_flag("1.1"), make_flag("1.2", at=AT + timedelta(seconds=1))
    await store.record_flag(a, RETENTION)
    await store.record_flag(b, RETENTION)
    await redis_raw.delete(store.keys.flag("1.2"))  # as if its EX had run out
    assert await store.recent_flags() == [a]


async def test_expire_flags_trims_the_index(store: Store, redis_raw: aioredis.Redis) -> None:
    flags = [make_flag(f"1700000000.{n}", at=AT + timedelta(days=n)) for n in range(4)]
    for f in flags:
        await store.record_flag(f, RETENTION)
    removed = await store.expire_flags(flags[1].at.timestamp())  # inclusive bound
    assert removed == 2
    assert await redis_raw.zrange(store.keys.flags, 0, -1) == ["1700000000.2", "1700000000.3"]
    assert await store.recent_flags() == [flags[3], flags[2]]
    assert await store.expire_flags(0) == 0


async def test_ttl_on_flag_and_caller_keys(store: Store, redis_raw: aioredis.Redis) -> None:
    await store.record_flag(make_flag(), 30)
    k = store.keys
    expected = 30 * DAY
    for key in (
        k.flag("1700000000.1"),
        k.caller(CALLER),
        k.caller_agents(CALLER),
        k.caller_hours(CALLER),
        k.caller_weekdays(CALLER),
    ):
        ttl = await redis_raw.ttl(key)
        assert expected - 5 <= ttl <= expected, key
    # the index and the overall patterns are kept (trimmed by expire_flags instead)
    for key in (k.flags, k.callers, k.hours, k.weekdays, k.week, k.hotlines):
        assert await redis_raw.ttl(key) == -1, key


async def test_a_new_flag_renews_the_callers_ttl(store: Store, redis_raw: aioredis.Redis) -> None:
    await store.record_flag(make_flag("1.1"), 1)
    await store.record_flag(make_flag("1.2"), 30)
    assert await redis_raw.ttl(store.keys.caller(CALLER)) > DAY


HOSTILE = [
    "123\r\nAction: Originate\r\nChannel: Local/1@default\r\n\r\n",
    "{screener}:caller:+8613812341234",
    "*\x00*\x00",
    "\U0001f600 \u202e caller",
    "%s%n{0}",
    "x" * 10_240,
    "13812341234 ",  # a genuine number with a trailing blank: same caller
]


async def test_hostile_caller_ids_are_stored_intact_under_safe_keys(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    flags = [
        make_flag(f"1700000000.{n}", raw, at=AT + timedelta(seconds=n), raw_name=raw)
        for n, raw in enumerate(HOSTILE)
    ]
    for f in flags:
        assert await store.record_flag(f, RETENTION)
    for f in flags:
        back = await store.get_flag(f.flag_id)
        assert back is not None
        assert back.caller.raw == f.caller.raw
        assert back.caller.raw_name == f.caller.raw_name
        stats = await store.caller_stats(f.caller.key)
        assert stats is not None
    assert await store.recent_flags() == flags[::-1]
    keys = await all_keys(redis_raw)
    assert keys
    for key in keys:
        assert SAFE_KEY.fullmatch(key), key
    # the hostile ones each have their own hashed record; only the genuine number merged
    callers = await redis_raw.zrange(store.keys.callers, 0, -1, withscores=True)
    assert len(callers) == len(HOSTILE)
    assert (CALLER, 1.0) in callers


async def test_another_prefix_is_another_deployment(
    store: Store, redis_server: RedisServer
) -> None:
    other = Store.from_url(redis_server.url, prefix="centre2")
    try:
        await other.record_flag(make_flag(), RETENTION)
        assert await store.get_flag("1700000000.1") is None
        assert await store.record_flag(make_flag(), RETENTION) is True
        assert other.keys == KeySpace("centre2")
    finally:
        await other.aclose()


# --- failures ---------------------------------------------------------------------------------


async def test_store_error_when_redis_is_down(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.5)
    try:
        await s.ping()
        dead_redis.stop()
        with pytest.raises(StoreError, match="redis record_flag"):
            await s.record_flag(make_flag(), RETENTION)
        for call in (
            s.ping(),
            s.get_flag("1.1"),
            s.recent_flags(),
            s.caller_stats(CALLER),
            s.patterns(),
            s.expire_flags(0),
        ):
            with pytest.raises(StoreError):
                await call
    finally:
        await s.aclose()


async def test_store_error_chains_the_redis_error(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.5)
    dead_redis.kill()
    try:
        with pytest.raises(StoreError) as info:
            await s.get_flag("1.1")
        assert info.value.__cause__ is not None
    finally:
        await s.aclose()


async def test_store_recovers_when_redis_comes_back(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.5)
    try:
        await s.record_flag(make_flag("1.1"), RETENTION)
        dead_redis.kill()
        with pytest.raises(StoreError):
            await s.record_flag(make_flag("1.2"), RETENTION)
        dead_redis.start()  # same port, empty (and without the cached Lua script)
        assert await s.record_flag(make_flag("1.2"), RETENTION) is True
        assert await s.get_flag("1.2") == make_flag("1.2")
    finally:
        await s.aclose()


async def test_timeout_is_a_store_error(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.3)
    try:
        await s.ping()
        dead_redis.sigstop()  # the connection stays open; nothing answers
        with pytest.raises(StoreError, match=r"timed out|Timeout"):
            await s.record_flag(make_flag(), RETENTION)
        with pytest.raises(StoreError):
            await s.ping(timeout=0.2)
    finally:
        dead_redis.sigcont()
        await s.aclose()


# --- out-of-order recording (a spool flush after newer flags) ---------------------------------


async def test_older_flag_recorded_late_keeps_first_and_last_right(store: Store) -> None:
    old = make_flag("1700000000.1", at=AT)
    new = make_flag("1700000000.2", at=AT + timedelta(hours=2))
    await store.record_flag(new, RETENTION)  # Redis was back before the spool flush
    await store.record_flag(old, RETENTION)  # the spooled one, flushed later
    stats = await store.caller_stats(CALLER)
    assert stats is not None
    assert stats.first == old.at.timestamp()
    assert stats.last == new.at.timestamp()
