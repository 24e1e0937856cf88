"""Tests for screener.store against a real redis-server (tests/plugins/redis_fixtures.py)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from screener.errors import StoreError
from screener.keys import DAY, KeySpace
from screener.model import Presentation
from screener.rules import Origin, Rule, with_id
from screener.store import Store, number_block
from tests.factories import AT, make_flag, make_rule
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


# --- rules ------------------------------------------------------------------------------------

NOW = AT.timestamp()


async def stored_rule(store: Store, value: str = CALLER, **fields: Any) -> Rule:
    rule = make_rule(value, **fields)
    (rule_id,) = await store.add_rules([rule], by="alice", action="add", now=NOW)
    return with_id(rule, rule_id)


async def index_entries(store: Store, raw: aioredis.Redis) -> dict[str, dict[Any, Any]]:
    return {
        kind: await raw.hgetall(store.keys.rule_index(kind))
        for kind in ("number", "prefix", "anonymous")
    }


async def test_add_rules_assigns_ids_and_writes_every_structure(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    rules = [
        make_rule(CALLER),
        make_rule("+86105*"),
        make_rule("+861012345600..+861012345699", expires="7d"),
        make_rule("withheld"),
        make_rule("+8613900000000", list="allow"),
    ]
    ids = await store.add_rules(rules, by="alice", action="import", now=NOW)
    assert ids == ["r1", "r2", "r3", "r4", "r5"]
    for rule, rule_id in zip(rules, ids, strict=True):
        back = await store.get_rule(rule_id)
        assert back == with_id(rule, rule_id)
        assert back is not None
        assert back.index == rule.index  # rebuilt on reading
    assert await index_entries(store, redis_raw) == {
        "number": {CALLER: "r1", "+8613900000000": "r5"},
        "prefix": {"+86105": "r2", "+8610123456": "r3"},
        "anonymous": {"withheld": "r4"},
    }
    expiry = await redis_raw.zrange(store.keys.rules_expiry, 0, -1, withscores=True)
    assert expiry == [("r3", pytest.approx(NOW + 7 * DAY, abs=0.001))]
    assert await redis_raw.get(store.keys.rules_seq) == "5"
    audit = await store.audit_trail()
    assert [(e.rule, e.action, e.by) for e in audit] == [
        (f"r{n}", "import", "alice") for n in (5, 4, 3, 2, 1)
    ]
    assert audit[-1].why == rules[0].reason
    assert audit[-1].at == NOW
    assert audit[-1].to_dict()["data"] == with_id(rules[0], "r1").to_dict()


async def test_add_rules_of_nothing_writes_nothing(store: Store, redis_raw: aioredis.Redis) -> None:
    assert await store.add_rules([], by="alice", action="import", now=NOW) == []
    assert await all_keys(redis_raw) == []


async def test_rules_sharing_an_index_value_are_all_found(store: Store) -> None:
    first = await stored_rule(store, CALLER)
    second = await stored_rule(store, CALLER, action="challenge", hotlines="sales")
    found = await store.candidate_rules(CALLER, "", "")
    assert sorted(found, key=lambda r: r.id) == [first, second]


async def test_ids_keep_counting_after_removals(store: Store) -> None:
    first = await stored_rule(store)
    await store.remove_rule(first.id, by="bob", why="gone", now=NOW)
    second = await stored_rule(store)
    assert second.id == "r2"  # an id is never reused: the audit trail names rules by id


async def test_an_import_is_one_transaction(store: Store, redis_raw: aioredis.Redis) -> None:
    """Another client sees none or all of a batch, never a part of it."""
    batch = [make_rule(f"+86138{n:08d}") for n in range(5000)]
    seen: set[int] = set()
    adding = asyncio.ensure_future(store.add_rules(batch, by="alice", action="import", now=NOW))
    try:
        while not adding.done():
            seen.add(await redis_raw.hlen(store.keys.rules))
    finally:
        ids = await adding
    assert len(ids) == len(batch)
    seen.add(await redis_raw.hlen(store.keys.rules))
    assert seen <= {0, len(batch)}
    assert len(batch) in seen
    assert await store.rule_counts() == {("block", "number", "admin"): len(batch)}


async def test_get_rule_of_an_unknown_id(store: Store) -> None:
    assert await store.get_rule("r404") is None


async def test_remove_rule_cleans_every_index_and_audits(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    keep = await stored_rule(store, CALLER, action="challenge")
    number = await stored_rule(store, CALLER)
    wide = await stored_rule(store, "+8613812341250..+8613812341320", expires="1d")
    anonymous = await stored_rule(store, "any")
    assert len(wide.index) > 2  # a range indexed under several cover prefixes
    for rule in (number, wide, anonymous):
        removed = await store.remove_rule(rule.id, by="bob", why="mistake", now=NOW + 60)
        assert removed == rule
        assert await store.get_rule(rule.id) is None
    assert await index_entries(store, redis_raw) == {
        "number": {CALLER: keep.id},  # the other rule on the same number stays indexed
        "prefix": {},
        "anonymous": {},
    }
    assert await redis_raw.zcard(store.keys.rules_expiry) == 0
    assert await store.rule_counts() == {("block", "number", "admin"): 1}
    assert await store.candidate_rules(CALLER, "withheld", CALLER) == [keep]
    history = await store.audit_trail(rule_id=wide.id)
    assert [(e.action, e.by, e.why, e.at) for e in history] == [
        ("remove", "bob", "mistake", NOW + 60),
        ("add", "alice", wide.reason, NOW),
    ]
    assert history[0].to_dict()["data"] == wide.to_dict()  # what was removed


async def test_remove_rule_of_an_unknown_id_changes_nothing(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    await stored_rule(store)
    before = {k: await redis_raw.dump(k) for k in await all_keys(redis_raw)}
    assert await store.remove_rule("r9", by="bob", why="x", now=NOW) is None
    after = {k: await redis_raw.dump(k) for k in await all_keys(redis_raw)}
    assert after == before


async def test_remove_rule_twice(store: Store) -> None:
    rule = await stored_rule(store)
    assert await store.remove_rule(rule.id, by="bob", why="x", now=NOW) == rule
    assert await store.remove_rule(rule.id, by="bob", why="x", now=NOW) is None
    assert [e.action for e in await store.audit_trail(rule_id=rule.id)] == ["remove", "add"]


async def test_remove_rule_refuses_a_rule_that_changed_meanwhile(
    store: Store, redis_raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = await stored_rule(store)
    real_hget = store._redis.hget

    async def hget_then_someone_edits(name: str, key: str) -> Any:
        raw = str(await real_hget(name, key))
        await redis_raw.hset(store.keys.rules, rule.id, raw.replace("test", "edited"))
        return raw

    monkeypatch.setattr(store._redis, "hget", hget_then_someone_edits)
    with pytest.raises(StoreError, match="changed while being removed"):
        await store.remove_rule(rule.id, by="bob", why="x", now=NOW)
    assert await redis_raw.hexists(store.keys.rules, rule.id)
    assert await store.candidate_rules(CALLER, "", "") != []  # still indexed
    assert [e.action for e in await store.audit_trail()] == ["add"]


async def test_candidate_rules_finds_what_could_match_and_nothing_else(store: Store) -> None:
    number = await stored_rule(store, CALLER)
    allow = await stored_rule(store, CALLER, list="allow")
    prefix = await stored_rule(store, "+86138*")
    short_prefix = await stored_rule(store, "+86*")
    in_range = await stored_rule(store, "+8613812341200..+8613812341299")
    split_range = await stored_rule(store, "+8613812341150..+8613812341240")
    withheld = await stored_rule(store, "withheld")
    anyone = await stored_rule(store, "any")
    unavailable = await stored_rule(store, "unavailable")
    # rules for other callers
    await stored_rule(store, "+8613812341235")
    await stored_rule(store, "+86139*")
    await stored_rule(store, "+8613812349000..+8613812349999")
    await stored_rule(store, "+8613812341300..+8613812341399")

    def ids(rules: list[Rule]) -> set[str]:
        return {r.id for r in rules}

    found = await store.candidate_rules(CALLER, "", CALLER)
    assert ids(found) == ids([number, allow, prefix, short_prefix, in_range, split_range])
    assert len(found) == 6  # each once
    assert next(r for r in found if r.id == split_range.id) == split_range
    # the ends of a range that needs several cover prefixes
    for e164 in ("+8613812341150", "+8613812341240"):
        got = await store.candidate_rules(e164, "", e164)
        assert split_range.id in ids(got)
    assert await store.candidate_rules("anonymous", "withheld", "") == [withheld, anyone]
    assert ids(await store.candidate_rules("anonymous", "unavailable", "")) == ids(
        [unavailable, anyone]
    )
    assert await store.candidate_rules("+12025550123", "", "+12025550123") == []
    # asking for the kind "any" itself (an admin's lookup) finds those rules once
    assert await store.candidate_rules("anonymous", "any", "") == [anyone]
    assert await store.candidate_rules("h0123456789abcdef01234567", "", "") == []


async def test_candidate_rules_when_there_are_none(store: Store) -> None:
    assert await store.candidate_rules(CALLER, "withheld", CALLER) == []


async def test_rule_counts(store: Store) -> None:
    assert await store.rule_counts() == {}
    await stored_rule(store, CALLER)
    await stored_rule(store, "+8613900000000")
    await stored_rule(store, "+86105*")
    await stored_rule(store, "+8613900000001", list="allow")
    rule = make_rule("+8613700000000", origin=Origin.AUTO)
    await store.add_auto_block(rule, caller_key="+8613700000000", now=NOW)
    assert await store.rule_counts() == {
        ("block", "number", "admin"): 2,
        ("block", "prefix", "admin"): 1,
        ("allow", "number", "admin"): 1,
        ("block", "number", "auto"): 1,
    }


async def test_all_rules_oldest_first(store: Store) -> None:
    later = make_rule("+8613900000000", now=NOW + 10)
    earlier = make_rule(CALLER, now=NOW)
    ids = await store.add_rules([later, earlier], by="alice", action="import", now=NOW)
    second = await store.add_rules([make_rule("+86105*", now=NOW)], by="a", action="add", now=NOW)
    assert [r.id for r in await store.all_rules()] == [ids[1], *second, ids[0]]


async def test_all_rules_when_empty(store: Store) -> None:
    assert await store.all_rules() == []


async def test_expired_rule_ids(store: Store) -> None:
    soon = await stored_rule(store, CALLER, expires="1h")
    later = await stored_rule(store, "+8613900000000", expires="2h")
    await stored_rule(store, "+86105*")  # never expires
    assert await store.expired_rule_ids(NOW) == []
    assert await store.expired_rule_ids(NOW + 3600) == [soon.id]  # the expiry itself counts
    assert await store.expired_rule_ids(NOW + 7200) == [soon.id, later.id]
    assert await store.expired_rule_ids(NOW + 7200, limit=1) == [soon.id]


async def test_audit_trail_newest_first_limited_and_per_rule(store: Store) -> None:
    a = await stored_rule(store, CALLER)
    b = await stored_rule(store, "+8613900000000")
    await store.remove_rule(a.id, by="bob", why="wrong number", now=NOW + 1)
    trail = await store.audit_trail()
    assert [(e.rule, e.action) for e in trail] == [(a.id, "remove"), (b.id, "add"), (a.id, "add")]
    assert trail[0].id > trail[1].id > trail[2].id  # stream ids, time-ordered
    assert [e.rule for e in await store.audit_trail(limit=2)] == [a.id, b.id]
    assert [e.action for e in await store.audit_trail(rule_id=a.id)] == ["remove", "add"]
    assert [e.action for e in await store.audit_trail(limit=1, rule_id=a.id)] == ["remove"]
    assert await store.audit_trail(rule_id="r99") == []


async def test_audit_trail_when_empty(store: Store) -> None:
    assert await store.audit_trail() == []


async def test_agents_who_flagged(store: Store) -> None:
    t0 = AT
    await store.record_flag(make_flag("1.1", at=t0, agent="PJSIP/agent1"), RETENTION)
    await store.record_flag(make_flag("1.2", at=t0 + timedelta(hours=1), agent="PJSIP/agent2"), 1)
    await store.record_flag(make_flag("1.3", at=t0 + timedelta(hours=2), agent="PJSIP/agent1"), 1)
    await store.record_flag(make_flag("1.4", "+8613900000000", agent="PJSIP/agent3"), RETENTION)
    assert await store.agents_who_flagged(CALLER, 0) == {
        "PJSIP/agent1": (t0 + timedelta(hours=2)).timestamp(),  # the latest flag of each agent
        "PJSIP/agent2": (t0 + timedelta(hours=1)).timestamp(),
    }
    since = (t0 + timedelta(hours=1, seconds=1)).timestamp()
    assert await store.agents_who_flagged(CALLER, since) == {
        "PJSIP/agent1": (t0 + timedelta(hours=2)).timestamp()
    }
    assert await store.agents_who_flagged("+8613700000000", 0) == {}


# --- automatic blocks -------------------------------------------------------------------------


def auto_rule(hours: float = 1.0, value: str = CALLER) -> Rule:
    return make_rule(value, origin=Origin.AUTO, expires=f"{int(hours * 3600)}s", actor="screener")


async def test_add_auto_block_guards_and_counts(store: Store, redis_raw: aioredis.Redis) -> None:
    assert await store.auto_blocks_of(CALLER) == 0
    rule_id = await store.add_auto_block(auto_rule(1), caller_key=CALLER, now=NOW)
    assert rule_id == "r1"
    assert await store.auto_blocks_of(CALLER) == 1
    guard = store.keys.autoblock_guard(CALLER)
    assert 3_590_000 < await redis_raw.pttl(guard) <= 3_600_000  # as long as the block
    # while the guard stands, no second automatic block of this caller
    assert await store.add_auto_block(auto_rule(24), caller_key=CALLER, now=NOW) is None
    assert await store.auto_blocks_of(CALLER) == 1
    assert [r.id for r in await store.all_rules()] == ["r1"]
    # another caller is not affected
    other = "+8613900000000"
    assert await store.add_auto_block(auto_rule(1, other), caller_key=other, now=NOW) == "r2"
    await redis_raw.delete(guard)  # as if its PX had run out
    assert await store.add_auto_block(auto_rule(24), caller_key=CALLER, now=NOW) == "r3"
    assert await store.auto_blocks_of(CALLER) == 2
    entry = (await store.audit_trail(rule_id="r3"))[0]
    assert (entry.action, entry.by) == ("auto", "screener")


async def test_concurrent_auto_blocks_make_one_rule(
    store: Store, redis_server: RedisServer
) -> None:
    stores = [Store.from_url(redis_server.url, timeout=2.0) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(s.add_auto_block(auto_rule(1), caller_key=CALLER, now=NOW) for s in stores)
        )
    finally:
        for s in stores:
            await s.aclose()
    assert [r for r in results if r is not None] == ["r1"]
    assert results.count(None) == 7
    assert await store.auto_blocks_of(CALLER) == 1
    assert len(await store.all_rules()) == 1


# --- failures of the rule methods ---------------------------------------------------------------


async def test_rule_methods_raise_store_error_when_redis_is_down(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.5)
    try:
        dead_redis.stop()
        for call in (
            s.add_rules([make_rule()], by="alice", action="add", now=NOW),
            s.add_auto_block(auto_rule(), caller_key=CALLER, now=NOW),
            s.auto_blocks_of(CALLER),
            s.get_rule("r1"),
            s.remove_rule("r1", by="alice", why="x", now=NOW),
            s.candidate_rules(CALLER, "", CALLER),
            s.all_rules(),
            s.rule_counts(),
            s.expired_rule_ids(NOW),
            s.audit_trail(),
            s.agents_who_flagged(CALLER, 0),
        ):
            with pytest.raises(StoreError):
                await call
    finally:
        await s.aclose()


async def test_candidate_rules_times_out_with_its_own_timeout(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=5.0)
    try:
        await s.ping()
        dead_redis.sigstop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreError, match="timed out"):
            await s.candidate_rules(CALLER, "", CALLER, timeout=0.05)
        assert loop.time() - started < 1.0  # the call's timeout, not the store's 5 s
    finally:
        dead_redis.sigcont()
        await s.aclose()


# --- staged imports ---------------------------------------------------------------------------


async def test_an_import_applies_only_when_committed(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    rules = [make_rule(f"+86138000000{n:02d}") for n in range(12)]
    staged = await store._add_batch(rules[:5], "carol", "import", NOW, "i7")
    await redis_raw.hset(store.keys.imports, "i7", f"pending:{NOW:.0f}")
    assert await store.candidate_rules("+8613800000000", "", "+8613800000000") == []
    assert await store.all_rules() == []
    await store._commit("i7", "carol", "test", len(staged), NOW)
    (found,) = await store.candidate_rules("+8613800000000", "", "+8613800000000")
    assert found.id == staged[0]
    assert [r.id for r in await store.all_rules()] == staged


async def test_import_rules_stages_in_chunks_then_commits(store: Store) -> None:
    rules = [make_rule(f"+86138000000{n:02d}") for n in range(12)]
    ids = await store.import_rules(rules, by="carol", why="file.csv", now=NOW, chunk=5)
    assert ids == [f"r{n}" for n in range(1, 13)]
    assert [r.id for r in await store.all_rules()] == ids
    audit = await store.audit_trail(limit=100)
    assert audit[0].action == "import-commit" and audit[0].why == "12 rules: file.csv"
    assert [e.action for e in audit[1:]] == ["import"] * 12


async def test_an_aborted_import_is_withdrawn_and_audited(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    rules = [make_rule(f"+86138000000{n:02d}") for n in range(3)]
    await redis_raw.hset(store.keys.imports, "i9", f"pending:{NOW - 7200:.0f}")
    staged = await store._add_batch(rules, "carol", "import", NOW, "i9")
    assert await store.abort_stale_imports(NOW, older_than=3600) == 3
    for rule_id in staged:
        assert await store.get_rule(rule_id) is None
    assert await store.candidate_rules("+8613800000000", "", "+8613800000000") == []
    assert await store.rule_counts() == {}
    actions = [e.action for e in await store.audit_trail(limit=10)]
    assert actions[:3] == ["import-abort"] * 3
    assert await store.abort_import("i9", by="x", why="again", now=NOW) == 0  # now aborted


async def test_a_recent_pending_import_is_left_alone(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    await redis_raw.hset(store.keys.imports, "i3", f"pending:{NOW - 60:.0f}")
    await store._add_batch([make_rule()], "carol", "import", NOW, "i3")
    assert await store.abort_stale_imports(NOW, older_than=3600) == 0


async def test_removing_an_automatic_block_clears_its_guard(store: Store) -> None:
    rule = make_rule(CALLER, origin=Origin.AUTO, expires="1h")
    first = await store.add_auto_block(rule, caller_key=CALLER, now=NOW)
    assert first is not None
    assert await store.add_auto_block(rule, caller_key=CALLER, now=NOW) is None  # guarded
    await store.remove_rule(first, by="alice", why="false alarm", now=NOW)
    assert await store.add_auto_block(rule, caller_key=CALLER, now=NOW) is not None


# --- per-day aggregates, anonymous index, prefix clusters (reports) ----------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")
LATE = datetime(2024, 3, 6, 23, 30, tzinfo=UTC)  # Wednesday 23:30 UTC = Thursday 07:30 Shanghai


@pytest.mark.parametrize(
    "at", [LATE, LATE.astimezone(SHANGHAI)], ids=["utc-instant", "local-instant"]
)
async def test_day_aggregates_use_the_local_date_of_the_flags_zone(
    store: Store, at: datetime
) -> None:
    await store.record_flag(make_flag("1.1", at=at, tz="Asia/Shanghai"), RETENTION)
    totals = await store.day_totals(["20240306", "20240307"])
    assert totals["20240306"].hours == {}
    assert totals["20240306"].hotlines == {}
    assert totals["20240307"].hours == {7: 1}
    assert totals["20240307"].hotlines == {"service": 1}
    top, _, distinct = await store.top_callers(["20240307"], 10)
    assert top == [(CALLER, 1)]
    assert distinct == 1
    assert await store.top_callers(["20240306"], 10) == ([], [], 0)
    # the all-time patterns agree with the day: Thursday, 07h local
    patterns = await store.patterns()
    assert patterns.hours == {7: 1}
    assert patterns.weekdays == {4: 1}
    assert patterns.week == {(4, 7): 1}


async def test_day_aggregates_of_a_utc_flag_stay_on_the_utc_date(store: Store) -> None:
    await store.record_flag(make_flag("1.1", at=LATE), RETENTION)  # tz "UTC"
    totals = await store.day_totals(["20240306", "20240307"])
    assert totals["20240306"].hours == {23: 1}
    assert totals["20240307"].hours == {}


async def test_day_aggregates_fall_back_on_the_flags_offset_for_an_unknown_zone(
    store: Store,
) -> None:
    at = datetime(2024, 3, 6, 23, 30, tzinfo=timezone(timedelta(hours=8)))
    flag = make_flag("1.1", at=at)
    assert flag.tz == "UTC+08:00"  # not an IANA zone
    await store.record_flag(flag, RETENTION)
    totals = await store.day_totals(["20240306", "20240307"])
    assert totals["20240306"].hours == {23: 1}
    assert totals["20240307"].hours == {}


async def test_day_totals_count_hours_and_hotlines_per_day(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    day1 = datetime(2024, 3, 4, 9, 15, tzinfo=UTC)
    flags = [
        make_flag("1.1", at=day1),
        make_flag("1.2", "13812341200", at=day1 + timedelta(minutes=5), hotline="sales"),
        make_flag("1.3", at=day1 + timedelta(hours=5)),
        make_flag("1.4", at=day1 + timedelta(days=1)),
    ]
    for f in flags:
        await store.record_flag(f, 30)
    totals = await store.day_totals(["20240304", "20240305", "20240306"])
    assert totals["20240304"].hours == {9: 2, 14: 1}
    assert totals["20240304"].hotlines == {"service": 2, "sales": 1}
    assert totals["20240305"].hours == {9: 1}
    assert totals["20240306"].hours == {}
    assert await store.day_totals([]) == {}
    k = store.keys
    for key in (k.day_hours("20240304"), k.day_callers("20240304"), k.day_hotlines("20240304")):
        assert 30 * DAY - 5 <= await redis_raw.ttl(key) <= 30 * DAY, key


async def test_top_callers_counts_only_the_given_days(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    day0 = datetime(2024, 3, 3, 10, tzinfo=UTC)
    x, y, z = CALLER, "+8613912345601", "+12025550123"
    n = 0

    async def flag(raw: str, day: int, times: int) -> None:
        nonlocal n
        for _ in range(times):
            n += 1
            at = day0 + timedelta(days=day, minutes=n)
            await store.record_flag(make_flag(f"1.{n}", raw, at=at), RETENTION)

    await flag(x, 0, 5)  # before the period
    await flag(x, 1, 3)
    await flag(y, 2, 2)
    await flag(z, 2, 1)
    top, repeat, distinct = await store.top_callers(["20240304", "20240305"], 10)
    assert top == [(x, 3), (y, 2), (z, 1)]
    assert repeat == [(x, 3), (y, 2)]
    assert distinct == 3
    top, repeat, distinct = await store.top_callers(["20240305"], 10)
    assert (top, repeat, distinct) == ([(y, 2), (z, 1)], [(y, 2)], 2)
    top, repeat, distinct = await store.top_callers(["20240303", "20240304", "20240305"], 1)
    assert (top, repeat, distinct) == ([(x, 8)], [(x, 8)], 3)
    assert (await store.top_callers(["20240304", "20240305"], 10, min_flags=3))[1] == [(x, 3)]
    assert await store.top_callers([], 10) == ([], [], 0)
    # the scratch union is gone afterwards
    assert [key async for key in redis_raw.scan_iter(match="*tmp*")] == []


async def test_anonymous_flags_index(store: Store) -> None:
    t0 = datetime(2024, 3, 4, 9, tzinfo=UTC)
    flags = {
        "allowed": make_flag("1.1", at=t0),
        "withheld": make_flag(
            "1.2", at=t0 + timedelta(minutes=1), presentation=Presentation.WITHHELD
        ),
        "unavailable": make_flag(
            "1.3",
            "anonymous",
            at=t0 + timedelta(minutes=2),
            presentation=Presentation.UNAVAILABLE,
        ),
        "no e164": make_flag("1.4", "123\r\nAction: Originate", at=t0 + timedelta(minutes=3)),
        "foreign": make_flag("1.5", "+12025550123", at=t0 + timedelta(minutes=4)),
    }
    for f in flags.values():
        await store.record_flag(f, RETENTION)
    since, until = t0.timestamp(), (t0 + timedelta(hours=1)).timestamp()
    found = await store.flags_between(since, until, anonymous=True)
    assert found == [flags["withheld"], flags["unavailable"], flags["no e164"]]
    assert await store.flags_between(since, until, anonymous=True, limit=2) == found[:2]
    assert len(await store.flags_between(since, until)) == 5


async def test_flags_between_is_half_open_oldest_first_and_limited(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    flags = [make_flag(f"1.{n}", at=AT + timedelta(hours=n)) for n in range(4)]
    for f in reversed(flags):
        await store.record_flag(f, RETENTION)
    ts = [f.at.timestamp() for f in flags]
    assert await store.flags_between(ts[1], ts[3]) == flags[1:3]
    assert await store.flags_between(ts[0], ts[3] + 1) == flags
    assert await store.flags_between(ts[1], ts[3], limit=1) == [flags[1]]
    assert await store.flags_between(ts[1], ts[3], limit=0) == []
    assert await store.flags_between(ts[3] + 1, ts[3] + 2) == []
    await redis_raw.delete(store.keys.flag("1.2"))  # expired record, index not yet trimmed
    assert await store.flags_between(ts[0], ts[3] + 1) == [flags[0], flags[1], flags[3]]


async def test_flags_between_reads_in_batches(store: Store) -> None:
    flags = [make_flag(f"2.{n}", at=AT + timedelta(seconds=n)) for n in range(1005)]
    for f in flags:
        await store.record_flag(f, RETENTION)
    found = await store.flags_between(AT.timestamp(), (AT + timedelta(hours=1)).timestamp())
    assert [f.flag_id for f in found] == [f.flag_id for f in flags]


async def test_expire_flags_trims_the_anonymous_index_too(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    flags = [
        make_flag(f"1.{n}", "anonymous", at=AT + timedelta(days=n),
                  presentation=Presentation.WITHHELD)
        for n in range(3)
    ]  # fmt: skip
    for f in flags:
        await store.record_flag(f, RETENTION)
    assert await store.expire_flags(flags[0].at.timestamp()) == 1
    assert await redis_raw.zrange(store.keys.anonymous_flags, 0, -1) == ["1.1", "1.2"]


def test_number_block() -> None:
    assert number_block("+8613812341234") == "+86138123412"
    assert number_block("+861012345678") == "+8610123456"
    assert number_block("+12025550123") == "+120255501"
    assert number_block("+8612345") == ""  # too short to have a block
    assert number_block("") == ""


async def test_prefix_clusters_count_distinct_numbers_per_block(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    block_a, block_b = "+86138123412", "+86139123456"
    raws = [
        "13812341200",
        "13812341234",
        "13812341234",  # the same number again: still three numbers
        "13812341299",
        "13912345601",
        "13912345602",
        "anonymous",
        "123abc",
    ]
    for n, raw in enumerate(raws):
        await store.record_flag(make_flag(f"1.{n}", raw, at=AT + timedelta(minutes=n)), 30)
    assert await store.clusters(3, 10) == [
        (block_a, ["+8613812341200", "+8613812341234", "+8613812341299"])
    ]
    assert await store.clusters(2, 10) == [
        (block_a, ["+8613812341200", "+8613812341234", "+8613812341299"]),
        (block_b, ["+8613912345601", "+8613912345602"]),
    ]
    assert await store.clusters(2, 1) == [
        (block_a, ["+8613812341200", "+8613812341234", "+8613812341299"])
    ]
    assert await store.cluster_count(3) == 1
    assert await store.cluster_count(2) == 2
    assert await store.cluster_count(4) == 0
    assert await redis_raw.zrange(store.keys.blocks, 0, -1, withscores=True) == [
        (block_b, 2.0),
        (block_a, 3.0),
    ]
    ttl = await redis_raw.ttl(store.keys.number_block(block_a))
    assert 30 * DAY - 5 <= ttl <= 30 * DAY
    assert not await redis_raw.exists(store.keys.number_block("-"))  # no block for the rest


async def test_clusters_skip_blocks_whose_numbers_expired(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    for n in range(3):
        await store.record_flag(make_flag(f"1.{n}", f"138123412{n}0"), RETENTION)
    assert len(await store.clusters(3, 10)) == 1
    await redis_raw.delete(store.keys.number_block("+86138123412"))
    assert await store.clusters(3, 10) == []


async def test_top_sources_with_details(store: Store) -> None:
    for n in range(3):
        await store.record_flag(make_flag(f"1.{n}", at=AT + timedelta(minutes=n)), RETENTION)
    await store.record_flag(make_flag("2.1", "+12025550123"), RETENTION)
    await store.record_flag(make_flag("2.2", "anonymous"), RETENTION)
    top, total = await store.top_sources(2)
    assert total == 3
    assert [s.key for s in top] == [CALLER, top[1].key]
    assert top[0].count == 3
    assert (top[0].e164, top[0].masked) == (CALLER, "+86138****1234")
    assert (top[0].carrier, top[0].area) == ("China Mobile", "Lianyungang, Jiangsu")
    assert (top[0].kind, top[0].region) == ("mobile", "CN")
    everyone, total = await store.top_sources(10)
    assert total == 3
    assert everyone[:2] == top
    assert {s.key for s in everyone} == {CALLER, "+12025550123", "anonymous"}
    assert [s.count for s in everyone] == [3, 1, 1]
    anonymous = await store.caller_stats("anonymous")
    assert anonymous is not None
    assert (anonymous.e164, anonymous.masked, anonymous.carrier) == ("", "anonymous", "")


async def test_report_reads_raise_store_error_when_redis_is_down(
    dead_redis: RedisServer,
) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.5)
    dead_redis.stop()
    try:
        for op in (
            s.flags_between(0, 1),
            s.day_totals(["20240304"]),
            s.top_callers(["20240304"], 5),
            s.clusters(3, 5),
            s.top_sources(5),
            s.cluster_count(3),
        ):
            with pytest.raises(StoreError):
                await op
    finally:
        await s.aclose()
