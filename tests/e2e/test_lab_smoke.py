"""The lab proves itself: real Asterisk 22, SIPp calls and AMI, without the screener daemon.

Each flag test plays the daemon's part (Getvar, then one Redirect) so that the shipped dialplan
(deploy/asterisk) is exercised end to end. Run with ``SCREENER_RECORD_AMI=1`` to refresh the raw
AMI transcripts in tests/fixtures/ami/ used by the fast unit tests.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.lab import REPO
from tests.lab.ami import AmiMessage, AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_DIRECT, DID_LOCAL, DID_LOCAL_PREDIAL, DID_QUEUE
from tests.lab.flow import expect_analysis, expect_wrapup, redirect_to_analysis, wait_flag
from tests.lab.redis import RedisServer
from tests.lab.sipp import SippFactory

pytestmark = pytest.mark.lab

TOKEN = re.compile(r"[0-9a-f]{40}")
FIXTURES = REPO / "tests" / "fixtures" / "ami"
RECORD = os.environ.get("SCREENER_RECORD_AMI") == "1"
# Noise left out of the recorded lab-user transcripts (whole messages, never parts of one).
NOISY_EVENTS = {"VarSet", "TestEvent", "RTCPSent", "RTCPReceived", "DeviceStateChange"}
# Decoded it is 61 characters: Asterisk cuts caller numbers at 79, so the forged event carries
# no AgentChannel of its own (the tail of the genuine event follows the forged headers).
HOSTILE_FROM_USER = (
    "1%0D%0A%0D%0AEvent%3A%20UserEvent%0D%0AUserEvent%3A%20ScreenerFlag%0D%0AToken%3A%20forged"
)


async def screener_user(asterisk: AsteriskLab) -> AmiObserver:
    """A connection as the shipped least-privilege ``screener`` AMI user (with event filters)."""
    ami = AmiObserver(
        asterisk.ami_port, asterisk.secrets.screener_user, asterisk.secrets.screener_secret
    )
    await ami.connect()
    return ami


def record(name: str, ami: AmiObserver, *, drop: set[str] | frozenset[str] = frozenset()) -> None:
    """Write the banner and every message received, byte for byte, minus ``drop`` events."""
    if not RECORD:
        return
    FIXTURES.mkdir(parents=True, exist_ok=True)
    body = b"".join(m.raw for m in ami.messages if m.event not in drop)
    (FIXTURES / name).write_bytes(ami.banner + body)


def dtmf_on(ami: AmiObserver, channel: str) -> list[AmiMessage]:
    return [
        m for m in ami.events if m.event in {"DTMFBegin", "DTMFEnd"} and m.get("Channel") == channel
    ]


async def run_flag_flow(
    ami: AmiObserver, sipp: SippFactory, *, caller_channel: str, flag_since: int
) -> dict[str, float]:
    """Flag seen -> the test redirects like the daemon -> analysis + wrap-up; returns timings."""
    flag = await wait_flag(ami, since=flag_since)
    nine = await ami.wait_for(
        where(Event="DTMFEnd", Channel=flag.agent_channel, Digit="9", Direction="Received"),
        since=flag_since,
    )
    mark = ami.mark()
    sent_at = time.monotonic()
    reply = await redirect_to_analysis(ami, caller_channel, flag.agent_channel)
    assert reply.response == "Success", reply
    analysis = await expect_analysis(ami, caller_channel, since=mark)
    await expect_wrapup(ami, flag.agent_channel, since=mark)
    for process in sipp.processes:
        assert await process.finished(20) == 0, process.describe()
    timings = {
        "dtmf9_to_userevent_ms": (flag.event.received_at - nine.received_at) * 1000,
        "redirect_roundtrip_ms": (reply.received_at - sent_at) * 1000,
        "redirect_to_queuecallerjoin_ms": (analysis.joined.received_at - sent_at) * 1000,
        "dtmf9_to_queuecallerjoin_ms": (analysis.joined.received_at - nine.received_at) * 1000,
        "in_queue_ms": (analysis.complete.received_at - analysis.moh.received_at) * 1000,
    }
    print("timings:", {k: round(v, 1) for k, v in timings.items()})
    return timings


@pytest.mark.timeout(90)
async def test_flag_on_a_direct_queue_member(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory, fast_analysis: int
) -> None:
    ami = ami_observer
    screener = await screener_user(asterisk)
    try:
        sipp.agent("agent1", dtmf="*9", dtmf_delay_ms=1500)
        caller = sipp.caller(DID_QUEUE, from_user="0123456789")
        joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 10)
        connect = await ami.wait_for(where(Event="AgentConnect", Queue="hotline"), 10)
        caller_channel, agent_channel = joined["Channel"], connect["DestChannel"]
        assert connect["Channel"] == caller_channel
        assert agent_channel.startswith("PJSIP/agent1-")
        assert await ami.getvar(caller_channel, "SCREENER_QUEUE") == "hotline"
        assert await ami.getvar(caller_channel, "SCREENER_DID") == DID_QUEUE

        flag = await wait_flag(ami)
        assert flag.agent_channel == agent_channel
        assert TOKEN.fullmatch(flag.token)
        assert await ami.getvar(agent_channel, "SCREENER_FLAG_TOKEN") == flag.token
        # How the daemon finds the caller from the agent's channel:
        assert await ami.getvar(agent_channel, "BRIDGEPEER") == caller_channel
        linkedid = await ami.getvar(agent_channel, "CHANNEL(linkedid)")
        assert linkedid == joined["Uniqueid"]
        assert await ami.getvar(linkedid, "CHANNEL(name)") == caller_channel  # uniqueid works
        # The flag key's digits never reached the caller (the bridge is not native here: the
        # agent's feature hooks keep the media in the core, so DTMF to the caller would show).
        assert dtmf_on(ami, caller_channel) == []

        timings = await run_flag_flow(ami, sipp, caller_channel=caller_channel, flag_since=0)
        assert timings["dtmf9_to_userevent_ms"] < 500
        assert caller.returncode == 0
        # The screener user received the flag, and only events its filters let through.
        await screener.wait_for(where(Event="UserEvent", UserEvent="ScreenerFlag"), 5)
        assert {m.event for m in screener.events} <= {"UserEvent", "DTMFEnd", "FullyBooted"}
    finally:
        await screener.close()
    record("flag_lab.txt", ami, drop=NOISY_EVENTS)
    record("flag_screener.txt", screener)


@pytest.mark.timeout(60)
async def test_other_digits_from_the_agent_do_reach_the_caller(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory
) -> None:
    """The control for the "*9 never reaches the caller" check: other digits show as Sent."""
    ami = ami_observer
    agent = sipp.agent("agent1", dtmf="5", dtmf_delay_ms=500)
    caller = sipp.caller(DID_QUEUE)
    joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 10)
    caller_channel = joined["Channel"]
    await ami.wait_for(where(Event="DTMFEnd", Channel=caller_channel, Direction="Sent", Digit="5"))
    await ami.action({"Action": "Hangup", "Channel": caller_channel})
    assert await caller.finished(10) == 0, caller.describe()
    assert await agent.finished(10) == 0, agent.describe()


@pytest.mark.timeout(90)
async def test_flag_on_a_local_channel_member_with_predial_inside_the_local_dialplan(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory, fast_analysis: int
) -> None:
    ami = ami_observer
    sipp.agent("agent2", dtmf_delay_ms=1500)
    sipp.caller(DID_LOCAL_PREDIAL)
    joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline-local-predial"), 10)
    connect = await ami.wait_for(where(Event="AgentConnect"), 10)
    caller_channel = joined["Channel"]
    # The queue only knows the Local channel; it is optimised away once the agent answers.
    assert connect["DestChannel"].startswith("Local/agent2-predial@agent-local-")
    await ami.wait_for(where(Event="LocalOptimizationEnd"), 10)

    flag = await wait_flag(ami)
    assert flag.agent_channel.startswith("PJSIP/agent2-")
    assert await ami.getvar(flag.agent_channel, "BRIDGEPEER") == caller_channel
    assert await ami.getvar(flag.agent_channel, "CHANNEL(linkedid)") == joined["Uniqueid"]
    await run_flag_flow(ami, sipp, caller_channel=caller_channel, flag_since=0)


@pytest.mark.timeout(60)
async def test_flag_on_a_local_channel_member_with_the_queue_predial_only(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory
) -> None:
    ami = ami_observer
    sipp.agent("agent2", dtmf_delay_ms=1000)
    sipp.caller(DID_LOCAL)
    await ami.wait_for(where(Event="LocalOptimizationEnd"), 10)
    flag = await wait_flag(ami, timeout=6)
    assert flag.agent_channel.startswith("PJSIP/agent2-")


@pytest.mark.timeout(90)
async def test_flag_after_a_sip_refer_blind_transfer(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory, fast_analysis: int
) -> None:
    ami = ami_observer
    transferor = sipp.agent_refer("agent1", "2003", refer_delay_ms=1000)
    sipp.agent("agent3", dtmf_delay_ms=1500)
    sipp.caller(DID_QUEUE)
    joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 10)
    caller_channel = joined["Channel"]
    transfer = await ami.wait_for(where(Event="BlindTransfer", Result="Success"), 15)
    assert transfer["Extension"] == "2003"
    assert transfer["TransfererChannel"].startswith("PJSIP/agent1-")
    assert transfer["TransfereeChannel"] == caller_channel

    flag = await wait_flag(ami)
    assert flag.agent_channel.startswith("PJSIP/agent3-")
    assert await ami.getvar(flag.agent_channel, "BRIDGEPEER") == caller_channel
    assert await ami.getvar(flag.agent_channel, "CHANNEL(linkedid)") == joined["Uniqueid"]
    await run_flag_flow(ami, sipp, caller_channel=caller_channel, flag_since=0)
    assert transferor.returncode == 0


@pytest.mark.timeout(90)
async def test_forged_events_from_a_hostile_caller_id(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory, fast_analysis: int
) -> None:
    """CR LF in the From user forges AMI events for a full-privilege user, not for ``screener``."""
    ami = ami_observer
    screener = await screener_user(asterisk)
    try:
        sipp.agent("agent1", dtmf_delay_ms=1500)
        sipp.caller(DID_QUEUE, from_user=HOSTILE_FROM_USER)
        joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 10)
        caller_channel = joined["Channel"]

        # The raw number is kept intact (base64) for screener, the live one is sanitised.
        raw = unquote(HOSTILE_FROM_USER)
        b64 = await ami.getvar(caller_channel, "SCREENER_CID_B64")
        assert b64 is not None
        assert base64.b64decode(b64).decode() == raw
        sanitised = "".join(c for c in raw if c in "0123456789+*#")
        assert await ami.getvar(caller_channel, "CALLERID(num)") == sanitised

        flag = await wait_flag(ami)  # the forged ones have no AgentChannel
        assert TOKEN.fullmatch(flag.token)
        forged_lab = ami.find(where(Event="UserEvent", UserEvent="ScreenerFlag", Token="forged"))
        print(f"forged ScreenerFlag events seen by the lab user: {len(forged_lab)}")
        assert forged_lab, "expected the known AMI injection to reach a read=all user"
        # Forgeries arrive only before the sanitising Gosub ran: none after the queue join.
        assert all(m.received_at <= joined.received_at for m in forged_lab)

        await run_flag_flow(ami, sipp, caller_channel=caller_channel, flag_since=0)
        genuine = await screener.wait_for(where(Event="UserEvent", UserEvent="ScreenerFlag"), 5)
        assert genuine["AgentChannel"] == flag.agent_channel
        assert genuine["Token"] == flag.token
        assert b"forged" not in screener.raw
        assert {m.event for m in screener.events} <= {"UserEvent", "DTMFEnd", "FullyBooted"}
    finally:
        await screener.close()
    record("forged_lab.txt", ami, drop=NOISY_EVENTS)
    record("forged_screener.txt", screener)


@pytest.mark.timeout(60)
async def test_withheld_number_arrives_as_prohibited(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory
) -> None:
    ami = ami_observer
    agent = sipp.agent_idle("agent3")
    caller = sipp.caller(DID_DIRECT, from_user="0123456789", withheld=True)
    bridged = await ami.wait_for(where(Event="DialEnd", DialStatus="ANSWER"), 10)
    caller_channel = bridged["Channel"]
    assert await ami.getvar(caller_channel, "SCREENER_CID_PRES") == "prohib_not_screened"
    b64 = await ami.getvar(caller_channel, "SCREENER_CID_B64")
    assert b64 is not None
    assert base64.b64decode(b64) == b"0123456789"
    await ami.action({"Action": "Hangup", "Channel": caller_channel})
    assert await caller.finished(10) == 0, caller.describe()
    assert await agent.finished(10) == 0, agent.describe()


@pytest.mark.timeout(60)
async def test_caller_hangs_up_during_the_call(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory
) -> None:
    agent = sipp.agent_idle("agent1")
    caller = sipp.caller(DID_QUEUE, hangup_after_ms=1000)
    assert await caller.finished(20) == 0, caller.describe()
    assert await agent.finished(10) == 0, agent.describe()
    hangup = await ami_observer.wait_for(where(Event="Hangup", Cause="16"), 5)
    assert hangup["Channel"].startswith(("PJSIP/caller-", "PJSIP/agent1-"))


@pytest.mark.timeout(60)
async def test_inbound_sanitiser_keeps_only_the_intended_name_characters(
    asterisk: AsteriskLab, ami_observer: AmiObserver, sipp: SippFactory
) -> None:
    ami = ami_observer
    agent = sipp.agent_idle("agent3")
    sipp.caller(DID_DIRECT, from_name="Eve:<x>@[y]^=")
    bridged = await ami.wait_for(where(Event="DialEnd", DialStatus="ANSWER"), 10)
    name = await ami.getvar(bridged["Channel"], "CALLERID(name)")
    await ami.action({"Action": "Hangup", "Channel": bridged["Channel"]})
    await agent.finished(10)
    print(f"CALLERID(name) after screener-inbound: {name!r}")
    assert name == "Evexy"


@pytest.mark.timeout(60)
def test_two_instances_side_by_side_freeze_and_restart(
    asterisk: AsteriskLab, lab_prompts: Path
) -> None:
    second = AsteriskLab(prompts=lab_prompts)
    try:
        second.start()
        assert second.ports.sip != asterisk.ports.sip
        assert asterisk.ami_login_ok()
        assert second.ami_login_ok()
        second.sigstop()
        assert not second.ami_login_ok()
        second.sigcont()
        assert second.ami_login_ok()
        second.restart()
        assert second.ami_login_ok()
        assert second.startup_seconds is not None and second.startup_seconds < 10
    finally:
        second.cleanup()


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("lab_required")
def test_site_globals_do_not_hide_the_shipped_globals(lab_prompts: Path) -> None:
    """A site's own [globals] before the #include: SCREENER_ANALYSIS_SECONDS still set."""
    lab = AsteriskLab(prompts=lab_prompts, dialplan_prelude="[globals]\nSITE_VAR=1\n")
    try:
        lab.start()
        shown = lab.cli("dialplan show globals")
        assert "SITE_VAR=1" in shown
        assert "SCREENER_ANALYSIS_SECONDS=" in shown
    finally:
        lab.cleanup()


@pytest.mark.timeout(30)
def test_redis_server_stop_kill_restart(redis_server: RedisServer) -> None:
    assert redis_server.ping()
    redis_server.kill()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.ping()
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sock:
        sock.sendall(b"CONFIG GET save\r\n")
        assert b"save" in sock.recv(256)
