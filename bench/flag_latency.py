"""Flag-to-Redirect latency inside the daemon (target: p99 <= 5 ms).

The real daemon (``screener run`` in its own process, with a real redis-server and its spool on
disk) is connected to a loopback AMI peer that answers instantly. For each flag the peer pushes a
``UserEvent: ScreenerFlag`` and times how long until the daemon's ``Redirect`` arrives: that is the
daemon's own cost (event parsing, token and caller verification with 11 Getvar round trips in two
parallel batches, spooling, the Redirect itself).

Peer baseline, same run, same AMI peer: a bare panoramisk client that answers the same event with
a Redirect and nothing else: the floor any AMI client pays.

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ami_peer import BenchAmi, percentile
from tests.lab.net import free_port
from tests.lab.redis import RedisServer


async def run_daemon_side(peer: BenchAmi, flags: int) -> list[float]:
    latencies = []
    for i in range(flags):
        latencies.append(await peer.flag_round(i))
    return latencies


async def panoramisk_baseline(peer: BenchAmi, flags: int) -> list[float]:
    from panoramisk import Manager

    loop = asyncio.get_running_loop()
    manager = Manager(
        host="127.0.0.1",
        port=peer.port,
        username="screener",
        secret=peer.secret,
        loop=loop,
        ping_delay=10**6,
    )

    def on_flag(mgr: Manager, message: dict[str, str]) -> None:
        mgr.send_action(
            {
                "Action": "Redirect",
                "Channel": "PJSIP/caller-x",
                "Context": "screener-analysis",
                "Exten": "s",
                "Priority": "1",
            }
        )

    manager.register_event("UserEvent", on_flag)
    manager.connect()
    await peer.wait_logins(1)
    try:
        return [await peer.flag_round(i, baseline=True) for i in range(flags)]
    finally:
        manager.close()


async def main(flags: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="screener-bench-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis")
        redis.start()
        peer = BenchAmi(channels=flags)
        await peer.start()
        env = os.environ | {
            "SCREENER_AMI__PORT": str(peer.port),
            "SCREENER_AMI__SECRET": peer.secret,
            "SCREENER_REDIS__URL": redis.url,
            "SCREENER_FLAG__SPOOL_DIR": str(work / "spool"),
            "SCREENER_HTTP__PORT": str(free_port()),
            "SCREENER_LOG__LEVEL": "WARNING",
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "screener", "run"], env=env, stderr=subprocess.PIPE
        )
        try:
            await peer.wait_logins(1)
            await asyncio.sleep(0.2)
            for i in range(min(50, flags)):  # warm-up: imports, caches, connection pools
                await peer.flag_round(i, warmup=True)
            peer.reset_channels()
            ours = await run_daemon_side(peer, flags)
        finally:
            daemon.terminate()
            _, err = daemon.communicate(timeout=15)
        if daemon.returncode not in (0, -15):
            raise SystemExit(f"daemon failed: {err.decode()[-2000:]}")
        peer.reset_channels()
        base = await panoramisk_baseline(peer, flags)
        await peer.close()
        redis.stop()

    ms = [x * 1000 for x in ours]
    bms = [x * 1000 for x in base]
    result = {
        "benchmark": "flag_latency",
        "flags": flags,
        "daemon_p50_ms": round(statistics.median(ms), 3),
        "daemon_p99_ms": round(percentile(ms, 99), 3),
        "daemon_max_ms": round(max(ms), 3),
        "baseline_panoramisk_redirect_p50_ms": round(statistics.median(bms), 3),
        "baseline_panoramisk_redirect_p99_ms": round(percentile(bms, 99), 3),
        "target_p99_ms": 5.0,
    }
    print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}")
    name = "screener daemon (flag->Redirect)"
    print(f"{name:34}{result['daemon_p50_ms']:>10}{result['daemon_p99_ms']:>10}")
    print(
        f"{'panoramisk bare Redirect':34}{result['baseline_panoramisk_redirect_p50_ms']:>10}"
        f"{result['baseline_panoramisk_redirect_p99_ms']:>10}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", type=int, default=1000)
    args = parser.parse_args()
    started = time.monotonic()
    asyncio.run(main(args.flags))
