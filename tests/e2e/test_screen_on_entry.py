"""Screening on entry end to end: real SIP calls (SIPp) through a real Asterisk 22 whose shipped
dialplan asks the real screener daemon over FastAGI, with rules in a real redis-server.

Rules are set the way an admin sets them (the daemon's HTTP admin API); what each test checks is
what a caller and the centre see: where the call went (AMI events), the SIP answer the caller
got, and the daemon's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from screener.store import Store
from tests.conftest import DaemonFactory
from tests.factories import make_flag
from tests.lab.ami import AmiMessage, AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_DIRECT, DID_QUEUE
from tests.lab.daemon import ScreenerDaemon
from tests.lab.flow import expect_analysis
from tests.lab.sipp import SippFactory

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

HOTLINE = "lab-hotline"
ENV = {
    "SCREENER_HOTLINES": f'{{"{DID_QUEUE}": "{HOTLINE}"}}',
    "SCREENER_SCREENING__CHALLENGE_DIGITS": "5",
    "SCREENER_SCREENING__LEARN_INTERVAL": "0.5",
    "SCREENER_SCREENING__LEARN_MIN_FLAGS": "3",
    "SCREENER_SCREENING__SWEEP_INTERVAL": "0.5",
}
CALLER = "13812341234"  # +8613812341234 in the lab's default region (CN)
E164 = "+8613812341234"


def add_rule(daemon: ScreenerDaemon, **fields: Any) -> dict[str, Any]:
    status, body = daemon.request("POST", "/api/v1/rules", {"by": "lab-admin", **fields})
    assert status == 201, body
    rule: dict[str, Any] = body["rule"]
    return rule


def screens(daemon: ScreenerDaemon, verdict: str, reason: str, treatment: str = "none") -> float:
    labels = {"verdict": verdict, "reason": reason, "treatment": treatment, "hotline": HOTLINE}
    return daemon.metric("screener_screens_total", labels)


def is_caller(m: AmiMessage) -> bool:
    return (m.get("Channel") or "").startswith("PJSIP/caller-")


async def verdict(ami: AmiObserver, since: int, timeout: float = 15.0) -> AmiMessage:
    """The VarSet of SCREENER_SCREEN that screener's SET VARIABLE made on the caller."""
    return await ami.wait_for(
        lambda m: (
            m.event == "VarSet"
            and is_caller(m)
            and m.get("Variable") == "SCREENER_SCREEN"
            and bool(m.get("Value"))
        ),
        timeout,
        since=since,
    )


def reached_agent(ami: AmiObserver, since: int) -> list[AmiMessage]:
    """Dial attempts towards any agent, and hotline queue joins, since ``since``."""
    return ami.find(
        lambda m: (
            (m.event == "DialBegin" and "agent" in (m.get("DestChannel") or ""))
            or (m.event == "QueueCallerJoin" and m.get("Queue") == "hotline")
        ),
        since=since,
    )


async def connects_to_agent(ami: AmiObserver, since: int) -> AmiMessage:
    return await ami.wait_for(where(Event="AgentConnect", Queue="hotline"), 20, since=since)


def playback(sound: str) -> Callable[[AmiMessage], bool]:
    return lambda m: (
        m.event == "Newexten"
        and is_caller(m)
        and m.get("Application") == "Playback"
        and m.get("AppData") == sound
    )


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


# --- blocks and their treatments ---------------------------------------------------------------


async def test_blocked_number_hears_the_line_fault_and_never_reaches_an_agent(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory
) -> None:
    daemon = screener(env=ENV)
    rule = add_rule(daemon, value=CALLER, reason="abusive, ticket 41", treatment="linefault")
    assert rule["value"] == E164 and rule["match"] == "number"
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user=CALLER)
    screened = await verdict(ami_observer, mark)
    assert screened["Value"] == f"block/linefault/-/{rule['id']}"
    await ami_observer.wait_for(playback("screener/line-fault"), 15, since=mark)
    assert await caller.finished(20) == 0, caller.describe()
    assert reached_agent(ami_observer, mark) == []
    assert screens(daemon, "block", "number", "linefault") == 1


async def test_blocked_number_with_the_analysis_treatment_enters_the_analysis_queue(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory, fast_analysis: int
) -> None:
    daemon = screener(env=ENV)
    add_rule(daemon, value="+86138*", reason="bank of office phones", treatment="analysis")
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user=CALLER)
    screened = await verdict(ami_observer, mark)
    analysis = await expect_analysis(ami_observer, screened["Channel"], since=mark)
    assert analysis.complete is not None
    assert await caller.finished(20) == 0, caller.describe()
    assert reached_agent(ami_observer, mark) == []
    assert screens(daemon, "block", "prefix", "analysis") == 1


@pytest.mark.parametrize(("treatment", "code"), [("busy", 486), ("reject", 403)])
async def test_busy_and_reject_treatments_refuse_the_call_in_sip(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    treatment: str,
    code: int,
) -> None:
    daemon = screener(env=ENV)
    add_rule(daemon, value=f"{CALLER[:-2]}00..{CALLER[:-2]}99", reason="range", treatment=treatment)
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller_refused(DID_QUEUE, from_user=CALLER)
    assert await caller.finished(20) == 0, caller.describe()
    assert caller.final_response() == code
    assert reached_agent(ami_observer, mark) == []
    assert screens(daemon, "block", "range", treatment) == 1


# --- the allowlist, shadow mode, expiry ---------------------------------------------------------


async def test_allowlisted_number_reaches_an_agent_despite_flags_and_rules(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory, store: Store
) -> None:
    daemon = screener(env=ENV | {"SCREENER_SCREENING__QUORUM": "2"})
    now = datetime.now(UTC)
    for n, agent in enumerate(("PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3")):
        await store.record_flag(make_flag(f"17000000{n}.1", CALLER, agent=agent, at=now), 30)
    add_rule(daemon, value="+86138*", reason="office bank", treatment="reject")
    add_rule(daemon, value="anonymous", reason="no anonymous calls", treatment="reject")
    add_rule(daemon, value=CALLER, list="allow", reason="our own test line")
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user=CALLER)
    screened = await verdict(ami_observer, mark)
    assert screened["Value"].startswith("allow/-/-/r")
    await connects_to_agent(ami_observer, mark)
    assert screens(daemon, "allow", "allowlist") == 1
    sipp.lab.hangup_all()
    assert await caller.finished(20) == 0, caller.describe()


async def test_shadow_rule_lets_the_call_through_and_is_counted(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory
) -> None:
    daemon = screener(env=ENV)
    add_rule(daemon, value=CALLER, reason="trying it out first", mode="shadow")
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user=CALLER)
    await connects_to_agent(ami_observer, mark)
    assert daemon.metric("screener_shadow_hits_total", {"match": "number", "action": "block"}) == 1
    assert screens(daemon, "allow", "no_rule") == 1
    assert "screen shadow rule would apply" in daemon.logs()
    sipp.lab.hangup_all()
    assert await caller.finished(20) == 0, caller.describe()


async def test_expired_rule_no_longer_applies_and_is_swept_with_an_audit_entry(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory
) -> None:
    daemon = screener(env=ENV)
    rule = add_rule(daemon, value=CALLER, reason="cool-off", treatment="reject", expires="4s")
    first = sipp.caller_refused(DID_QUEUE, from_user=CALLER)
    assert await first.finished(20) == 0, first.describe()
    assert first.final_response() == 403
    await wait_until(lambda: time.time() > rule["expires_at"], 10, "the rule expires")
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    second = sipp.caller(DID_QUEUE, from_user=CALLER)
    await connects_to_agent(ami_observer, mark)
    assert screens(daemon, "allow", "no_rule") == 1
    sipp.lab.hangup_all()
    assert await second.finished(20) == 0, second.describe()

    def swept() -> bool:
        _, body = daemon.request("GET", f"/api/v1/audit?rule={rule['id']}")
        return any(e["action"] == "expire" for e in body["audit"])

    await wait_until(swept, 10, "the sweeper audits the expiry")
    status, _ = daemon.request("GET", f"/api/v1/rules/{rule['id']}")
    assert status == 404


# --- challenges in the learned high-risk hours --------------------------------------------------


async def learned_now(daemon: ScreenerDaemon, store: Store) -> None:
    """Flags at this hour (UTC, the lab's zone) until screener learns it as high-risk."""
    now = datetime.now(UTC)
    for n in range(4):
        await store.record_flag(make_flag(f"17100000{n}.1", f"1390000000{n}", at=now), 30)
    await wait_until(
        lambda: daemon.metric("screener_high_risk_hours") >= 1, 10, "high-risk hours learned"
    )
    add_rule(
        daemon, value="anonymous", action="challenge", windows=["learned"], reason="night pranks"
    )


@pytest.fixture
async def short_challenge(ami_observer: AmiObserver) -> Any:
    name = "SCREENER_CHALLENGE_SECONDS"
    await ami_observer.action({"Action": "Setvar", "Variable": name, "Value": "3"})
    yield
    await ami_observer.action({"Action": "Setvar", "Variable": name, "Value": "6"})


async def test_anonymous_caller_in_learned_high_risk_hours_passes_the_challenge_by_pressing(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
    short_challenge: None,
) -> None:
    daemon = screener(env=ENV)
    await learned_now(daemon, store)
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user="anonymous", dtmf="5", dtmf_delay_ms=1000)
    screened = await verdict(ami_observer, mark)
    assert screened["Value"].startswith("challenge/-/5/r")
    await connects_to_agent(ami_observer, mark)
    assert screens(daemon, "challenge", "anonymous") == 1
    sipp.lab.hangup_all()
    assert await caller.finished(20) == 0, caller.describe()


async def test_withheld_caller_who_stays_silent_is_hung_up(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
    short_challenge: None,
) -> None:
    daemon = screener(env=ENV)
    await learned_now(daemon, store)
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user=CALLER, withheld=True)
    screened = await verdict(ami_observer, mark)
    assert screened["Value"].startswith("challenge/-/5/r")
    assert await caller.finished(20) == 0, caller.describe()  # Asterisk's BYE
    assert reached_agent(ami_observer, mark) == []
    assert screens(daemon, "challenge", "anonymous") == 1


# --- automatic blocks from agents' flags --------------------------------------------------------


async def test_caller_flagged_by_a_quorum_of_distinct_agents_is_blocked_on_the_next_call(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    fast_analysis: int,
) -> None:
    env = ENV | {
        "SCREENER_SCREENING__QUORUM": "2",
        "SCREENER_SCREENING__DEFAULT_TREATMENT": "reject",
    }
    daemon = screener(env=env)
    for did, agent in ((DID_QUEUE, "agent1"), (DID_DIRECT, "agent3")):
        flagger = sipp.agent(agent, dtmf="*9", dtmf_delay_ms=1000)
        caller = sipp.caller(did, from_user=CALLER)
        assert await caller.finished(30) == 0, caller.describe()
        assert await flagger.finished(20) == 0, flagger.describe()
    await wait_until(
        lambda: daemon.metric("screener_auto_blocks_total") == 1, 10, "an automatic block"
    )
    _, body = daemon.request("GET", "/api/v1/rules?origin=auto")
    (rule,) = body["rules"]
    assert rule["value"] == E164 and rule["expires_at"] > time.time()
    assert "2 distinct agents (PJSIP/agent1, PJSIP/agent3)" in rule["reason"]
    mark = ami_observer.mark()
    blocked = sipp.caller_refused(DID_QUEUE, from_user=CALLER)
    assert await blocked.finished(20) == 0, blocked.describe()
    assert blocked.final_response() == 403
    assert reached_agent(ami_observer, mark) == []


# --- failing open ---------------------------------------------------------------------------


async def test_with_the_daemon_stopped_the_call_reaches_an_agent(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory
) -> None:
    daemon = screener(env=ENV)
    add_rule(daemon, value=CALLER, reason="would block", treatment="reject")
    daemon.stop()
    sipp.agent_idle("agent1")
    mark = ami_observer.mark()
    caller = sipp.caller(DID_QUEUE, from_user=CALLER)
    await connects_to_agent(ami_observer, mark)
    failed = ami_observer.find(
        lambda m: m.event == "VarSet" and is_caller(m) and m.get("Variable") == "AGISTATUS",
        since=mark,
    )
    assert [m["Value"] for m in failed] == ["FAILURE"]
    sipp.lab.hangup_all()
    assert await caller.finished(20) == 0, caller.describe()


async def test_with_redis_down_screening_allows_within_budget_and_counts_it(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory, redis_server: Any
) -> None:
    daemon = screener(env=ENV)
    add_rule(daemon, value=CALLER, reason="would block", treatment="reject")
    redis_server.stop()
    try:
        sipp.agent_idle("agent1")
        mark = ami_observer.mark()
        caller = sipp.caller(DID_QUEUE, from_user=CALLER)
        screened = await verdict(ami_observer, mark)
        assert screened["Value"] == "allow/-/-/-"
        await connects_to_agent(ami_observer, mark)
        failopen = sum(
            daemon.metric("screener_screen_failopen_total", {"reason": r})
            for r in ("redis", "timeout")
        )
        assert failopen == 1
        assert daemon.metric("screener_screen_seconds_sum") < 0.25  # within the 200 ms budget
        sipp.lab.hangup_all()
        assert await caller.finished(20) == 0, caller.describe()
    finally:
        redis_server.start()


# --- hostile caller ID through FastAGI ------------------------------------------------------


def _pct(text: str) -> str:
    return "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in text)


async def test_hostile_caller_id_cannot_forge_agi_lines_and_the_real_number_is_screened(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory, asterisk: AsteriskLab
) -> None:
    daemon = screener(env=ENV)
    blocked = "4155550100"
    rule = add_rule(daemon, value=blocked, reason="known harasser", treatment="reject")
    add_rule(daemon, value="13800000000", list="allow", reason="the number it pretends to be")
    # The caller number ends the agi_callerid line, adds an agi_arg_1 carrying the allowlisted
    # number in base64, a blank line (end of environment) and a forged reply to our first command.
    allowed_b64 = base64.b64encode(b"13800000000").decode()
    forged = f"\r\nagi_arg_1: {allowed_b64}\r\n\r\n200 result=1 (allow)"
    from_user = blocked + _pct(forged)
    mark = ami_observer.mark()
    caller = sipp.caller_refused(DID_QUEUE, from_user=from_user)
    # AMI events that carry the raw caller number are split by it (that is the attack), so read
    # the verdict from the variables the dialplan sets after sanitising CALLERID.
    rule_var = await ami_observer.wait_for(
        lambda m: m.event == "VarSet" and is_caller(m) and m.get("Variable") == "SCREENER_RULE",
        15,
        since=mark,
    )
    assert rule_var["Value"] == rule["id"]
    verdicts = ami_observer.find(
        lambda m: m.event == "VarSet" and m.get("Variable") == "SCREENER_VERDICT", since=mark
    )
    assert [m["Value"] for m in verdicts] == ["block"]
    assert await caller.finished(20) == 0, caller.describe()
    assert caller.final_response() == 403
    assert daemon.metric("screener_attacks_total", {"kind": "cid_injection"}) == 1
    assert daemon.metric("screener_attacks_total", {"kind": "agi_environment"}) == 1
    assert daemon.metric("screener_agi_sessions_total", {"kind": "remote"}) == 0
    assert screens(daemon, "block", "number", "reject") == 1
    # the log shows the attempt escaped on one line, never as lines of its own
    assert not [line for line in daemon.logs().splitlines() if line.startswith("agi_arg_1")]


# --- the FastAGI server under hostile clients -------------------------------------------------

ENVIRONMENT = (
    "agi_network: yes\nagi_network_script: screen\nagi_request: agi://127.0.0.1/screen\n"
    "agi_channel: PJSIP/fake-00000001\nagi_language: en\nagi_type: PJSIP\n"
    "agi_uniqueid: 1700000000.9\nagi_version: 22.10.1\nagi_callerid: 1\nagi_calleridname: x\n"
    "agi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\n"
    "agi_dnid: 1\nagi_rdnis: unknown\nagi_context: x\nagi_extension: 1\nagi_priority: 1\n"
    "agi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1\n"
)


async def hang_up_mid_dialogue(port: int) -> str:
    """Play Asterisk up to screener's SET VARIABLE, then send HANGUP and leave."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fence = (await reader.readline()).decode()  # GET FULL VARIABLE "<nonce>"
    nonce = fence.split('"')[1]
    arg = base64.b64encode(CALLER.encode()).decode()
    writer.write(f"{ENVIRONMENT}agi_arg_1: {arg}\n\n200 result=1 ({nonce})\n".encode())
    command = (await reader.readline()).decode()
    writer.write(b"HANGUP\n")
    writer.close()
    return command


async def test_fastagi_survives_hostile_clients_while_real_calls_are_screened(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory
) -> None:
    daemon = screener(env=ENV | {"SCREENER_AGI__READ_TIMEOUT": "2"})
    rule = add_rule(daemon, value=CALLER, reason="known harasser", treatment="reject")
    port = daemon.agi_port
    for _ in range(50):  # connect and close at once (probes, health checks)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    for n in range(20):  # garbage
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes(range(256)) * 40 + b"\n" * n)
        writer.close()
    stallers = []
    for _ in range(100):  # half an environment, then silence, connections held open
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(ENVIRONMENT[:200].encode())
        stallers.append(writer)
    commands = await asyncio.gather(*(hang_up_mid_dialogue(port) for _ in range(10)))
    expected = f'SET VARIABLE "SCREENER_SCREEN" "block/reject/-/{rule["id"]}"\n'
    assert commands == [expected] * 10

    # while 100 stalled clients are still connected, a real call is screened at once
    started = time.monotonic()
    status, _ = daemon.request("GET", "/healthz")
    assert status == 200 and time.monotonic() - started < 0.5
    mark = ami_observer.mark()
    caller = sipp.caller_refused(DID_QUEUE, from_user=CALLER)
    screened = await verdict(ami_observer, mark)
    assert screened["Value"] == f"block/reject/-/{rule['id']}"
    assert await caller.finished(20) == 0, caller.describe()
    assert caller.final_response() == 403
    assert time.monotonic() - started < 5

    # the stalled ones are dropped after the read timeout; every failure is counted, none fatal
    await wait_until(
        lambda: daemon.metric("screener_agi_sessions_total", {"kind": "timeout"}) >= 100,
        10,
        "stalled FastAGI clients time out",
    )
    assert daemon.metric("screener_agi_sessions_total", {"kind": "remote"}) >= 20
    for writer in stallers:
        writer.close()
    screened_count = daemon.metric("screener_screen_seconds_count")
    assert screened_count == 11  # the real call and the ten that hung up after their verdict


# --- a frozen daemon is restarted by systemd's watchdog --------------------------------------


async def test_daemon_reports_ready_and_pings_the_systemd_watchdog_from_its_event_loop(
    screener: DaemonFactory, tmp_path: Any
) -> None:
    import os
    import signal
    import socket

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def messages(seconds: float) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 256), left)
            except TimeoutError:
                break
            out.append(data.decode())
        return out

    try:
        daemon = screener(env=ENV | {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"})
        first = await messages(1.0)
        assert first[0] == "READY=1" and first.count("WATCHDOG=1") >= 3, first
        pid = daemon.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a frozen process: no pings, systemd would kill it
        try:
            await messages(0.3)  # drain what was in flight
            assert await messages(1.0) == []
        finally:
            os.kill(pid, signal.SIGCONT)
        assert "WATCHDOG=1" in await messages(1.0)
        daemon.stop()
        assert "STOPPING=1" in await messages(1.0)
    finally:
        sock.close()
