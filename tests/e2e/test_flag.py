"""The flag key end to end: real SIP calls (SIPp) through a real Asterisk 22, the real screener
daemon on AMI, a real redis-server. What each test checks is what a user would see: where the
caller went (AMI events), what the agent heard, what Redis holds, what /metrics says."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from screener.model import FlagSource, Presentation
from screener.store import Store
from tests.conftest import DaemonFactory
from tests.lab.ami import AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import (
    DID_DIRECT,
    DID_INTERNAL,
    DID_LOCAL,
    DID_NO_FEATURE,
    DID_QUEUE,
    DID_SHORT,
)
from tests.lab.flow import answered, expect_analysis, expect_wrapup, wait_flag_stored
from tests.lab.sipp import SippFactory

pytestmark = [pytest.mark.lab, pytest.mark.timeout(90)]

HOTLINES = {"SCREENER_HOTLINES": '{"4008001000": "lab-hotline"}'}


def dialing(prefix: str):
    """A DialBegin towards a channel whose name starts with ``prefix``."""
    return lambda m: m.event == "DialBegin" and (m.get("DestChannel") or "").startswith(prefix)


async def test_flag_key_moves_the_caller_and_records_the_flag(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    daemon = screener(env=HOTLINES)
    ami = ami_observer
    agent = sipp.agent("agent1", dtmf="*9", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_QUEUE, from_user="13812341234", from_name="Prank Caller")
    caller_channel, caller_uid, agent_channel = await answered(ami)
    mark = ami.mark()
    nine = await ami.wait_for(
        where(Event="DTMFEnd", Channel=agent_channel, Digit="9", Direction="Received"), 15
    )
    analysis = await expect_analysis(ami, caller_channel, since=mark)
    await expect_wrapup(ami, agent_channel, since=mark)
    assert await caller.finished(20) == 0, caller.describe()
    assert await agent.finished(20) == 0, agent.describe()
    print(
        "agent DTMF 9 -> caller QueueCallerJoin: "
        f"{(analysis.joined.received_at - nine.received_at) * 1000:.1f} ms"
    )

    # the caller never heard the key: no digit was sent towards the caller's channel
    assert not ami.find(where(Event="DTMFEnd", Channel=caller_channel, Direction="Sent"))

    flag = await wait_flag_stored(store, caller_uid)
    assert flag.caller.raw == "13812341234"
    assert flag.caller.info.e164 == "+8613812341234"
    assert flag.caller.info.kind == "mobile"
    assert flag.caller.raw_name == "Prank Caller"
    assert flag.caller.presentation is Presentation.ALLOWED
    assert flag.called == DID_QUEUE
    assert flag.hotline == "lab-hotline"
    assert flag.queue == "hotline"
    assert flag.agent == "PJSIP/agent1"
    assert flag.agent_channel == agent_channel
    assert flag.caller_channel == caller_channel
    assert flag.uniqueid == flag.linkedid == caller_uid
    assert flag.source is FlagSource.FEATURE
    assert 0 <= flag.hour <= 23 and 1 <= flag.weekday <= 7

    stats = await store.caller_stats("+8613812341234")
    assert stats is not None and stats.count == 1 and stats.agents == 1
    patterns = await store.patterns()
    assert patterns.hours == {flag.hour: 1}
    assert patterns.hotlines == {"lab-hotline": 1}
    labels = {"hotline": "lab-hotline", "source": "feature", "presentation": "allowed"}
    assert daemon.metric("screener_flags_total", labels) == 1
    assert daemon.metric("screener_flag_requests_total", {"outcome": "recorded"}) == 1
    assert daemon.metric("screener_attacks_total") == 0
    assert daemon.metric("screener_flag_redirect_seconds_count") == 1
    assert "+86138****1234" in daemon.logs() and "13812341234" not in daemon.logs()


async def test_local_channel_queue_member(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    """The queue dials Local/agent2@agent-local; the key still works on the real device."""
    screener()
    ami = ami_observer
    agent = sipp.agent("agent2", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_LOCAL, from_user="01012345678")
    joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline-local"), 15)
    caller_channel = joined["Channel"]
    mark = ami.mark()
    analysis = await expect_analysis(ami, caller_channel, since=mark)
    assert analysis.joined["Queue"] == "screener-analysis"
    assert await caller.finished(20) == 0, caller.describe()
    assert await agent.finished(20) == 0, agent.describe()
    flag = await wait_flag_stored(store, joined["Uniqueid"])
    assert flag.agent == "PJSIP/agent2"
    assert flag.caller.info.e164 == "+861012345678"
    assert flag.queue == "hotline-local"


async def test_after_a_blind_transfer(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    """agent1 blind-transfers the caller (SIP REFER) to 2003; agent3 flags."""
    screener()
    ami = ami_observer
    sipp.agent_refer("agent1", "2003", refer_delay_ms=1000)
    agent3 = sipp.agent("agent3", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_QUEUE, from_user="13912345678")
    caller_channel, caller_uid, _ = await answered(ami)
    mark = ami.mark()
    await expect_analysis(ami, caller_channel, since=mark)
    assert await caller.finished(25) == 0, caller.describe()
    assert await agent3.finished(25) == 0, agent3.describe()
    flag = await wait_flag_stored(store, caller_uid)
    assert flag.agent == "PJSIP/agent3"
    assert flag.caller.info.e164 == "+8613912345678"


async def test_withheld_number_is_recorded_as_withheld(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    screener()
    sipp.agent("agent3", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_DIRECT, from_user="13700001111", withheld=True)
    joined = await ami_observer.wait_for(dialing("PJSIP/agent3-"), 15)
    assert await caller.finished(25) == 0, caller.describe()
    flag = await wait_flag_stored(store, joined["Uniqueid"])
    assert flag.caller.presentation is Presentation.WITHHELD
    assert flag.caller.info.e164 == "+8613700001111"  # trusted P-Asserted-Identity
    assert flag.called == DID_DIRECT


async def test_press_on_an_internal_call_moves_nobody(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
) -> None:
    daemon = screener()
    ami = ami_observer
    agent = sipp.agent("agent3", dtmf_delay_ms=1000)
    caller = sipp.caller(DID_INTERNAL, from_user="2001", hangup_after_ms=4000)
    daemon.wait_metric("screener_flag_requests_total", {"outcome": "not_inbound"})
    assert await caller.finished(20) == 0, caller.describe()
    agent.kill()
    assert not ami.find(where(Event="QueueCallerJoin", Queue="screener-analysis"))
    assert await store.recent_flags() == []


async def test_second_press_and_desktop_button_record_one_flag(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    """The key pressed twice in a row, then the desktop button for the same call: one flag."""
    daemon = screener()
    ami = ami_observer
    sipp.agent("agent1", dtmf="*9*9", dtmf_delay_ms=1500, gap_ms=100)
    caller = sipp.caller(DID_QUEUE, from_user="13812340000")
    _, caller_uid, _ = await answered(ami)
    await ami.wait_for(where(Event="QueueCallerJoin", Queue="screener-analysis"), 15)
    _, body = daemon.request("POST", "/api/v1/flags", {"agent": "PJSIP/agent1"})
    assert body["outcome"] in {"duplicate", "not_inbound"}, body
    assert await caller.finished(20) == 0, caller.describe()
    joins = ami.find(where(Event="QueueCallerJoin", Queue="screener-analysis"))
    assert len(joins) == 1
    flags = await store.recent_flags()
    assert [f.flag_id for f in flags] == [caller_uid]
    assert (await store.caller_stats("+8613812340000")).count == 1


async def test_desktop_button_flags_by_agent_interface(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    daemon = screener()
    ami = ami_observer
    sipp.agent_idle("agent1")
    caller = sipp.caller(DID_QUEUE, from_user="13812345555")
    caller_channel, caller_uid, agent_channel = await answered(ami)
    status, body = daemon.request("POST", "/api/v1/flags", {"agent": "PJSIP/agent1"})
    assert status == 201, body
    assert body["flag"]["source"] == "api"
    assert body["flag"]["agent_channel"] == agent_channel
    await expect_analysis(ami, caller_channel)
    assert await caller.finished(20) == 0, caller.describe()
    assert (await store.get_flag(caller_uid)) is not None
    # the same button once the call is over: a clear answer, nothing recorded
    status, body = daemon.request("POST", "/api/v1/flags", {"agent": "PJSIP/agent1"})
    assert status == 409 and body["outcome"] == "not_inbound", body
    status, body = daemon.request("POST", "/api/v1/flags", {"agent": "PJSIP/agent1"}, token="x")
    assert status == 401


async def test_dtmf_detection_mode_without_dialplan_changes(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
) -> None:
    """No flag key on this route: screener sees *9 in DTMFEnd events and verifies them."""
    daemon = screener(
        env={
            "SCREENER_FLAG__DETECT_DTMF": "true",
            "SCREENER_FLAG__DTMF_CHANNELS": '["PJSIP/agent*"]',
        }
    )
    ami = ami_observer
    sipp.agent("agent3", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_NO_FEATURE, from_user="13812346666")
    dial = await ami.wait_for(dialing("PJSIP/agent3-"), 15)
    await expect_analysis(ami, dial["Channel"])
    assert await caller.finished(20) == 0, caller.describe()
    flag = await wait_flag_stored(store, dial["Uniqueid"])
    assert flag.source is FlagSource.DTMF
    assert flag.agent == "PJSIP/agent3"
    assert daemon.metric("screener_attacks_total") == 0


async def test_redis_down_the_flag_is_spooled_then_written(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
    redis_server,
) -> None:
    daemon = screener()
    ami = ami_observer
    sipp.agent("agent1", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_QUEUE, from_user="13812347777")
    caller_channel, caller_uid, _ = await answered(ami)
    redis_server.stop()
    try:
        await expect_analysis(ami, caller_channel)  # the caller is moved all the same
        assert daemon.wait_metric("screener_spool_pending") == 1
        assert list(daemon.spool.glob("*.json"))
    finally:
        redis_server.start()
    assert await caller.finished(20) == 0, caller.describe()
    flag = await wait_flag_stored(store, caller_uid, timeout=15)
    assert flag.caller.info.e164 == "+8613812347777"
    deadline = time.monotonic() + 10
    while list(daemon.spool.glob("*.json")) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not list(daemon.spool.glob("*.json"))
    assert (await store.caller_stats("+8613812347777")).count == 1


async def test_asterisk_restart_then_flags_work_again(
    asterisk: AsteriskLab,
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
) -> None:
    """Asterisk restarted under the daemon: it reconnects and the next flag works."""
    daemon = screener()
    asterisk.restart()
    daemon.wait_metric("screener_ami_reconnects_total", timeout=15)
    daemon.wait_healthy(20)
    ami = AmiObserver(asterisk.ami_port, asterisk.secrets.lab_user, asterisk.secrets.lab_secret)
    await ami.connect()
    try:
        await ami.action(
            {"Action": "Setvar", "Variable": "SCREENER_ANALYSIS_SECONDS", "Value": "2"}
        )
        agent = sipp.agent("agent1", dtmf_delay_ms=1500)
        caller = sipp.caller(DID_QUEUE, from_user="13812348888")
        _, caller_uid, _ = await answered(ami)
        await ami.wait_for(where(Event="QueueCallerJoin", Queue="screener-analysis"), 15)
        assert (await wait_flag_stored(store, caller_uid)).caller.info.e164 == "+8613812348888"
        assert await caller.finished(20) == 0, caller.describe()
        assert await agent.finished(20) == 0, agent.describe()
    finally:
        await ami.close()


HOSTILE = [
    pytest.param(
        "123%0D%0AAction%3A%20Originate%0D%0AChannel%3A%20Local%2F1%40x", id="crlf-action"
    ),
    pytest.param("%7Bscreener%7D%2A%3F%5B%5D", id="redis-key-chars"),
    pytest.param("%25s%25n%25x%7B0%7D", id="format-string"),
    pytest.param("9" * 1000, id="1000-digits"),
    pytest.param("%FF%FE%C3%28", id="invalid-utf8"),
]


@pytest.mark.parametrize("from_user", HOSTILE)
async def test_hostile_caller_id_is_recorded_safely(
    asterisk: AsteriskLab,
    ami_observer: AmiObserver,
    sipp: SippFactory,
    fast_analysis: int,
    screener: DaemonFactory,
    store: Store,
    redis_raw,
    from_user: str,
) -> None:
    daemon = screener()
    ami = ami_observer
    channels_before = asterisk.channel_count()
    sipp.agent("agent1", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_QUEUE, from_user=from_user, from_name="%s%n\\r\\n" + "N" * 4000)
    caller_channel, caller_uid, _ = await answered(ami)
    raw_b64 = await ami.getvar(caller_channel, "SCREENER_CID_B64")
    raw = base64.b64decode(raw_b64).decode("utf-8", "replace")
    await expect_analysis(ami, caller_channel)
    assert await caller.finished(20) == 0, caller.describe()
    flag = await wait_flag_stored(store, caller_uid)
    assert flag.caller.raw == raw  # kept exactly as Asterisk had it
    # nothing was injected: no Originate, no extra channel, keys stay in the schema
    assert not ami.find(lambda m: (m.get("Channel") or "").startswith("Local/1@x"))
    assert asterisk.channel_count() <= channels_before
    keys = [k async for k in redis_raw.scan_iter("*")]
    assert all(k.startswith("{screener}:") and "\r" not in k and "\n" not in k for k in keys)
    for line in daemon.logs().splitlines():
        assert "Originate" not in line or "flag" not in line
    assert "\r" not in daemon.logs()
    exposition = daemon.request("GET", "/metrics")[1]
    assert "Originate" not in exposition and "screener}" not in exposition
    assert daemon.metric("screener_flag_requests_total", {"outcome": "recorded"}) == 1


# Asterisk writes the caller number unescaped into every event carrying the caller's snapshot;
# a percent-encoded CR LF pair in the SIP From user part ends the genuine event early and starts
# a forged one. Asterisk keeps 79 characters of a number, so the forged event names a channel of
# an agent with a short endpoint name (PJSIP/x-0000000a: 16 characters) and carries no token.
FORGED_FLAG = (
    "%0D%0A%0D%0AEvent%3A%20UserEvent%0D%0AUserEvent%3A%20ScreenerFlag%0D%0AAgentChannel%3A%20"
)
FORGED_DTMF = (
    "%0D%0A%0D%0AEvent%3A%20DTMFEnd%0D%0ADirection%3A%20Received"
    "%0D%0ADigit%3A%20*%0D%0AChannel%3A%20"
)


async def test_forged_flag_and_dtmf_events_move_nobody(
    asterisk: AsteriskLab,
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
) -> None:
    """A PBX that kept a full-privilege, unfiltered AMI user: forged events reach screener.

    The flag key is one digit here (``*``) so that a single forged DTMFEnd completes it and
    reaches verification; with the default ``*9`` a forged sequence cannot even be assembled
    within 79 characters.
    """
    daemon = screener(
        lab_user=True,
        env={
            "SCREENER_FLAG__DETECT_DTMF": "true",
            "SCREENER_FLAG__DTMF_CHANNELS": '["PJSIP/*"]',
            "SCREENER_FLAG__KEY": "*",
        },
    )
    ami = ami_observer
    victim_agent = sipp.agent_idle("x")
    victim = sipp.caller(DID_SHORT, from_user="13800000001")
    answer = await ami.wait_for(
        lambda m: (
            m.event == "DialEnd"
            and m.get("DialStatus") == "ANSWER"
            and (m.get("DestChannel") or "").startswith("PJSIP/x-")
        ),
        15,
    )
    target = answer["DestChannel"]
    assert len(target) == 16, target

    for payload, kind in ((FORGED_FLAG, "forged_flag"), (FORGED_DTMF, "forged_dtmf")):
        sipp.agent_idle("agent3")
        hostile = sipp.caller(DID_DIRECT, from_user=payload + target, hangup_after_ms=1500)
        assert await hostile.finished(20) == 0, hostile.describe()
        daemon.wait_metric("screener_attacks_total", {"kind": kind}, timeout=10)

    # nobody moved: the victim's call is still up, nothing recorded
    assert await ami.getvar(target, "CHANNEL(name)") == target
    assert not ami.find(where(Event="QueueCallerJoin", Queue="screener-analysis"))
    assert await store.recent_flags() == []
    assert daemon.metric("screener_flags_total") == 0
    log = daemon.logs()
    assert "flag refused outcome=rejected" in log
    assert "\r" not in log
    victim.kill()
    victim_agent.kill()
