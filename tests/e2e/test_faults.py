"""Faults end to end, each with a figure: Asterisk hung, Redis killed or slow while agents flag
and calls are screened, the daemon killed in the middle of a flag, and HTTP clients that flood,
stall or send garbage. Real Asterisk 22, SIPp, redis-server and the real daemon process; the
figures are printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from screener.store import Store
from tests.conftest import DaemonFactory
from tests.lab.ami import AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_DIRECT, DID_QUEUE
from tests.lab.daemon import ScreenerDaemon
from tests.lab.flow import answered, expect_analysis, wait_flag_stored
from tests.lab.sipp import SippFactory

pytestmark = [pytest.mark.lab, pytest.mark.timeout(150)]

HOTLINES = {"SCREENER_HOTLINES": f'{{"{DID_QUEUE}": "lab-hotline"}}'}
SHIPPED_WATCHDOG = {"SCREENER_AMI__PING_INTERVAL": "3", "SCREENER_AMI__WATCHDOG_TIMEOUT": "10"}


async def until(check: Any, timeout: float, what: str, step: float = 0.1) -> float:
    """Poll ``check()`` until true; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(step)
    return time.monotonic() - started


async def flag_call(
    ami: AmiObserver, sipp: SippFactory, did: str, agent: str, number: str
) -> tuple[str, str]:
    """A caller from ``number`` reaches ``agent``, who presses *9; returns (channel, uniqueid)
    of the caller once it is in the analysis queue."""
    queue = "hotline" if did == DID_QUEUE else None
    sipp.agent(agent, dtmf_delay_ms=1000)
    mark = ami.mark()
    sipp.caller(did, from_user=number)
    if queue:
        channel, uid, _ = await answered(ami, queue)
    else:
        begin = await ami.wait_for(
            lambda m: m.event == "DialBegin" and agent in (m.get("DestChannel") or ""),
            15,
            since=mark,
        )
        channel, uid = begin["Channel"], begin["Uniqueid"]
    await ami.wait_for(
        where(Event="QueueCallerJoin", Queue="screener-analysis", Channel=channel), 20, since=mark
    )
    return channel, uid


async def test_asterisk_hung_is_noticed_within_15s_then_flags_work_again(
    asterisk: AsteriskLab,
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
    fast_analysis: int,
) -> None:
    daemon = screener(env=SHIPPED_WATCHDOG)
    asterisk.sigstop()
    try:
        noticed = await until(
            lambda: daemon.metric("screener_ami_connected") == 0, 20, "the watchdog notices"
        )
    finally:
        asterisk.sigcont()
    print(f"hung Asterisk noticed after {noticed:.1f} s (shipped ping 3 s, watchdog 10 s)")
    assert noticed <= 15
    back = await until(lambda: daemon.metric("screener_ami_connected") == 1, 30, "reconnected")
    print(f"logged in again {back:.1f} s after SIGCONT")
    _, uid = await flag_call(ami_observer, sipp, DID_QUEUE, "agent1", "13812340001")
    assert (await wait_flag_stored(store, uid)).caller.info.e164 == "+8613812340001"


async def test_redis_killed_while_agents_flag_nothing_lost_or_doubled(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
    redis_server: Any,
    fast_analysis: int,
) -> None:
    daemon = screener(env=HOTLINES)
    redis_server.kill()
    try:
        calls = [
            await flag_call(ami_observer, sipp, DID_QUEUE, "agent1", "13812340002"),
            await flag_call(ami_observer, sipp, DID_DIRECT, "agent3", "13812340003"),
        ]
        await until(lambda: daemon.metric("screener_spool_pending") == 2, 10, "both spooled")
    finally:
        redis_server.start()
    started = time.monotonic()
    for _, uid in calls:
        await wait_flag_stored(store, uid, timeout=15)
    print(f"spooled flags in Redis {time.monotonic() - started:.1f} s after it came back")
    await until(lambda: daemon.metric("screener_spool_pending") == 0, 10, "spool drained")
    for number in ("+8613812340002", "+8613812340003"):
        stats = await store.caller_stats(number)
        assert stats is not None and stats.count == 1, stats
    assert len(await store.recent_flags(10)) == 2


async def test_redis_slow_screening_allows_within_budget_and_says_so(
    ami_observer: AmiObserver, sipp: SippFactory, screener: DaemonFactory, redis_server: Any
) -> None:
    daemon = screener(env=HOTLINES)
    status, _ = daemon.request(
        "POST", "/api/v1/rules", {"value": "13812340004", "reason": "would block", "by": "lab"}
    )
    assert status == 201
    sipp.agent_idle("agent1")
    redis_server.sigstop()
    try:
        mark = ami_observer.mark()
        sipp.caller(DID_QUEUE, from_user="13812340004")
        await ami_observer.wait_for(where(Event="AgentConnect", Queue="hotline"), 20, since=mark)
        assert daemon.metric("screener_screen_failopen_total", {"reason": "timeout"}) == 1
        seconds = daemon.metric("screener_screen_seconds_sum")
        print(f"screen with Redis frozen answered 'allow' in {seconds * 1000:.0f} ms")
        assert seconds < 0.25
        labels = {"verdict": "allow", "reason": "failopen_timeout"}
        assert daemon.metric("screener_screens_total", labels) == 1
    finally:
        redis_server.sigcont()


async def test_daemon_killed_in_the_middle_of_a_flag_loses_and_doubles_nothing(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
    redis_server: Any,
    fast_analysis: int,
) -> None:
    """Redis frozen: the flag is spooled and the caller moved, but Redis never confirms. The
    daemon is SIGKILLed then; restarted on the same spool, it writes the flag exactly once."""
    daemon: ScreenerDaemon = screener(env=HOTLINES)
    redis_server.sigstop()
    try:
        channel, uid = await flag_call(ami_observer, sipp, DID_QUEUE, "agent1", "13812340005")
        await until(lambda: list(daemon.spool.glob("*.json")), 5, "the flag is spooled")
        daemon.kill()
    finally:
        redis_server.sigcont()
    assert await store.get_flag(uid) is None  # never confirmed before the kill
    started = time.monotonic()
    daemon.start()
    await wait_flag_stored(store, uid, timeout=15)
    print(f"restarted daemon wrote the spooled flag in {time.monotonic() - started:.1f} s")
    await until(lambda: not list(daemon.spool.glob("*.json")), 10, "spool drained")
    stats = await store.caller_stats("+8613812340005")
    assert stats is not None and stats.count == 1
    await expect_analysis(ami_observer, channel, timeout=20)


async def test_http_clients_that_flood_stall_or_send_garbage_leave_calls_alone(
    ami_observer: AmiObserver,
    sipp: SippFactory,
    screener: DaemonFactory,
    store: Store,
    fast_analysis: int,
) -> None:
    daemon = screener(env=HOTLINES)
    port = daemon.http_port
    stalled = []
    for _ in range(300):  # half a request line, then nothing (slowloris)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/flags HTTP/1.1\r\nHost: x\r\n")
        stalled.append(writer)
    for n in range(50):  # garbage
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes(range(256)) * 8 + b"\r\n" * n)
        await writer.drain()
        writer.close()

    async def hammer() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        return int(data.split(b" ", 2)[1])

    flood = asyncio.gather(*(hammer() for _ in range(500)))
    started = time.monotonic()
    _, uid = await flag_call(ami_observer, sipp, DID_QUEUE, "agent1", "13812340006")
    flagged = time.monotonic() - started
    codes = await flood
    assert codes == [200] * 500
    status, _ = daemon.request("GET", "/healthz")
    assert status == 200
    assert (await wait_flag_stored(store, uid)).caller.info.e164 == "+8613812340006"
    print(f"flag call completed in {flagged:.1f} s with 300 stalled and 500 flooding clients")
    for writer in stalled:
        writer.close()
