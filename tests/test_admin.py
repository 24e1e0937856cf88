"""Tests for screener.admin (RuleAdmin) against a real redis-server."""

from __future__ import annotations

import json
import os

import pytest
import redis.asyncio as aioredis

from screener.admin import NotFound, RuleAdmin, RuleFilter, check_actor
from screener.config import Settings, load
from screener.errors import ImportFormatError, StoreError
from screener.keys import DAY
from screener.rules import Match, Origin, Rule, RuleList, Treatment, Verdict
from screener.store import Store
from tests.factories import AT
from tests.lab.redis import RedisServer

NOW = AT.timestamp()
CALLER = "+8613812341234"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


def make_settings() -> Settings:
    return load(None, {"hotlines": {"4008001234": "service", "4008005678": "sales"}})


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admin(store: Store, clock: Clock) -> RuleAdmin:
    return RuleAdmin(make_settings(), store, clock)


async def all_keys(raw: aioredis.Redis) -> list[str]:
    return [k async for k in raw.scan_iter(match="*", count=1000)]


# --- actors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["alice", "ops.team", "a@b.example", "+86-1", "x" * 64])
def test_check_actor_accepts(actor: str) -> None:
    assert check_actor(actor) == actor


@pytest.mark.parametrize("actor", ["", "x" * 65, "bob smith", "bob\r\nx", "ali/ce", "é"])
def test_check_actor_refuses(actor: str) -> None:
    with pytest.raises(ValueError, match="actor"):
        check_actor(actor)


# --- add --------------------------------------------------------------------------------------


async def test_add_stores_and_audits(admin: RuleAdmin, store: Store) -> None:
    rule = await admin.add(
        {"value": "13812341234", "reason": "threats", "treatment": "busy"}, "alice"
    )
    assert rule.id == "r1"
    assert (rule.list, rule.match, rule.value) == (RuleList.BLOCK, Match.NUMBER, CALLER)
    assert (rule.action, rule.treatment) == (Verdict.BLOCK, Treatment.BUSY)
    assert (rule.created_by, rule.created_at, rule.origin) == ("alice", NOW, Origin.ADMIN)
    assert await store.get_rule("r1") == rule
    (entry,) = await store.audit_trail()
    assert (entry.action, entry.by, entry.why, entry.rule, entry.at) == (
        "add",
        "alice",
        "threats",
        "r1",
        NOW,
    )


async def test_add_an_expiring_rule_uses_the_clock(admin: RuleAdmin, clock: Clock) -> None:
    clock.now = NOW + 100
    rule = await admin.add({"value": CALLER, "reason": "x", "expires": "2d"}, "alice")
    assert rule.expires_at == NOW + 100 + 2 * DAY


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"value": CALLER}, "reason is required"),
        ({"value": "", "reason": "x"}, "value is required"),
        ({"value": "not a number", "reason": "x"}, "is not a phone number"),
        ({"value": CALLER, "reason": "x", "hotlines": ["nowhere"]}, "not configured"),
        ({"value": CALLER, "reason": "x", "list": "allow", "action": "block"}, "allowlist"),
        ({"value": CALLER, "reason": "x", "colour": "red"}, "unknown field"),
        ({"value": CALLER, "reason": "line one\nline two"}, "one line"),
    ],
)
async def test_add_refuses_bad_fields_and_stores_nothing(
    admin: RuleAdmin, redis_raw: aioredis.Redis, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await admin.add(fields, "alice")
    assert await all_keys(redis_raw) == []


async def test_add_names_every_problem(admin: RuleAdmin) -> None:
    with pytest.raises(ValueError) as info:
        await admin.add({"value": CALLER, "mode": "loud", "hotlines": "nowhere"}, "alice")
    text = str(info.value)
    assert "mode" in text
    assert "nowhere" in text
    assert "reason is required" in text


async def test_add_refuses_a_bad_actor(admin: RuleAdmin, redis_raw: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="actor"):
        await admin.add({"value": CALLER, "reason": "x"}, "bob smith")
    assert await all_keys(redis_raw) == []


# --- remove and show --------------------------------------------------------------------------


async def test_remove_audits_who_and_why(admin: RuleAdmin, store: Store, clock: Clock) -> None:
    rule = await admin.add({"value": CALLER, "reason": "threats"}, "alice")
    clock.now = NOW + 60
    removed = await admin.remove(rule.id, "bob", "  wrong number  ")
    assert removed == rule
    assert await store.get_rule(rule.id) is None
    assert await store.candidate_rules(CALLER, "", "") == []
    latest = (await store.audit_trail(limit=1))[0]
    assert (latest.action, latest.by, latest.why, latest.rule, latest.at) == (
        "remove",
        "bob",
        "wrong number",
        rule.id,
        NOW + 60,
    )


async def test_remove_needs_a_reason(admin: RuleAdmin, store: Store) -> None:
    rule = await admin.add({"value": CALLER, "reason": "threats"}, "alice")
    for why in ("", "   "):
        with pytest.raises(ValueError, match="reason is required"):
            await admin.remove(rule.id, "bob", why)
    with pytest.raises(ValueError, match="one line"):
        await admin.remove(rule.id, "bob", "ok\r\nforged: entry")
    with pytest.raises(ValueError, match="actor"):
        await admin.remove(rule.id, "bob smith", "fine")
    assert await store.get_rule(rule.id) == rule
    assert len(await store.audit_trail()) == 1


async def test_remove_an_unknown_rule_is_not_found(admin: RuleAdmin, store: Store) -> None:
    with pytest.raises(NotFound, match="no rule r7"):
        await admin.remove("r7", "bob", "cleanup")
    assert await store.audit_trail() == []


async def test_show_gives_the_rule_and_its_history(admin: RuleAdmin) -> None:
    rule = await admin.add({"value": CALLER, "reason": "threats"}, "alice")
    await admin.add({"value": "+8613900000000", "reason": "other"}, "alice")
    shown, history = await admin.show(rule.id)
    assert shown == rule
    assert [(h.action, h.rule) for h in history] == [("add", rule.id)]
    await admin.remove(rule.id, "bob", "done")
    with pytest.raises(NotFound):
        await admin.show(rule.id)
    assert [h.action for h in await admin.audit(rule_id=rule.id)] == ["remove", "add"]


# --- find -------------------------------------------------------------------------------------


@pytest.fixture
async def several(admin: RuleAdmin, store: Store, clock: Clock) -> dict[str, Rule]:
    rules = {
        "number": await admin.add({"value": CALLER, "reason": "a"}, "alice"),
        "challenge": await admin.add({"value": CALLER, "reason": "b", "action": "challenge"}, "a"),
        "other": await admin.add({"value": "+8613900000000", "reason": "c"}, "alice"),
        "prefix": await admin.add({"value": "+86105*", "reason": "d"}, "alice"),
        "range": await admin.add({"value": "+861012345600..+861012345699", "reason": "e"}, "a"),
        "allow": await admin.add({"value": "+8613700000000", "reason": "f", "list": "allow"}, "a"),
        "withheld": await admin.add({"value": "withheld", "reason": "g"}, "alice"),
        "any": await admin.add({"value": "any", "reason": "h"}, "alice"),
        "expiring": await admin.add(
            {"value": "+8613600000000", "reason": "i", "expires": "1h"}, "a"
        ),
    }
    imported = await admin.import_rules("value,reason\n+8613500000000,j\n", "csv", "carol")
    rules["imported"] = (await store.get_rule(imported[0])) or pytest.fail("not stored")
    return rules


def ids(rules: list[Rule]) -> list[str]:
    return [r.id for r in rules]


async def test_find_everything_oldest_first(admin: RuleAdmin, several: dict[str, Rule]) -> None:
    assert ids(await admin.find(RuleFilter())) == ids(list(several.values()))
    assert ids(await admin.find(RuleFilter(), limit=2)) == ids(list(several.values()))[:2]


async def test_find_by_list_and_origin(admin: RuleAdmin, several: dict[str, Rule]) -> None:
    assert ids(await admin.find(RuleFilter(list=RuleList.ALLOW))) == [several["allow"].id]
    assert ids(await admin.find(RuleFilter(origin=Origin.IMPORT))) == [several["imported"].id]
    blocks = await admin.find(RuleFilter(list=RuleList.BLOCK, origin=Origin.ADMIN))
    assert several["allow"].id not in ids(blocks)
    assert several["imported"].id not in ids(blocks)
    assert len(blocks) == 8


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("13812341234", ["number", "challenge"]),  # any spelling of the number
        ("013812341234", ["number", "challenge"]),
        ("+8613812341235", []),
        ("+86105*", ["prefix"]),
        ("0105*", ["prefix"]),  # the trunk prefix of the region
        ("+86138*", []),
        ("+861012345600..+861012345699", ["range"]),
        ("withheld", ["withheld"]),
        ("any", ["any"]),
        ("unavailable", []),
    ],
)
async def test_find_by_value(
    admin: RuleAdmin, several: dict[str, Rule], value: str, names: list[str]
) -> None:
    found = await admin.find(RuleFilter(value=value))
    assert ids(found) == [several[n].id for n in names]


async def test_find_by_an_unreadable_value(admin: RuleAdmin) -> None:
    with pytest.raises(ValueError):
        await admin.find(RuleFilter(value="12..3"))


async def test_find_leaves_out_expired_rules_unless_asked(
    admin: RuleAdmin, several: dict[str, Rule], clock: Clock
) -> None:
    expiring = several["expiring"].id
    assert expiring in ids(await admin.find(RuleFilter()))
    clock.now = NOW + 3600
    assert expiring not in ids(await admin.find(RuleFilter()))
    assert expiring in ids(await admin.find(RuleFilter(include_expired=True)))
    found = await admin.find(RuleFilter(value="+8613600000000", include_expired=True))
    assert ids(found) == [expiring]


# --- import -----------------------------------------------------------------------------------

GOOD_CSV = """value,reason,action,treatment,hotlines,windows,expires
+8613812341234,threats,block,linefault,service,,
'+86105*,public phones,challenge,,,mon-fri 22:00-06:00,
+861012345600..+861012345699,office block,analysis,,service;sales,learned,7d
withheld,no caller id at night,challenge,,,22:00-06:00,
"""


async def test_import_csv(admin: RuleAdmin, store: Store) -> None:
    ids_ = await admin.import_rules(GOOD_CSV, "csv", "carol")
    assert ids_ == ["r1", "r2", "r3", "r4"]
    rules = await store.all_rules()
    assert [(r.match, r.value) for r in rules] == [
        (Match.NUMBER, CALLER),
        (Match.PREFIX, "+86105"),
        (Match.RANGE, "+861012345600..+861012345699"),
        (Match.ANONYMOUS, "withheld"),
    ]
    assert {(r.origin, r.created_by, r.created_at) for r in rules} == {
        (Origin.IMPORT, "carol", NOW)
    }
    assert rules[0].treatment is Treatment.LINEFAULT
    assert rules[2].hotlines == ("service", "sales")
    assert rules[2].expires_at == NOW + 7 * DAY
    audit = await store.audit_trail()
    assert {(e.action, e.by) for e in audit} == {("import", "carol"), ("import-commit", "carol")}
    assert audit[0].action == "import-commit" and audit[0].why == "4 rules: csv import of 4 rules"
    assert [e.why for e in audit[1:]][::-1] == [r.reason for r in rules]


async def test_import_json_lines_and_array(admin: RuleAdmin, store: Store) -> None:
    lines = "\n".join(
        json.dumps(d) for d in ({"value": CALLER, "reason": "a"}, {"value": "any", "reason": "b"})
    )
    assert await admin.import_rules(lines + "\n", "json", "carol") == ["r1", "r2"]
    array = json.dumps([{"value": "+8613900000000", "reason": "c", "list": "allow"}])
    assert await admin.import_rules(array, "json", "carol") == ["r3"]
    rule = await store.get_rule("r3")
    assert rule is not None
    assert rule.list is RuleList.ALLOW


BAD_CSV = """value,reason,action
+8613812341234,threats,block
not-a-number,oops,block
+8613900000000,,block
+86105*,fine,block
+8613700000000,bad action,explode
"""


async def test_an_import_with_bad_lines_names_each_and_stores_nothing(
    admin: RuleAdmin, redis_raw: aioredis.Redis
) -> None:
    with pytest.raises(ImportFormatError) as info:
        await admin.import_rules(BAD_CSV, "csv", "carol")
    problems = info.value.problems
    assert [line for line, _ in problems] == [3, 4, 6]
    assert "not a phone number" in problems[0][1]
    assert "reason is required" in problems[1][1]
    assert "action" in problems[2][1]
    assert "nothing imported" in str(info.value)
    assert await all_keys(redis_raw) == []  # not even the good lines, nor an audit entry


async def test_an_import_with_a_bad_json_line(admin: RuleAdmin, redis_raw: aioredis.Redis) -> None:
    text = '{"value": "+8613812341234", "reason": "a"}\n{"value": \n[1]\n'
    with pytest.raises(ImportFormatError) as info:
        await admin.import_rules(text, "json", "carol")
    assert [line for line, _ in info.value.problems] == [2, 3]
    assert await all_keys(redis_raw) == []


async def test_an_import_by_a_bad_actor_stores_nothing(
    admin: RuleAdmin, redis_raw: aioredis.Redis
) -> None:
    with pytest.raises(ValueError, match="actor"):
        await admin.import_rules(GOOD_CSV, "csv", "carol\r\n")
    assert await all_keys(redis_raw) == []


async def test_an_import_when_redis_is_down(dead_redis: RedisServer) -> None:
    s = Store.from_url(dead_redis.url, timeout=0.3)
    try:
        admin = RuleAdmin(make_settings(), s, Clock())
        dead_redis.stop()
        with pytest.raises(StoreError):
            await admin.import_rules(GOOD_CSV, "csv", "carol")
    finally:
        await s.aclose()


# --- export and audit -------------------------------------------------------------------------


async def test_export_csv_imports_back_as_it_was(
    admin: RuleAdmin, store: Store, redis_raw: aioredis.Redis
) -> None:
    await admin.import_rules(GOOD_CSV, "csv", "carol")
    await admin.add({"value": "+8613900000000", "reason": "=HYPERLINK(x)", "list": "allow"}, "a")
    before = await store.all_rules()
    text = await admin.export("csv", RuleFilter())
    assert "\n=" not in text and ",=" not in text  # formula-safe
    await redis_raw.flushdb()
    await admin.import_rules(text, "csv", "dave")
    after = await store.all_rules()

    def essence(rule: Rule) -> tuple[object, ...]:
        return (
            rule.list,
            rule.match,
            rule.value,
            rule.action,
            rule.treatment,
            rule.hotlines,
            rule.windows,
            rule.expires_at,
            rule.mode,
            rule.reason,
        )

    assert [essence(r) for r in after] == [essence(r) for r in before]


async def test_export_json_lines(admin: RuleAdmin) -> None:
    await admin.import_rules(GOOD_CSV, "csv", "carol")
    text = await admin.export("json", RuleFilter(list=RuleList.BLOCK))
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["id"] for r in rows] == ["r1", "r2", "r3", "r4"]
    assert rows[0]["value"] == CALLER


async def test_export_refuses_an_unknown_format(admin: RuleAdmin) -> None:
    with pytest.raises(ValueError, match="csv or json"):
        await admin.export("xlsx", RuleFilter())


async def test_audit_newest_first(admin: RuleAdmin) -> None:
    a = await admin.add({"value": CALLER, "reason": "one"}, "alice")
    b = await admin.add({"value": "+8613900000000", "reason": "two"}, "alice")
    await admin.remove(a.id, "bob", "three")
    assert [e.why for e in await admin.audit()] == ["three", "two", "one"]
    assert [e.why for e in await admin.audit(limit=1)] == ["three"]
    assert [e.why for e in await admin.audit(rule_id=b.id)] == ["two"]
