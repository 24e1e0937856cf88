"""AMI event intake: events per second through the daemon's whole event pipeline, against
panoramisk parsing the same recorded stream with a do-nothing handler (target: >= 0.8x).

The stream is made of events recorded from the real Asterisk 22 lab (tests/fixtures/ami), two
mixes, each repeated to ``--events`` events:

* ``unfiltered``: everything a full-privilege AMI user sees during hotline calls (Newchannel,
  VarSet, Newexten, BridgeEnter, DTMF, Hangup...), including forged events;
* ``screener_user``: what the shipped ``screener`` user is sent during those calls (its event
  filters pass UserEvent and DTMFEnd only), DTMF detection off (the default);
* ``dtmf``: the worst case for the DTMF detection mode: nothing but DTMFEnd events on agent
  channels (none completing the key), every one of which the daemon must feed to its detector.

Each figure is the best of ``--rounds`` runs (the machine's noise is larger than the effect).

A replay peer runs in its own process and blasts the stream after login; the end of the stream
is a marker event. "screener" is the daemon's pipeline as ``screener run`` builds it (panoramisk
under ``AmiClient``, the bounded queue, the consumer, ``FlagService``); "panoramisk" is a bare
``Manager`` with a ``*`` handler that does nothing. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tests.lab.net import free_port
from tests.lab.redis import RedisServer

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ami"
MARKER = b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: BenchEnd\r\n\r\n"


def recorded_events(names: list[str]) -> list[bytes]:
    events = []
    for name in names:
        raw = (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        for block in raw.split(b"\r\n\r\n"):
            if block.startswith(b"Event: "):
                events.append(block + b"\r\n\r\n")
    return events


def build_stream(mix: str, count: int) -> bytes:
    if mix == "unfiltered":
        base = recorded_events(["flag_lab.txt", "forged_lab.txt"])
        # A flag (feature key or *9 in DTMF) makes the daemon send actions, which this replay
        # peer never answers: keep the events, but never let them complete a flag.
        base = [
            re.sub(rb"Digit: [*9]", b"Digit: 5", e)
            for e in base
            if b"UserEvent: ScreenerFlag" not in e
        ]
    elif mix == "screener_user":
        base = [
            re.sub(rb"Digit: [*9]", b"Digit: 5", e)
            for e in recorded_events(["flag_screener.txt", "forged_screener.txt"])
            if b"UserEvent: ScreenerFlag" not in e
        ]
        base += recorded_events(["flag_lab.txt"])[:2]  # two events it never subscribes to
    else:
        dtmf = [e for e in recorded_events(["flag_lab.txt"]) if e.startswith(b"Event: DTMFEnd")]
        base = []
        for i, event in enumerate(dtmf * 4):
            # a digit that never completes *9, on many distinct agent channels
            event = re.sub(rb"Digit: .", b"Digit: " + b"0123456789"[i % 10 : i % 10 + 1], event)
            base.append(event.replace(b"agent1-00000001", b"agent%d-0000%04x" % (i % 7, i)))
    out = [base[i % len(base)] for i in range(count)]
    return b"".join(out) + MARKER


REPLAY_PEER = r"""
import asyncio, sys, time
stream = open(sys.argv[2], "rb").read()
async def client(reader, writer):
    writer.write(b"Asterisk Call Manager/9.0.0\r\n")
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        if b"Action: Login" in block or b"action: Login" in block or b"Login" in block:
            aid = [l for l in block.split(b"\r\n") if l.lower().startswith(b"actionid:")]
            writer.write(b"Response: Success\r\n" + (aid[0] + b"\r\n" if aid else b"")
                         + b"Message: Authentication accepted\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            open(sys.argv[3], "w").write(repr(time.monotonic()))
            writer.write(stream)
            await writer.drain()
async def main():
    server = await asyncio.start_server(client, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


async def through_screener(port: int, redis_url: str, spool: Path, dtmf: bool) -> float:
    """Seconds (CLOCK_MONOTONIC, shared by all processes) when the marker event was handled."""
    from screener.config import load
    from screener.daemon import Daemon

    settings = load(
        None,
        {
            "ami": {"port": port, "secret": "x", "ping_interval": 30},
            "redis": {"url": redis_url},
            "flag": {"spool_dir": str(spool), "detect_dtmf": dtmf, "dtmf_channels": ["PJSIP/*"]},
            "http": {"port": 0},
        },
    )
    daemon = Daemon(settings, CollectorRegistry())
    done = asyncio.Event()
    # the end marker is a UserEvent the daemon takes in (and ignores) in every mode
    on_message = daemon.ami._on_message

    def spy(manager: Any, message: Any) -> None:
        on_message(manager, message)
        if message.get("UserEvent") == "BenchEnd":
            done.set()

    daemon.ami._on_message = spy  # type: ignore[method-assign]
    stop = asyncio.Event()
    runner = asyncio.create_task(daemon.run(stop))
    await asyncio.wait_for(done.wait(), 120)
    finished = time.monotonic()
    stop.set()
    await runner
    return finished


async def through_panoramisk(port: int) -> float:
    """Seconds (CLOCK_MONOTONIC) when the do-nothing handler saw the marker event."""
    from panoramisk import Manager

    done = asyncio.Event()
    finished = 0.0

    def on_any(_manager: Any, message: Any) -> None:
        nonlocal finished
        if message.get("UserEvent") == "BenchEnd":
            finished = time.monotonic()
            done.set()

    manager = Manager(
        host="127.0.0.1",
        port=port,
        username="screener",
        secret="x",
        ping_delay=10**6,
        loop=asyncio.get_running_loop(),
    )
    manager.register_event("*", on_any)
    manager.connect()
    await asyncio.wait_for(done.wait(), 120)
    manager.close()
    return finished


async def measure(
    mix: str, count: int, rounds: int, work: Path, redis: RedisServer
) -> dict[str, float]:
    stream_file = work / f"{mix}.ami"
    stream_file.write_bytes(build_stream(mix, count))
    port = free_port()
    started = work / f"{mix}.started"
    peer = subprocess.Popen(
        [sys.executable, "-c", REPLAY_PEER, str(port), str(stream_file), str(started)]
    )
    ours = base = float("inf")
    try:
        await asyncio.sleep(0.5)
        for _ in range(rounds):
            done = await through_screener(port, redis.url, work / f"spool-{mix}", mix == "dtmf")
            ours = min(ours, done - float(started.read_text()))
            done = await through_panoramisk(port)
            base = min(base, done - float(started.read_text()))
    finally:
        peer.kill()
        peer.wait()
    return {
        f"{mix}_screener_events_per_s": round(count / ours),
        f"{mix}_panoramisk_events_per_s": round(count / base),
        f"{mix}_ratio": round(base / ours, 3),
    }


MIXES = ("unfiltered", "screener_user", "dtmf")


async def main(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="screener-bench-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis")
        redis.start()
        try:
            result: dict[str, Any] = {"benchmark": "ami_intake", "events": count}
            for mix in MIXES:
                result |= await measure(mix, count, rounds, work, redis)
        finally:
            redis.stop()
    result["target_ratio"] = 0.8
    print(f"{'mix':14}{'screener ev/s':>16}{'panoramisk ev/s':>18}{'ratio':>8}")
    for mix in MIXES:
        print(
            f"{mix:14}{result[f'{mix}_screener_events_per_s']:>16}"
            f"{result[f'{mix}_panoramisk_events_per_s']:>18}{result[f'{mix}_ratio']:>8}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rounds))
