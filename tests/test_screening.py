"""Tests for screener.screening (ScreeningService) against a real redis-server.

The FastAGI route is driven through a real :class:`~screener.agi_server.AgiServer` on a socket,
with a fake Asterisk speaking the wire protocol as ``tests/test_agi_server.py`` does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from screener.agi_server import AgiServer
from screener.config import Settings, load
from screener.errors import StoreError
from screener.metrics import Metrics
from screener.model import Flag, Presentation
from screener.rules import Match, Origin, Rule, RuleList, Treatment, Verdict, with_id
from screener.screening import RESULT_VARIABLE, ScreeningService, caller_number
from screener.service import FlagService
from screener.spool import Spool
from screener.store import Store
from tests.factories import make_flag, make_rule
from tests.fakes import FakeAsterisk, b64, inbound_call
from tests.lab.redis import RedisServer

CALLER = "+8613812341234"
SERVICE_DID = "4008001234"
SALES_DID = "4008005678"
T0 = datetime(2024, 3, 6, 14, 0, tzinfo=UTC)  # a Wednesday, 14h UTC
NOW = T0.timestamp()
WAIT = 3.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


def make_settings(**screening: Any) -> Settings:
    return load(
        None,
        {
            "hotlines": {SERVICE_DID: "service", SALES_DID: "sales"},
            "screening": screening,
        },
    )


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Screening:
    """A ScreeningService on a store, with its registry and clock at hand."""

    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.service = ScreeningService(
            settings or make_settings(), store, self.metrics, self.clock
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def add(self, value: str = CALLER, **fields: Any) -> Rule:
        rule = make_rule(value, now=self.clock.now - 1, **fields)
        (rule_id,) = await self.store.add_rules([rule], by="alice", action="add", now=NOW)
        return with_id(rule, rule_id)

    async def screen(
        self, number: str = CALLER, did: str = SERVICE_DID, pres: str = "allowed_not_screened"
    ) -> tuple[str, str]:
        """(SCREENER_SCREEN value, decision reason)."""
        decision, value = await self.service.screen([b64(number), did, pres])
        return value, decision.reason


@pytest.fixture
def screening(store: Store) -> Screening:
    return Screening(store)


def args(number: str = CALLER, did: str = SERVICE_DID, pres: str = "allowed") -> list[str]:
    return [b64(number), did, pres]


# --- the caller as the dialplan describes it ------------------------------------------------------


def test_caller_number() -> None:
    assert caller_number("+8613812341234") == ("+8613812341234", False)
    assert caller_number("+8613812341234\r\nagi_arg_1: x") == ("+8613812341234", True)
    assert caller_number("0123\x00tail") == ("0123", True)
    assert caller_number("\n") == ("", True)
    assert caller_number("") == ("", False)


def test_call_from_args(screening: Screening) -> None:
    call = screening.service.call_from_args(args(), NOW)
    assert (call.key, call.e164) == (CALLER, CALLER)
    assert call.presentation is Presentation.ALLOWED
    assert call.hotline == "service"
    assert call.local == T0
    assert call.anonymous_kind == ""
    assert screening.sample("screener_attacks_total", kind="cid_injection") == 0


def test_call_from_args_in_the_configured_zone(store: Store) -> None:
    settings = load(None, {"numbers": {"timezone": "Asia/Shanghai"}})
    service = ScreeningService(settings, store, Metrics(CollectorRegistry()))
    local = service.call_from_args(args(), NOW).local
    assert (local.hour, local.utcoffset()) == (22, timedelta(hours=8))


@pytest.mark.parametrize(
    ("given", "key", "e164", "presentation", "kind"),
    [
        (args(pres="prohib_passed_screen"), CALLER, CALLER, Presentation.WITHHELD, "withheld"),
        (args(number="anonymous"), "anonymous", "", Presentation.UNAVAILABLE, "unavailable"),
        (
            args(number="", pres="unavailable"),
            "anonymous",
            "",
            Presentation.UNAVAILABLE,
            "unavailable",
        ),
        ([], "anonymous", "", Presentation.UNAVAILABLE, "unavailable"),
        (["not base64!", SERVICE_DID], "anonymous", "", Presentation.UNAVAILABLE, "unavailable"),
        (args(pres="prohib;Set(x=1)"), CALLER, CALLER, Presentation.ALLOWED, ""),
    ],
)
def test_call_from_args_identities(
    screening: Screening,
    given: list[str],
    key: str,
    e164: str,
    presentation: Presentation,
    kind: str,
) -> None:
    call = screening.service.call_from_args(given, NOW)
    assert (call.key, call.e164, call.presentation, call.anonymous_kind) == (
        key,
        e164,
        presentation,
        kind,
    )


@pytest.mark.parametrize(
    ("did", "hotline"),
    [(SERVICE_DID, "service"), (SALES_DID, "sales"), ("999", "other"), ("", "other"),
     (SERVICE_DID + "\r\n", "other"), ("4008001234;x", "other")],
)  # fmt: skip
def test_call_from_args_hotline(screening: Screening, did: str, hotline: str) -> None:
    assert screening.service.call_from_args(args(did=did), NOW).hotline == hotline


def test_a_hostile_caller_id_is_cut_and_counted(screening: Screening) -> None:
    hostile = args(number="+8613812341234\r\nagi_arg_1: x")
    call = screening.service.call_from_args(hostile, NOW)
    assert (call.key, call.e164) == (CALLER, CALLER)
    assert screening.sample("screener_attacks_total", kind="cid_injection") == 1


# --- verdicts -------------------------------------------------------------------------------------


async def test_no_rule_allows(screening: Screening) -> None:
    assert await screening.screen() == ("allow/-/-/-", "no rule")
    labels = {"verdict": "allow", "reason": "no_rule", "treatment": "none", "hotline": "service"}
    assert screening.sample("screener_screens_total", **labels) == 1
    assert screening.sample("screener_screen_seconds_count") == 1
    assert screening.sample("screener_screen_failopen_total", reason="redis") == 0


async def test_a_number_rule_blocks_with_the_default_treatment(screening: Screening) -> None:
    rule = await screening.add()
    value, reason = await screening.screen()
    assert value == f"block/analysis/-/{rule.id}"
    assert reason == f"number rule {rule.id}"
    labels = {"verdict": "block", "reason": "number", "treatment": "analysis", "hotline": "service"}
    assert screening.sample("screener_screens_total", **labels) == 1
    # another caller goes through
    assert (await screening.screen("+8613812341235"))[0] == "allow/-/-/-"


async def test_the_hotlines_treatment(store: Store) -> None:
    s = Screening(store, make_settings(treatments={"service": "busy"}))
    rule = await s.add()
    assert (await s.screen(did=SERVICE_DID))[0] == f"block/busy/-/{rule.id}"
    assert (await s.screen(did=SALES_DID))[0] == f"block/analysis/-/{rule.id}"


async def test_the_rules_own_treatment_wins(store: Store) -> None:
    s = Screening(store, make_settings(treatments={"service": "busy"}))
    rule = await s.add(treatment="linefault")
    assert (await s.screen())[0] == f"block/linefault/-/{rule.id}"


async def test_a_challenge_names_a_configured_digit(store: Store) -> None:
    s = Screening(store, make_settings(challenge_digits="7"))
    rule = await s.add(action="challenge")
    assert (await s.screen())[0] == f"challenge/-/7/{rule.id}"
    s2 = Screening(store, make_settings(challenge_digits="358"))
    digits = {(await s2.screen())[0].split("/")[2] for _ in range(60)}
    assert digits <= {"3", "5", "8"}
    assert len(digits) > 1  # drawn, not fixed


async def test_prefix_range_and_anonymous_rules(screening: Screening) -> None:
    prefix = await screening.add("+86105*", action="analysis")
    in_range = await screening.add("+8613812341200..+8613812341299", action="challenge")
    withheld = await screening.add("withheld")
    assert (await screening.screen("+8610512345678"))[0] == f"analysis/-/-/{prefix.id}"
    assert (await screening.screen(CALLER))[0].startswith("challenge/-/")
    assert (await screening.screen(CALLER))[0].endswith(f"/{in_range.id}")
    assert (await screening.screen("+8613812341300"))[0] == "allow/-/-/-"
    assert (await screening.screen(pres="prohib"))[0].endswith(f"/{in_range.id}")  # the number
    withheld_call = await screening.screen("+8613900000000", pres="prohib")
    assert withheld_call[0] == f"block/analysis/-/{withheld.id}"
    assert (await screening.screen("", pres="prohib"))[0] == f"block/analysis/-/{withheld.id}"
    assert (await screening.screen("anonymous"))[0] == "allow/-/-/-"  # unavailable, not withheld


async def test_the_allowlist_wins(screening: Screening) -> None:
    await screening.add("+86138*")
    allow = await screening.add(list="allow")
    value, reason = await screening.screen()
    assert value == f"allow/-/-/{allow.id}"
    assert reason == f"allowlisted by {allow.id}"
    labels = {"verdict": "allow", "reason": "allowlist", "treatment": "none", "hotline": "service"}
    assert screening.sample("screener_screens_total", **labels) == 1


async def test_a_shadow_rule_is_counted_not_enforced(
    screening: Screening, caplog: pytest.LogCaptureFixture
) -> None:
    await screening.add(mode="shadow")
    with caplog.at_level("INFO", logger="screener.screening"):
        assert (await screening.screen())[0] == "allow/-/-/-"
    assert screening.sample("screener_shadow_hits_total", match="number", action="block") == 1
    assert "shadow rule would apply" in caplog.text
    assert CALLER not in caplog.text  # masked
    assert "+86138****1234" in caplog.text


async def test_a_rule_scoped_to_another_hotline_does_not_apply(screening: Screening) -> None:
    rule = await screening.add(hotlines="sales")
    assert (await screening.screen(did=SERVICE_DID))[0] == "allow/-/-/-"
    assert (await screening.screen(did=SALES_DID))[0] == f"block/analysis/-/{rule.id}"


async def test_an_expired_rule_does_not_apply(screening: Screening) -> None:
    rule = await screening.add(expires="1h")
    assert (await screening.screen())[0] == f"block/analysis/-/{rule.id}"
    screening.clock.now += 3600
    assert (await screening.screen())[0] == "allow/-/-/-"


async def test_the_hostile_caller_id_screens_as_its_number(screening: Screening) -> None:
    rule = await screening.add()
    value, _ = await screening.screen("+8613812341234\r\nagi_arg_1: x")
    assert value == f"block/analysis/-/{rule.id}"
    assert screening.sample("screener_attacks_total", kind="cid_injection") == 1


async def test_screening_disabled_allows_everyone(store: Store) -> None:
    s = Screening(store, make_settings(enabled=False))
    await s.add()
    assert await s.screen() == ("allow/-/-/-", "failopen_disabled")
    labels = {
        "verdict": "allow",
        "reason": "failopen_disabled",
        "treatment": "none",
        "hotline": "service",
    }
    assert s.sample("screener_screens_total", **labels) == 1
    assert s.sample("screener_screen_failopen_total", reason="disabled") == 0  # not a failure


# --- failing open ---------------------------------------------------------------------------------


async def test_fails_open_when_redis_is_down(dead_redis: RedisServer) -> None:
    s = Screening(Store.from_url(dead_redis.url, timeout=0.5), make_settings(budget_ms=200))
    try:
        await s.add()
        assert (await s.screen())[0].startswith("block/")
        dead_redis.stop()
        assert await s.screen() == ("allow/-/-/-", "failopen_redis")
        assert s.sample("screener_screen_failopen_total", reason="redis") == 1
        labels = {
            "verdict": "allow",
            "reason": "failopen_redis",
            "treatment": "none",
            "hotline": "service",
        }
        assert s.sample("screener_screens_total", **labels) == 1
    finally:
        await s.store.aclose()


async def test_fails_open_within_the_budget_when_redis_hangs(dead_redis: RedisServer) -> None:
    s = Screening(Store.from_url(dead_redis.url, timeout=5.0), make_settings(budget_ms=50))
    try:
        await s.add()
        dead_redis.sigstop()  # the connection stays open; nothing answers
        loop = asyncio.get_running_loop()
        started = loop.time()
        value, reason = await s.screen()
        elapsed = loop.time() - started
        assert (value, reason) == ("allow/-/-/-", "failopen_timeout")
        assert elapsed < 0.5  # the budget, not the store's 5 s timeout
        assert s.sample("screener_screen_failopen_total", reason="timeout") == 1
    finally:
        dead_redis.sigcont()
        await s.store.aclose()


class BrokenStore:
    """A RuleStore whose every call fails (only candidate_rules is reached here)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def candidate_rules(self, *_: Any, **__: Any) -> list[Rule]:
        raise self.error


async def test_a_store_error_fails_open_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    service = ScreeningService(
        make_settings(),
        BrokenStore(StoreError("redis candidate_rules: Connection refused")),  # type: ignore[arg-type]
        metrics,
    )
    with caplog.at_level("WARNING", logger="screener.screening"):
        decision, value = await service.screen(args())
    assert (decision.verdict, decision.reason, value) == (
        Verdict.ALLOW,
        "failopen_redis",
        "allow/-/-/-",
    )
    assert "Connection refused" in caplog.text


async def test_other_errors_are_not_swallowed() -> None:
    service = ScreeningService(
        make_settings(),
        BrokenStore(RuntimeError("a bug")),  # type: ignore[arg-type]
        Metrics(CollectorRegistry()),
    )
    with pytest.raises(RuntimeError, match="a bug"):
        await service.screen(args())


# --- learning high-risk hours ---------------------------------------------------------------------


async def record(store: Store, flags: Sequence[Flag]) -> None:
    for flag in flags:
        assert await store.record_flag(flag, 400)


async def test_relearn_and_learned_windows(screening: Screening, store: Store) -> None:
    night = T0.replace(hour=23)
    await record(store, [make_flag(f"1.{n}", at=night + timedelta(minutes=n)) for n in range(10)])
    await record(store, [make_flag("2.1", "+8613900000000", at=T0)])  # one flag at 14h
    rule = await screening.add(windows="learned")
    assert (await screening.screen())[0] == "allow/-/-/-"  # nothing learned yet
    assert await screening.service.relearn() == frozenset({23})
    assert screening.sample("screener_high_risk_hours") == 1
    assert (await screening.screen())[0] == "allow/-/-/-"  # 14h
    screening.clock.now = night.timestamp() + 1800
    assert (await screening.screen())[0] == f"block/analysis/-/{rule.id}"


async def test_relearn_with_too_few_flags_learns_nothing(
    screening: Screening, store: Store
) -> None:
    await record(store, [make_flag(f"1.{n}", at=T0 + timedelta(minutes=n)) for n in range(4)])
    assert await screening.service.relearn() == frozenset()  # min_flags = 5
    assert screening.sample("screener_high_risk_hours") == 0


async def test_relearn_keeps_the_hours_when_redis_fails(dead_redis: RedisServer) -> None:
    s = Screening(Store.from_url(dead_redis.url, timeout=0.3))
    try:
        await record(s.store, [make_flag(f"1.{n}", at=T0) for n in range(6)])
        assert await s.service.relearn() == frozenset({14})
        dead_redis.stop()
        with pytest.raises(StoreError):
            await s.service.relearn()
        assert s.service.high_risk == frozenset({14})
        assert s.sample("screener_high_risk_hours") == 1
    finally:
        await s.store.aclose()


# --- automatic blocks -----------------------------------------------------------------------------


def flag_by(
    n: int, agent: str, *, at: datetime = T0, raw: str = "13812341234", **changes: Any
) -> Flag:
    return make_flag(f"1700000000.{n}", raw, at=at, agent=agent, **changes)


async def flags_from(
    store: Store, agents: Sequence[str], at: datetime = T0, first: int = 1
) -> list[Flag]:
    """One flag of the caller per agent, a minute apart (flag ids from ``first`` on)."""
    flags = [flag_by(first + n, a, at=at + timedelta(minutes=n)) for n, a in enumerate(agents)]
    await record(store, flags)
    return flags


async def test_a_quorum_of_three_agents_blocks(screening: Screening, store: Store) -> None:
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    screening.clock.now = NOW + 3600
    rule = await screening.service.consider_auto_block(flags[-1])
    assert rule is not None
    assert (rule.list, rule.match, rule.value, rule.action) == (
        RuleList.BLOCK,
        Match.NUMBER,
        CALLER,
        Verdict.BLOCK,
    )
    assert (rule.origin, rule.created_by) == (Origin.AUTO, "screener")
    assert rule.expires_at == NOW + 3600 + 3600  # the first of auto_block_hours: 1h
    assert "3 distinct agents" in rule.reason
    assert "PJSIP/agent1, PJSIP/agent2, PJSIP/agent3" in rule.reason
    assert "automatic block #1" in rule.reason
    assert await store.get_rule(rule.id) == rule
    assert await store.auto_blocks_of(CALLER) == 1
    assert screening.sample("screener_auto_blocks_total") == 1
    (entry,) = await store.audit_trail()
    assert (entry.action, entry.by, entry.rule) == ("auto", "screener", rule.id)
    # and the caller is screened out now
    assert (await screening.screen())[0] == f"block/analysis/-/{rule.id}"


async def test_two_agents_are_not_a_quorum(screening: Screening, store: Store) -> None:
    # three flags, but two of them by the same agent
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent1"])
    screening.clock.now = NOW + 3600
    assert await screening.service.consider_auto_block(flags[-1]) is None
    assert await store.all_rules() == []
    assert await store.auto_blocks_of(CALLER) == 0
    assert screening.sample("screener_auto_blocks_total") == 0


async def test_flags_outside_the_window_do_not_count(screening: Screening, store: Store) -> None:
    old = await flags_from(store, ["PJSIP/agent1"], at=T0 - timedelta(hours=25))
    recent = await flags_from(store, ["PJSIP/agent2", "PJSIP/agent3"], at=T0, first=2)
    screening.clock.now = NOW + 600
    assert await screening.service.consider_auto_block(recent[-1]) is None
    assert await store.all_rules() == []
    # the same three agents inside a wider window are a quorum
    wide = Screening(store, make_settings(quorum_window_hours=48))
    wide.clock.now = NOW + 600
    assert await wide.service.consider_auto_block(old[0]) is not None


async def test_the_quorum_is_configurable(store: Store) -> None:
    s = Screening(store, make_settings(quorum=2))
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2"])
    s.clock.now = NOW + 600
    assert await s.service.consider_auto_block(flags[-1]) is not None


@pytest.mark.parametrize("allow", ["+8613812341234", "+86138*", "+8613812341200..+8613812341299"])
async def test_allowlisted_callers_are_never_auto_blocked(
    screening: Screening, store: Store, allow: str
) -> None:
    await screening.add(allow, list="allow", hotlines="sales")  # even a scoped allow
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    screening.clock.now = NOW + 600
    assert await screening.service.consider_auto_block(flags[-1]) is None
    assert [r.list for r in await store.all_rules()] == [RuleList.ALLOW]
    assert await store.auto_blocks_of(CALLER) == 0
    assert screening.sample("screener_auto_blocks_total") == 0


async def test_an_allow_rule_that_does_not_protect(screening: Screening, store: Store) -> None:
    await screening.add(list="allow", mode="shadow")
    await screening.add(list="allow", expires="1h")  # expired by the time of the flags
    await screening.add("+8613812341235", list="allow")  # a neighbour
    await screening.add("+8613812341300..+8613812341399", list="allow")
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    screening.clock.now = NOW + 7200
    assert await screening.service.consider_auto_block(flags[-1]) is not None


async def test_an_already_blocked_number_gets_no_auto_block(
    screening: Screening, store: Store
) -> None:
    await screening.add()
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    screening.clock.now = NOW + 600
    assert await screening.service.consider_auto_block(flags[-1]) is None
    assert await store.auto_blocks_of(CALLER) == 0


async def test_a_prefix_rule_does_not_prevent_an_auto_block(
    screening: Screening, store: Store
) -> None:
    await screening.add("+86138*", action="challenge")
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    screening.clock.now = NOW + 600
    assert await screening.service.consider_auto_block(flags[-1]) is not None


@pytest.mark.parametrize(
    ("raw", "presentation"),
    [
        ("13812341234", Presentation.WITHHELD),  # the network passed the number on, privately
        ("13812341234", Presentation.UNAVAILABLE),
        ("anonymous", Presentation.UNAVAILABLE),
        ("123\r\nAction: Originate", Presentation.ALLOWED),  # not a number: hashed key
    ],
)
async def test_withheld_and_non_numbers_are_never_auto_blocked(
    screening: Screening, store: Store, raw: str, presentation: Presentation
) -> None:
    flags = [flag_by(n, f"PJSIP/agent{n}", raw=raw, presentation=presentation) for n in range(1, 5)]
    await record(store, flags)
    screening.clock.now = NOW + 600
    assert await screening.service.consider_auto_block(flags[-1]) is None
    assert await store.all_rules() == []
    assert screening.sample("screener_auto_blocks_total") == 0


async def test_auto_blocks_can_be_switched_off(store: Store) -> None:
    s = Screening(store, make_settings(auto_block=False))
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    s.clock.now = NOW + 600
    assert await s.service.consider_auto_block(flags[-1]) is None
    assert await store.all_rules() == []


async def test_the_second_auto_block_lasts_longer(
    screening: Screening, store: Store, redis_raw: aioredis.Redis
) -> None:
    service = screening.service
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    screening.clock.now = NOW + 600
    first = await service.consider_auto_block(flags[-1])
    assert first is not None
    assert first.expires_at == NOW + 600 + 3600
    # while it runs, more flags make no second block
    more = await flags_from(store, ["PJSIP/agent4"], at=T0 + timedelta(minutes=20), first=4)
    assert await service.consider_auto_block(more[0]) is None
    # it runs out: swept, and its guard gone (Redis expires it with the block)
    screening.clock.now = first.expires_at or 0
    assert await service.sweep_expired() == 1
    await redis_raw.delete(store.keys.autoblock_guard(CALLER))
    again = [flag_by(10, "PJSIP/agent5", at=T0 + timedelta(hours=1, minutes=30))]
    await record(store, again)
    second = await service.consider_auto_block(again[0])
    assert second is not None
    assert second.id != first.id
    assert second.expires_at == screening.clock.now + 24 * 3600
    assert "automatic block #2" in second.reason
    assert await store.auto_blocks_of(CALLER) == 2
    assert screening.sample("screener_auto_blocks_total") == 2


async def test_escalation_stays_at_the_last_duration(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    s = Screening(store, make_settings(auto_block_hours=[2, 5]))
    await redis_raw.hset(store.keys.autoblocks, CALLER, 3)  # as if blocked three times before
    flags = await flags_from(store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"])
    s.clock.now = NOW + 600
    rule = await s.service.consider_auto_block(flags[-1])
    assert rule is not None
    assert rule.expires_at == NOW + 600 + 5 * 3600
    assert "automatic block #4, 5h" in rule.reason
    assert await store.auto_blocks_of(CALLER) == 4


async def test_concurrent_flags_make_one_auto_block(screening: Screening, store: Store) -> None:
    flags = await flags_from(
        store, ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3", "PJSIP/agent4", "PJSIP/agent5"]
    )
    screening.clock.now = NOW + 600
    results = await asyncio.gather(
        *(screening.service.consider_auto_block(f) for f in flags for _ in range(3))
    )
    made = [r for r in results if r is not None]
    assert len(made) == 1
    assert [r.id for r in await store.all_rules()] == [made[0].id]
    assert await store.auto_blocks_of(CALLER) == 1
    assert screening.sample("screener_auto_blocks_total") == 1


async def test_flags_taken_by_the_flag_service_make_an_auto_block(
    store: Store, tmp_path: Path
) -> None:
    """As the daemon wires it: FlagService.on_recorded = ScreeningService.consider_auto_block."""
    settings = load(
        None,
        {"hotlines": {SERVICE_DID: "service"}, "flag": {"spool_dir": str(tmp_path / "spool")}},
    )
    metrics = Metrics(CollectorRegistry())
    asterisk = FakeAsterisk()
    spool = Spool(settings.flag.spool_dir)
    spool.open()
    flag_service = FlagService(settings, asterisk, store, spool, metrics)
    flag_service.on_recorded = ScreeningService(settings, store, metrics).consider_auto_block
    for n in (1, 2, 3):
        inbound_call(asterisk, n=n, agent=f"PJSIP/agent{n}", number="13812341234")
        result = await flag_service.flag_agent(f"PJSIP/agent{n}")
        assert result.outcome == "recorded"
        rules = await store.all_rules()
        assert len(rules) == (1 if n == 3 else 0)
    (rule,) = rules
    assert (rule.value, rule.origin) == (CALLER, Origin.AUTO)
    assert metrics.registry.get_sample_value("screener_auto_blocks_total") == 1
    # the same call flagged again is a duplicate: no second look
    assert (await flag_service.flag_agent("PJSIP/agent3")).outcome == "duplicate"
    assert len(await store.all_rules()) == 1


# --- expiry and gauges ----------------------------------------------------------------------------


async def test_sweep_expired_removes_and_audits(screening: Screening, store: Store) -> None:
    soon = await screening.add(expires="1h")
    later = await screening.add("+8613900000000", expires="2h")
    forever = await screening.add("+86105*")
    service = screening.service
    assert await service.sweep_expired() == 0
    screening.clock.now += 3600
    assert await service.sweep_expired() == 1
    assert await store.get_rule(soon.id) is None
    assert await store.candidate_rules(CALLER, "", "") == []
    (entry, _) = await store.audit_trail(rule_id=soon.id)
    assert (entry.action, entry.by, entry.why) == ("expire", "screener", "expired")
    assert await service.sweep_expired() == 0
    screening.clock.now += 3600
    assert await service.sweep_expired() == 1
    assert [r.id for r in await store.all_rules()] == [forever.id]
    assert later.id not in {r.id for r in await store.all_rules()}


async def test_refresh_gauges(screening: Screening, store: Store) -> None:
    await screening.add()
    removed = await screening.add("+86105*")
    await screening.add("+8613900000000", list="allow")
    await screening.add("+8613900000001", list="allow")
    await screening.service.refresh_gauges()
    gauge = "screener_rules"
    assert screening.sample(gauge, list="block", match="number", origin="admin") == 1
    assert screening.sample(gauge, list="block", match="prefix", origin="admin") == 1
    assert screening.sample(gauge, list="allow", match="number", origin="admin") == 2
    await store.remove_rule(removed.id, by="bob", why="x", now=NOW)
    await screening.service.refresh_gauges()
    labels = {"list": "block", "match": "prefix", "origin": "admin"}
    assert screening.registry.get_sample_value(gauge, labels) is None  # gone, not stale


# --- the FastAGI route ----------------------------------------------------------------------------


def environment(agi_args: Sequence[str], callerid: str = "13812341234") -> bytes:
    lines = [
        "agi_network: yes",
        "agi_network_script: screen",
        "agi_request: agi://127.0.0.1:4573/screen",
        "agi_channel: PJSIP/trunk-00000003",
        "agi_language: en",
        "agi_type: PJSIP",
        "agi_uniqueid: 1732368000.7",
        "agi_version: 22.10.1",
        f"agi_callerid: {callerid}",
        "agi_calleridname: Caller",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 4008001234",
        "agi_rdnis: unknown",
        "agi_context: from-trunk",
        "agi_extension: 4008001234",
        "agi_priority: 3",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140041298503360",
        *(f"agi_arg_{i}: {a}" for i, a in enumerate(agi_args, 1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


class Asterisk:
    """The Asterisk end of one FastAGI connection (as res_agi.c behaves)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def call(cls, port: int, env: bytes) -> Asterisk:
        """Connect, send the environment and answer the server's fence."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        writer.write(env)
        await writer.drain()
        fence = re.fullmatch(rb'GET FULL VARIABLE "([0-9a-f]{32})"\n', await peer.line())
        assert fence is not None
        writer.write(b"200 result=1 (" + fence[1] + b")\n")
        await writer.drain()
        return peer

    async def line(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readline()

    async def reply(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def rest(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def agi(screening: Screening) -> AsyncIterator[AgiServer]:
    service = screening.service
    server = AgiServer(
        {"screen": service.handle_agi},
        "127.0.0.1",
        0,
        read_timeout=1.0,
        on_error=service.on_agi_error,
        on_suspicious=service.on_suspicious,
    )
    await server.start()
    yield server
    await server.close(drain_timeout=1.0)
    assert server.active_sessions == 0


async def agi_screen(server: AgiServer, agi_args: Sequence[str], callerid: str = "x") -> bytes:
    """One screening call through the server; returns the SCREENER_SCREEN value it set."""
    asterisk = await Asterisk.call(server.port, environment(agi_args, callerid))
    try:
        line = await asterisk.line()
        m = re.fullmatch(rb'SET VARIABLE "' + RESULT_VARIABLE.encode() + rb'" "([^"]*)"\n', line)
        assert m is not None, line
        await asterisk.reply(b"200 result=1\n")
        assert await asterisk.rest() == b""  # nothing more: the dialplan goes on
    finally:
        await asterisk.close()
    return m[1]


async def test_handle_agi_sets_the_verdict(screening: Screening, agi: AgiServer) -> None:
    rule = await screening.add(treatment="busy")
    value = await agi_screen(agi, [b64(CALLER), SERVICE_DID, "allowed_not_screened"])
    assert value == f"block/busy/-/{rule.id}".encode()
    assert await agi_screen(agi, [b64("+8613900000000"), SALES_DID, "allowed"]) == b"allow/-/-/-"
    labels = {"verdict": "block", "reason": "number", "treatment": "busy", "hotline": "service"}
    assert screening.sample("screener_screens_total", **labels) == 1
    assert screening.sample("screener_agi_sessions_total", kind="handler") == 0


async def test_handle_agi_uses_the_argument_not_the_environment(
    screening: Screening, agi: AgiServer
) -> None:
    rule = await screening.add()
    # agi_callerid says someone else; the base64 argument is what the caller's carrier sent
    value = await agi_screen(agi, [b64(CALLER), SERVICE_DID, "allowed"], callerid="+15550000")
    assert value == f"block/analysis/-/{rule.id}".encode()


async def test_handle_agi_with_a_hostile_caller_id(screening: Screening, agi: AgiServer) -> None:
    rule = await screening.add()
    hostile = base64.b64encode(b"+8613812341234\r\nagi_arg_1: x").decode()
    value = await agi_screen(agi, [hostile, SERVICE_DID, "allowed"])
    assert value == f"block/analysis/-/{rule.id}".encode()
    assert screening.sample("screener_attacks_total", kind="cid_injection") == 1


async def test_handle_agi_counts_a_forged_environment(screening: Screening, agi: AgiServer) -> None:
    # a caller ID holding CR LF, which Asterisk writes unescaped into the environment
    value = await agi_screen(
        agi, [b64(CALLER), SERVICE_DID, "allowed"], callerid="123\r\nagi_arg_1: Zm9yZ2Vk"
    )
    assert value == b"allow/-/-/-"
    assert screening.sample("screener_attacks_total", kind="agi_environment") == 1


async def test_handle_agi_fails_open_when_redis_is_down(dead_redis: RedisServer) -> None:
    s = Screening(Store.from_url(dead_redis.url, timeout=0.3), make_settings(budget_ms=100))
    server = AgiServer({"screen": s.service.handle_agi}, "127.0.0.1", 0, read_timeout=1.0)
    await server.start()
    try:
        await s.add()
        dead_redis.stop()
        assert await agi_screen(server, [b64(CALLER), SERVICE_DID, "allowed"]) == b"allow/-/-/-"
        assert s.sample("screener_screen_failopen_total", reason="redis") == 1
    finally:
        await server.close(drain_timeout=1.0)
        await s.store.aclose()


async def test_agi_errors_are_counted(screening: Screening, agi: AgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    try:
        writer.write(b"\x00garbage that is not an AGI environment\n" * 4 + b"\n")
        await writer.drain()
        async with asyncio.timeout(WAIT):
            await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    async with asyncio.timeout(WAIT):
        while agi.active_sessions:
            await asyncio.sleep(0.005)
    assert screening.sample("screener_agi_sessions_total", kind="remote") == 1
    assert screening.sample("screener_screen_seconds_count") == 0  # nothing was screened


DIALPLAN = Path(__file__).resolve().parent.parent / "deploy/asterisk/extensions_screener.conf"


def test_the_shipped_dialplan_reads_what_screening_writes() -> None:
    text = DIALPLAN.read_text(encoding="utf-8")
    for n, part in enumerate(("VERDICT", "TREATMENT", "DIGIT", "RULE"), 1):
        assert f"Set(SCREENER_{part}=${{CUT({RESULT_VARIABLE},/,{n})}})" in text
    for verdict in Verdict:
        if verdict is not Verdict.ALLOW:
            assert f'"${{SCREENER_VERDICT}}" = "{verdict}"' in text
    treatments = text.split("[screener-treatment]")[1].split("\n[")[0]
    extensions = set(re.findall(r"^exten => ([a-z]+),1,", treatments, re.MULTILINE))
    assert extensions == {str(t) for t in Treatment}
