"""Tests for screener.service: verifying flag claims, moving callers, recording flags.

Asterisk is an in-memory double (tests/fakes.py); Redis is the real one (``store`` fixture) except
where a failing store is the point; the spool is real, in ``tmp_path``; metrics are real, on a
fresh registry per test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from screener.config import Settings, load
from screener.errors import AmiError
from screener.metrics import Metrics
from screener.model import (
    AmiConnected,
    DtmfReceived,
    FlagOutcome,
    FlagRequested,
    FlagSource,
    Presentation,
)
from screener.service import FlagResult, FlagService, agent_interface, decode_b64, printable
from screener.spool import Spool
from screener.store import Store
from tests.fakes import Call, FakeAsterisk, FlakyStore, Redirect, b64, inbound_call

HOTLINES = {"4008001234": "service", "4008005678": "complaints"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


def make_settings(tmp_path: Path, **flag: Any) -> Settings:
    return load(
        None,
        {
            "hotlines": HOTLINES,
            "flag": {"spool_dir": str(tmp_path / "spool"), **flag},
            "numbers": {"default_region": "CN", "timezone": "Asia/Shanghai"},
        },
    )


class Harness:
    """A FlagService wired to doubles and real parts, plus ways to look at what it did."""

    def __init__(self, settings: Settings, store: Any) -> None:
        self.asterisk = FakeAsterisk()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.spool = Spool(settings.flag.spool_dir)
        self.spool.open()
        self.store = store
        self.service = FlagService(settings, self.asterisk, store, self.spool, self.metrics)

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def requests(self, outcome: str) -> float:
        return self.sample("screener_flag_requests_total", outcome=outcome)

    def attacks(self, kind: str) -> float:
        return self.sample("screener_attacks_total", kind=kind)

    def call(self, **kwargs: Any) -> Call:
        return inbound_call(self.asterisk, **kwargs)

    async def press(self, call: Call, token: str | None = None) -> FlagResult:
        event = FlagRequested(call.agent.name, token or call.token, time.monotonic())
        return await self.service.on_flag_requested(event)


@pytest.fixture
def h(tmp_path: Path, store: Store) -> Harness:
    """Real Redis."""
    return Harness(make_settings(tmp_path), store)


@pytest.fixture
def hm(tmp_path: Path) -> Harness:
    """An in-memory store that can fail."""
    return Harness(make_settings(tmp_path), FlakyStore())


def dtmf_harness(tmp_path: Path, store: Any, **flag: Any) -> Harness:
    options = {"detect_dtmf": True, "dtmf_channels": ["PJSIP/agent*"], **flag}
    return Harness(make_settings(tmp_path, **options), store)


# --- the genuine feature-key flag -------------------------------------------------------------


async def test_genuine_feature_flag_is_recorded(h: Harness, store: Store) -> None:
    call = h.call()
    before = datetime.now().astimezone()
    result = await h.press(call)

    assert result.outcome is FlagOutcome.RECORDED
    assert h.asterisk.redirects == [
        Redirect("PJSIP/trunk-00000001", "screener-analysis", call.agent.name, "screener-wrapup")
    ]
    assert call.caller.context == "screener-analysis"
    assert call.agent.context == "screener-wrapup"

    flag = result.flag
    assert flag is not None
    assert flag.flag_id == flag.uniqueid == flag.linkedid == "1700000000.1"
    assert flag.caller.raw == "13812341234"
    assert flag.caller.raw_name == "Caller Name"
    assert flag.caller.info.e164 == flag.caller.key == "+8613812341234"
    assert flag.caller.masked == "+86138****1234"
    assert flag.caller.presentation is Presentation.ALLOWED
    assert flag.called == "4008001234"
    assert flag.hotline == "service"
    assert flag.queue == "hotline"
    assert flag.agent == "PJSIP/agent1"
    assert flag.agent_channel == "PJSIP/agent1-00000002"
    assert flag.caller_channel == "PJSIP/trunk-00000001"
    assert flag.source is FlagSource.FEATURE
    assert flag.tz == "Asia/Shanghai"
    assert flag.at.utcoffset() == timedelta(hours=8)
    assert before - timedelta(seconds=5) <= flag.at <= datetime.now().astimezone()
    assert (flag.hour, flag.weekday) == (flag.at.hour, flag.at.isoweekday())

    assert await store.get_flag("1700000000.1") == flag
    assert len(h.spool) == 0

    assert h.requests("recorded") == 1
    labels = {
        "hotline": "service",
        "queue": "hotline",
        "presentation": "allowed",
        "source": "feature",
        "kind": "mobile",
        "region": "CN",
    }
    assert h.sample("screener_flags_total", **labels) == 1
    assert h.sample("screener_flag_redirect_seconds_count") == 1
    assert h.sample("screener_redis_up") == 1
    assert h.sample("screener_attacks_total", kind="forged_flag") == 0


async def test_unknown_did_is_hotline_other(h: Harness) -> None:
    result = await h.press(h.call(did="9999"))
    assert result.flag is not None
    assert (result.flag.called, result.flag.hotline) == ("9999", "other")


async def test_withheld_caller(h: Harness) -> None:
    result = await h.press(h.call(number="anonymous", pres="prohib"))
    assert result.outcome is FlagOutcome.RECORDED
    assert result.flag is not None
    assert result.flag.caller.presentation is Presentation.WITHHELD
    assert result.flag.caller.key == "anonymous"
    assert (
        h.sample(
            "screener_flags_total",
            hotline="service",
            queue="hotline",
            presentation="withheld",
            source="feature",
            kind="anonymous",
            region="unknown",
        )
        == 1
    )


async def test_handle_dispatches_events(h: Harness) -> None:
    call = h.call()
    result = await h.service.handle(FlagRequested(call.agent.name, call.token, time.monotonic()))
    assert result is not None
    assert result.outcome is FlagOutcome.RECORDED
    assert await h.service.handle(AmiConnected()) is None


# --- forged or stale requests -----------------------------------------------------------------


async def test_token_mismatch_is_rejected(h: Harness) -> None:
    call = h.call()
    result = await h.press(call, token="0" * 40)
    assert result.outcome is FlagOutcome.REJECTED
    assert "token" in result.reason
    assert_rejected(h, "forged_flag")


async def test_missing_token_on_the_channel_is_rejected(h: Harness) -> None:
    call = h.call()
    del call.agent.vars["SCREENER_FLAG_TOKEN"]  # the Gosub never ran on this channel
    result = await h.press(call, token="ab" * 20)
    assert result.outcome is FlagOutcome.REJECTED
    assert_rejected(h, "forged_flag")


async def test_a_token_from_another_agent_is_rejected(h: Harness) -> None:
    one = h.call(n=1, agent="PJSIP/agent1")
    two = h.call(n=2, agent="PJSIP/agent2")
    result = await h.press(one, token=two.token)
    assert result.outcome is FlagOutcome.REJECTED
    assert_rejected(h, "forged_flag")


async def test_agent_channel_that_does_not_exist_is_rejected(h: Harness) -> None:
    event = FlagRequested("PJSIP/agent9-0000abcd", "ab" * 20, time.monotonic())
    result = await h.service.on_flag_requested(event)
    assert result.outcome is FlagOutcome.REJECTED
    assert "does not exist" in result.reason
    assert_rejected(h, "forged_flag")


@pytest.mark.parametrize(
    ("channel", "token"),
    [
        ("PJSIP/agent1-00000002", "not-a-token"),
        ("PJSIP/agent1-00000002", "AB" * 20),  # upper-case hex is not what the Gosub writes
        ("PJSIP/agent1-00000002", "ab" * 21),
        ("PJSIP/agent1-00000002", ""),
        ("PJSIP/agent1-00000002\r\nAction: Originate", "ab" * 20),
        ("", "ab" * 20),
        ("-leading-dash", "ab" * 20),
        ("x" * 200, "ab" * 20),
    ],
)
async def test_malformed_flag_event_is_rejected_without_asking_asterisk(
    h: Harness, channel: str, token: str
) -> None:
    h.call()
    result = await h.service.on_flag_requested(FlagRequested(channel, token, time.monotonic()))
    assert result.outcome is FlagOutcome.REJECTED
    assert result.reason == "malformed flag event"
    assert h.asterisk.getvars == []
    assert_rejected(h, "forged_flag")


def assert_rejected(h: Harness, kind: str) -> None:
    assert h.asterisk.redirects == []
    assert len(h.spool) == 0
    assert h.attacks(kind) == 1
    assert h.requests("rejected") == 1
    assert h.requests("recorded") == 0


# --- calls that are not hotline calls ---------------------------------------------------------


async def test_call_placed_by_the_agent_is_not_inbound(h: Harness) -> None:
    call = h.call()
    call.agent.linkedid = call.agent.uniqueid
    result = await h.press(call)
    assert result.outcome is FlagOutcome.NOT_INBOUND
    assert h.asterisk.redirects == []
    assert h.requests("not_inbound") == 1
    assert h.attacks("forged_flag") == 0


async def test_caller_without_the_inbound_mark_is_not_inbound(h: Harness) -> None:
    result = await h.press(h.call(marked=False))
    assert result.outcome is FlagOutcome.NOT_INBOUND
    assert result.reason == "not a hotline call"
    assert h.asterisk.redirects == []
    assert len(h.spool) == 0


async def test_without_the_marker_requirement_callerid_is_read(tmp_path: Path) -> None:
    h = Harness(make_settings(tmp_path, require_inbound_marker=False), FlakyStore())
    call = h.call(marked=False)
    call.caller.vars.update(
        {
            "CALLERID(num)": "13812341234",
            "CALLERID(name)": "Asterisk Name",
            "CALLERID(pres)": "allowed_not_screened",
            "CALLERID(dnid)": "4008005678",
        }
    )
    result = await h.press(call)
    assert result.outcome is FlagOutcome.RECORDED
    assert result.flag is not None
    assert result.flag.caller.raw == "13812341234"
    assert result.flag.caller.raw_name == "Asterisk Name"
    assert result.flag.hotline == "complaints"


async def test_unusable_ids_from_asterisk_fail(hm: Harness) -> None:
    call = hm.call()
    call.agent.linkedid = ""  # e.g. a channel technology without linkedid
    result = await hm.press(call)
    assert result.outcome is FlagOutcome.FAILED
    assert hm.asterisk.redirects == []
    assert hm.attacks("forged_flag") == 0


# --- the caller hangs up ----------------------------------------------------------------------


async def test_caller_gone_before_the_move(h: Harness) -> None:
    call = h.call()
    h.asterisk.hangup(call.caller.name)
    result = await h.press(call)
    assert result.outcome is FlagOutcome.CALLER_GONE
    assert h.asterisk.redirects == []
    assert len(h.spool) == 0
    assert h.requests("caller_gone") == 1


async def test_caller_gone_during_the_redirect(h: Harness, store: Store) -> None:
    call = h.call()
    h.asterisk.hang_up_on_redirect.add(call.caller.name)
    result = await h.press(call)
    assert result.outcome is FlagOutcome.CALLER_GONE
    assert len(h.spool) == 0
    assert await store.get_flag(call.caller.uniqueid) is None
    assert h.requests("recorded") == 0


async def test_asterisk_failure_during_the_redirect_fails_and_unspools(hm: Harness) -> None:
    call = hm.call()
    original = hm.asterisk.redirect

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise AmiError("Redirect: timed out after 2.0s")

    hm.asterisk.redirect = refuse  # type: ignore[method-assign]
    result = await hm.press(call)
    assert result.outcome is FlagOutcome.FAILED
    assert "timed out" in result.reason
    assert len(hm.spool) == 0
    assert hm.store.calls == 0
    hm.asterisk.redirect = original  # type: ignore[method-assign]
    # a failed attempt is not a flag: pressing again works
    assert (await hm.press(call)).outcome is FlagOutcome.RECORDED


async def test_asterisk_unavailable_fails(hm: Harness) -> None:
    call = hm.call()
    hm.asterisk.fail_with = AmiError("Getvar: not connected to Asterisk")
    result = await hm.press(call)
    assert result.outcome is FlagOutcome.FAILED
    assert hm.requests("failed") == 1
    assert hm.attacks("forged_flag") == 0


# --- duplicates -------------------------------------------------------------------------------


async def test_second_press_is_a_duplicate(h: Harness) -> None:
    call = h.call()
    assert (await h.press(call)).outcome is FlagOutcome.RECORDED
    second = await h.press(call)
    assert second.outcome is FlagOutcome.DUPLICATE
    assert len(h.asterisk.redirects) == 1
    assert h.requests("duplicate") == 1
    assert h.requests("recorded") == 1


async def test_two_simultaneous_presses_move_the_caller_once(hm: Harness) -> None:
    call = hm.call()
    results = await asyncio.gather(hm.press(call), hm.press(call))
    assert sorted(r.outcome for r in results) == [FlagOutcome.DUPLICATE, FlagOutcome.RECORDED]
    assert len(hm.asterisk.redirects) == 1
    assert len(hm.store.flags) == 1


async def test_caller_already_in_analysis_is_a_duplicate(h: Harness) -> None:
    call = h.call()
    call.caller.vars["SCREENER_ANALYSED"] = "1"
    result = await h.press(call)
    assert result.outcome is FlagOutcome.DUPLICATE
    assert h.asterisk.redirects == []
    assert len(h.spool) == 0


async def test_already_spooled_flag_is_a_duplicate(tmp_path: Path, hm: Harness) -> None:
    call = hm.call()
    first = await hm.press(call)
    assert first.flag is not None
    # a restarted daemon (empty memory) sees the same call while the first flag is spooled
    again = Harness(make_settings(tmp_path), FlakyStore())
    again.asterisk = hm.asterisk
    again.service.asterisk = hm.asterisk
    again.spool.put(first.flag)
    result = await again.press(call)
    assert result.outcome is FlagOutcome.DUPLICATE
    assert len(hm.asterisk.redirects) == 1


# --- Redis down: the spool keeps the flag -----------------------------------------------------


async def test_redis_down_records_and_keeps_the_flag_spooled(hm: Harness) -> None:
    store: FlakyStore = hm.store
    store.down = True
    call = hm.call()
    result = await hm.press(call)
    assert result.outcome is FlagOutcome.RECORDED
    assert len(hm.asterisk.redirects) == 1  # the caller is moved regardless
    assert result.flag is not None
    assert hm.spool.pending() == [result.flag]
    assert hm.sample("screener_redis_up") == 0
    assert hm.sample("screener_errors_total", component="redis") == 1
    assert hm.sample("screener_spool_pending") == 1

    assert await hm.service.flush_spool() == 0  # still down: nothing lost
    assert len(hm.spool) == 1

    store.down = False
    assert await hm.service.flush_spool() == 1
    assert store.flags == {result.flag.flag_id: result.flag}
    assert len(hm.spool) == 0
    assert hm.sample("screener_spool_pending") == 0
    assert hm.sample("screener_redis_up") == 1
    assert await hm.service.flush_spool() == 0


async def test_flush_spool_into_real_redis_is_idempotent(h: Harness, store: Store) -> None:
    result = await h.press(h.call())
    assert result.flag is not None
    h.spool.put(result.flag)  # killed between the Redis write and the unlink
    assert await h.service.flush_spool() == 1
    assert len(h.spool) == 0
    stats = await store.caller_stats("+8613812341234")
    assert stats is not None
    assert stats.count == 1


async def test_flush_spool_stops_at_the_first_failure(hm: Harness) -> None:
    hm.store.down = True
    for n in (1, 2, 3):
        await hm.press(hm.call(n=n, agent=f"PJSIP/agent{n}"))
    assert len(hm.spool) == 3
    calls = hm.store.calls
    assert await hm.service.flush_spool() == 0
    assert hm.store.calls == calls + 1
    hm.store.down = False
    assert await hm.service.flush_spool() == 3
    assert len(hm.store.flags) == 3


# --- DTMF detection ---------------------------------------------------------------------------


def digit(call: Call, d: str, t: float, uniqueid: str | None = None) -> DtmfReceived:
    return DtmfReceived(call.agent.name, uniqueid or call.agent.uniqueid, d, t)


async def test_dtmf_sequence_is_recorded(tmp_path: Path, store: Store) -> None:
    h = dtmf_harness(tmp_path, store)
    call = h.call()
    t = time.monotonic()
    assert await h.service.on_dtmf(digit(call, "*", t)) is None
    result = await h.service.handle(digit(call, "9", t + 0.3))
    assert result is not None
    assert result.outcome is FlagOutcome.RECORDED
    assert result.flag is not None
    assert result.flag.source is FlagSource.DTMF
    assert len(h.asterisk.redirects) == 1
    assert (
        h.sample(
            "screener_flags_total",
            hotline="service",
            queue="hotline",
            presentation="allowed",
            source="dtmf",
            kind="mobile",
            region="CN",
        )
        == 1
    )
    assert await store.get_flag(call.caller.uniqueid) == result.flag


async def test_forged_dtmf_with_a_wrong_uniqueid_is_rejected(tmp_path: Path) -> None:
    h = dtmf_harness(tmp_path, FlakyStore())
    call = h.call()
    t = time.monotonic()
    forged = "1699999999.42"
    assert await h.service.on_dtmf(digit(call, "*", t, forged)) is None
    result = await h.service.on_dtmf(digit(call, "9", t + 0.1, forged))
    assert result is not None
    assert result.outcome is FlagOutcome.REJECTED
    assert "uniqueid" in result.reason
    assert_rejected(h, "forged_dtmf")
    assert h.attacks("forged_flag") == 0


async def test_forged_and_genuine_digits_never_combine(tmp_path: Path) -> None:
    h = dtmf_harness(tmp_path, FlakyStore())
    call = h.call()
    t = time.monotonic()
    assert await h.service.on_dtmf(digit(call, "*", t, "1699999999.42")) is None
    assert await h.service.on_dtmf(digit(call, "9", t + 0.1)) is None
    assert h.asterisk.redirects == []


async def test_malformed_dtmf_event_is_rejected(tmp_path: Path) -> None:
    h = dtmf_harness(tmp_path, FlakyStore())
    h.call()
    hostile = "PJSIP/agent1-00000002\r\nAction: Originate"
    t = time.monotonic()
    assert await h.service.on_dtmf(DtmfReceived(hostile, "1700000000.2", "*", t)) is None
    result = await h.service.on_dtmf(DtmfReceived(hostile, "1700000000.2", "9", t + 0.1))
    assert result is not None
    assert result.outcome is FlagOutcome.REJECTED
    assert result.reason == "malformed dtmf event"
    assert_rejected(h, "forged_dtmf")


async def test_digits_from_other_channels_are_ignored(tmp_path: Path) -> None:
    h = dtmf_harness(tmp_path, FlakyStore())
    call = h.call()
    t = time.monotonic()
    # the caller dials *9 on the trunk channel: not an agent
    for n, d in enumerate("*9"):
        ev = DtmfReceived(call.caller.name, call.caller.uniqueid, d, t + n * 0.1)
        assert await h.service.on_dtmf(ev) is None
    assert h.asterisk.getvars == []
    assert h.asterisk.redirects == []
    assert h.requests("rejected") == 0


async def test_dtmf_is_ignored_when_detection_is_off(hm: Harness) -> None:
    call = hm.call()
    t = time.monotonic()
    assert await hm.service.on_dtmf(digit(call, "*", t)) is None
    assert await hm.service.on_dtmf(digit(call, "9", t + 0.1)) is None
    assert hm.asterisk.redirects == []


async def test_dtmf_too_slow_is_not_a_flag(tmp_path: Path) -> None:
    h = dtmf_harness(tmp_path, FlakyStore(), dtmf_timeout=0.5)
    call = h.call()
    t = time.monotonic()
    assert await h.service.on_dtmf(digit(call, "*", t)) is None
    assert await h.service.on_dtmf(digit(call, "9", t + 0.6)) is None
    assert h.asterisk.redirects == []


# --- the agent-desktop button (flag_agent) ----------------------------------------------------


async def test_flag_agent_by_interface_picks_the_live_channel(hm: Harness) -> None:
    hm.call(n=1, agent="PJSIP/agent2")
    mine = hm.call(n=2, agent="PJSIP/agent1", number="13900000000")
    hm.call(n=3, agent="PJSIP/agent3")
    result = await hm.service.flag_agent("PJSIP/agent1")
    assert result.outcome is FlagOutcome.RECORDED
    assert result.flag is not None
    assert result.flag.source is FlagSource.API
    assert result.flag.agent_channel == mine.agent.name
    assert result.flag.caller.key == "+8613900000000"
    assert hm.asterisk.redirects == [
        Redirect(mine.caller.name, "screener-analysis", mine.agent.name, "screener-wrapup")
    ]


async def test_flag_agent_by_channel_name(hm: Harness) -> None:
    call = hm.call()
    result = await hm.service.flag_agent(call.agent.name)
    assert result.outcome is FlagOutcome.RECORDED


async def test_flag_agent_without_a_call(hm: Harness) -> None:
    hm.call(agent="PJSIP/agent2")
    result = await hm.service.flag_agent("PJSIP/agent1")
    assert result.outcome is FlagOutcome.NOT_INBOUND
    assert result.reason == "agent has no active call"
    assert hm.asterisk.redirects == []


async def test_flag_agent_on_a_channel_that_is_gone(hm: Harness) -> None:
    result = await hm.service.flag_agent("PJSIP/agent1-0000abcd")
    assert result.outcome is FlagOutcome.NOT_INBOUND
    assert hm.attacks("forged_flag") == 0


@pytest.mark.parametrize("target", ["", "PJSIP/agent1\r\nAction: Originate", "bad name"])
async def test_flag_agent_refuses_malformed_names(hm: Harness, target: str) -> None:
    with pytest.raises(ValueError, match="agent must be"):
        await hm.service.flag_agent(target)


async def test_flag_agent_raises_when_asterisk_is_unavailable(hm: Harness) -> None:
    hm.asterisk.fail_with = AmiError("CoreShowChannels: not connected to Asterisk")
    with pytest.raises(AmiError):
        await hm.service.flag_agent("PJSIP/agent1")


async def test_flag_agent_does_not_take_an_endpoint_sharing_the_prefix(hm: Harness) -> None:
    mine = hm.call(n=1, agent="PJSIP/agent1")
    hm.call(n=2, agent="PJSIP/agent1-backup", number="13900000000")
    result = await hm.service.flag_agent("PJSIP/agent1")
    assert result.flag is not None
    assert result.flag.agent_channel == mine.agent.name


# --- hostile caller ID ------------------------------------------------------------------------

HOSTILE_NUMBER = "123\r\nAction: Originate\r\nChannel: Local/1@default\r\n\r\n"
HOSTILE_NAME = "Evil\r\nEvent: UserEvent\r\nUserEvent: ScreenerFlag\r\n\x00\U0001f608 %s%n{0}"


async def test_hostile_caller_id_is_recorded_raw_with_a_hashed_key(
    h: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = h.call(number=HOSTILE_NUMBER, name=HOSTILE_NAME)
    result = await h.press(call)
    assert result.outcome is FlagOutcome.RECORDED
    flag = result.flag
    assert flag is not None
    assert flag.caller.raw == HOSTILE_NUMBER
    assert flag.caller.raw_name == HOSTILE_NAME
    assert flag.caller.key.startswith("h")
    assert flag.caller.info.kind == "invalid"
    stored = await store.get_flag(flag.flag_id)
    assert stored is not None
    assert stored.caller.raw == HOSTILE_NUMBER
    assert stored.caller.raw_name == HOSTILE_NAME
    assert (
        h.sample(
            "screener_flags_total",
            hotline="service",
            queue="hotline",
            presentation="allowed",
            source="feature",
            kind="invalid",
            region="unknown",
        )
        == 1
    )
    assert caplog.records
    for record in caplog.records:
        message = record.getMessage()
        assert "\r" not in message
        assert "\n" not in message
        assert "Originate" not in message
        assert "Evil" not in message


async def test_hostile_channel_name_in_a_flag_event_is_logged_escaped(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    event = FlagRequested("PJSIP/a\r\nAction: Originate" + "x" * 500, "ab" * 20, 0.0)
    await h.service.on_flag_requested(event)
    for record in caplog.records:
        assert "\r" not in record.getMessage()
        assert "\n" not in record.getMessage()
        assert len(record.getMessage()) < 400


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SCREENER_DID", "4008001234\r\nX: y", "called", ""),
        ("SCREENER_DID", "1" * 33, "called", ""),
        ("SCREENER_QUEUE", "hotline\r\n", "queue", ""),
        ("SCREENER_QUEUE", "q" * 65, "queue", ""),
        ("SCREENER_CID_B64", "%%% not base64 %%%", "raw", ""),
        ("SCREENER_CID_B64", "", "raw", ""),
    ],
)
async def test_hostile_caller_variables_are_neutralised(
    hm: Harness, variable: str, value: str, field: str, expected: str
) -> None:
    call = hm.call()
    call.caller.vars[variable] = value
    result = await hm.press(call)
    assert result.outcome is FlagOutcome.RECORDED
    flag = result.flag
    assert flag is not None
    actual = flag.caller.raw if field == "raw" else getattr(flag, field)
    assert actual == expected
    if field == "called":
        assert flag.hotline == "other"
    if field == "raw":
        assert flag.caller.key == "anonymous"
        assert flag.caller.presentation is Presentation.UNAVAILABLE


async def test_a_hostile_caller_channel_name_is_not_moved(hm: Harness) -> None:
    call = hm.call()
    hm.asterisk.live["PJSIP/trunk\r\nAction: Originate"] = call.caller
    del hm.asterisk.live[call.caller.name]
    call.caller.name = "PJSIP/trunk\r\nAction: Originate"
    result = await hm.press(call)
    assert result.outcome is FlagOutcome.NOT_INBOUND
    assert hm.asterisk.redirects == []


# --- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "interface"),
    [
        ("PJSIP/agent1-0000001a", "PJSIP/agent1"),
        ("PJSIP/agent1", "PJSIP/agent1"),
        ("Local/agent1@agents-0000001a;1", "Local/agent1@agents"),
        ("Local/agent1@agents-0000001a;2", "Local/agent1@agents"),
        ("PJSIP/agent-1-0000001a", "PJSIP/agent-1"),
        ("PJSIP/agent1-1a", "PJSIP/agent1-1a"),
    ],
)
def test_agent_interface(channel: str, interface: str) -> None:
    assert agent_interface(channel) == interface


def test_decode_b64() -> None:
    assert decode_b64(b64("13812341234")) == "13812341234"
    assert decode_b64(" " + b64("x") + "\n") == "x"
    assert decode_b64(b64("\r\n")) == "\r\n"
    assert decode_b64("") == ""
    assert decode_b64("not base64!") == ""
    assert decode_b64("QUJ") == ""  # bad padding
    assert decode_b64("/w==") == "\ufffd"  # invalid UTF-8 is replaced, not raised
    assert decode_b64(b64("9" * 5000)) == "9" * 1024


def test_printable() -> None:
    assert printable("PJSIP/agent1-00000002") == "PJSIP/agent1-00000002"
    assert printable("a\r\nb") == "a\\r\\nb"
    assert printable("x" * 100, 10) == "x" * 10 + "..."
    assert printable("\u202e\x00") == "\\u202e\\x00"


async def test_the_memory_of_flagged_calls_is_bounded(
    hm: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("screener.service._RECENT", 2)
    calls = [hm.call(n=n, agent=f"PJSIP/agent{n}") for n in (1, 2, 3)]
    for call in calls:
        assert (await hm.press(call)).outcome is FlagOutcome.RECORDED
    assert list(hm.service._recent) == [calls[1].caller.uniqueid, calls[2].caller.uniqueid]
    assert (await hm.press(calls[2])).outcome is FlagOutcome.DUPLICATE
