"""Statistics at scale: ``/metrics`` scrape time and report time with many callers and flags in
Redis, and Redis memory per flag (targets: scrape <= 50 ms and report <= 2 s with 1,000,000
distinct callers and 10,000,000 flags).

A real redis-server is filled through the store's own record script (``Store.record_flags``,
pipelined): flags over ``--days`` days ending today, callers drawn from a heavy-tailed
distribution (a few harassers call very often, most callers once or twice), 10 % of flags
withheld, some callers in shared 100-number blocks (prefix clusters). Flag records are built
directly (no phonenumbers lookups: the loader would dominate) with realistic field sizes.

Then, against that Redis:

* the real daemon's ``/metrics`` over HTTP (``screener run`` as a process, its statistics
  gauges refreshed from Redis every second) — scrape time as Prometheus sees it;
* ``screener report`` for the last 7 days and the last 30 days (``statistics.gather_report`` +
  rendering), in process.

Peer baselines, same run: a scrape of a bare prometheus_client HTTP exporter with one counter
(the floor of any scrape), and the report's Redis work done raw (the same ZUNIONSTORE and
HGETALLs, no Python processing).

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, start_http_server

from bench.ami_peer import percentile
from screener import report
from screener.model import CallerId, Flag, FlagSource, Presentation
from screener.number import NumberInfo, mask
from screener.statistics import gather_report
from screener.store import Store
from tests.ami_fake import FakeAmi
from tests.lab import REPO
from tests.lab.net import free_port
from tests.lab.redis import RedisServer

BATCH = 5000
ZONE = ZoneInfo("UTC")


def caller_info(i: int) -> NumberInfo:
    if i % 50 == 0:  # office / public phone banks: 50 numbers share a 100-number block
        e164 = f"+86101{(i // 50) % 100000:05d}{i % 100:02d}"
        kind, area, carrier = "fixed_line", "Beijing", ""
    else:
        e164 = f"+86138{i:08d}"
        kind, area, carrier = "mobile", "Lianyungang, Jiangsu", "China Mobile"
    return NumberInfo(e164, e164, True, kind, "CN", area, carrier, mask(e164))


def make_flags(n: int, callers: int, days: int, rng: random.Random, start: int) -> list[Flag]:
    """Flags ``start`` .. ``start + n``: 30 % from a heavy-tailed few, the rest cycling through
    all ``callers`` (so every caller is flagged once the run is long enough)."""
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + n):
        heavy = rng.random() < 0.3
        who = min(int(rng.paretovariate(1.1)) - 1, callers - 1) if heavy else i % callers
        info = caller_info(who)
        withheld = rng.random() < 0.1
        at = now - timedelta(seconds=rng.randrange(days * 86400))
        agent = f"PJSIP/agent{rng.randrange(1, 61)}"
        out.append(
            Flag(
                flag_id=f"{int(at.timestamp())}.{i}",
                caller=CallerId(
                    raw=info.e164[3:],
                    raw_name="Caller",
                    presentation=Presentation.WITHHELD if withheld else Presentation.ALLOWED,
                    info=info,
                ),
                called="4008001234",
                hotline="service",
                queue="hotline",
                agent=agent,
                agent_channel=f"{agent}-0000{i % 10000:04x}",
                caller_channel=f"PJSIP/trunk-0000{i % 10000:04x}",
                uniqueid=f"{int(at.timestamp())}.{i}",
                linkedid=f"{int(at.timestamp())}.{i}",
                source=FlagSource.FEATURE,
                at=at,
                tz="UTC",
            )
        )
    return out


async def load(store: Store, flags: int, callers: int, days: int) -> float:
    rng = random.Random(11)
    started = time.perf_counter()
    done = 0
    while done < flags:
        n = min(BATCH * 20, flags - done)
        batch = make_flags(n, callers, days, rng, done)
        for start in range(0, n, BATCH):
            await store.record_flags(batch[start : start + BATCH], retention_days=days + 30)
        done += n
        if done % 1_000_000 == 0 or done == flags:
            rate = done / (time.perf_counter() - started)
            print(f"  loaded {done:,} flags ({rate:,.0f}/s)", flush=True)
    return time.perf_counter() - started


def scrape_times(port: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            resp.read()
        times.append(time.perf_counter() - t)
    return times


async def main(flags: int, callers: int, days: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="screener-bench-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis")
        server.start()
        try:
            return await measure(work, server, flags, callers, days, rounds)
        finally:
            server.kill()


async def measure(
    work: Path, server: RedisServer, flags: int, callers: int, days: int, rounds: int
) -> dict[str, object]:
    store = Store.from_url(server.url, timeout=60.0)
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        print(f"loading {flags:,} flags from up to {callers:,} callers over {days} days...")
        load_s = await load(store, flags, callers, days)
        info = await raw.info("memory")
        used = int(info["used_memory"])
        distinct = await raw.zcard(store.keys.callers)
        print(f"redis used_memory {used / 2**20:,.0f} MiB = {used / flags:,.0f} B per flag")

        scrape, floor = await scrapes(work, server.url, rounds)

        report_s: dict[int, list[float]] = {7: [], 30: []}
        today = datetime.now(ZONE).date()
        for period in report_s:
            for _ in range(3):
                t = time.perf_counter()
                built = await gather_report(
                    store, first=today - timedelta(days=period - 1), last=today, zone=ZONE
                )
                report.render_text(built)
                report_s[period].append(time.perf_counter() - t)
        raw_s = await raw_report_work(raw, store, today, 30)
    finally:
        await store.aclose()
        await raw.aclose()

    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 2)

    print(f"\n{'':38}{'p50 ms':>10}{'max ms':>10}")
    print(f"{'/metrics scrape, real daemon':38}{ms(scrape, 50):>10.2f}{max(scrape) * 1000:>10.2f}")
    print(f"{'/metrics scrape, bare exporter':38}{ms(floor, 50):>10.2f}{max(floor) * 1000:>10.2f}")
    for period, values in report_s.items():
        print(
            f"{f'report, last {period} days':38}{ms(values, 50):>10.2f}{max(values) * 1000:>10.2f}"
        )
    raw_name = "raw Redis work of the 30-day report"
    print(f"{raw_name:38}{ms(raw_s, 50):>10.2f}{max(raw_s) * 1000:>10.2f}")
    worst_report = max(max(v) for v in report_s.values())
    return {
        "benchmark": "statistics_scale",
        "flags": flags,
        "distinct_callers": distinct,
        "days": days,
        "redis_bytes_per_flag": round(used / flags),
        "redis_used_mib": round(used / 2**20),
        "load_seconds": round(load_s),
        "scrape_p50_ms": ms(scrape, 50),
        "scrape_max_ms": round(max(scrape) * 1000, 2),
        "baseline_scrape_p50_ms": ms(floor, 50),
        "report_7d_ms": ms(report_s[7], 50),
        "report_30d_ms": ms(report_s[30], 50),
        "baseline_raw_report_30d_ms": ms(raw_s, 50),
        "target_scrape_ms": 50,
        "target_report_ms": 2000,
        "met": max(scrape) <= 0.05 and worst_report <= 2.0,
    }


async def scrapes(work: Path, redis_url: str, rounds: int) -> tuple[list[float], list[float]]:
    peer = FakeAmi()  # the daemon serves HTTP once logged in to AMI; no Asterisk needed here
    await peer.start()
    http_port = free_port()
    env = {
        "SCREENER_AMI__PORT": str(peer.port),
        "SCREENER_AMI__SECRET": peer.secret,
        "SCREENER_REDIS__URL": redis_url,
        "SCREENER_REDIS__TIMEOUT": "30",
        "SCREENER_FLAG__SPOOL_DIR": str(work / "spool"),
        "SCREENER_HTTP__PORT": str(http_port),
        "SCREENER_AGI__PORT": str(free_port()),
        "SCREENER_SCREENING__LEARN_INTERVAL": "1",
        "SCREENER_NUMBERS__TIMEZONE": "UTC",
        "SCREENER_LOG__LEVEL": "WARNING",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "screener", "run", "--config", str(REPO / "deploy/screener.toml")],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "daemon.log", "wb"),  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/metrics", timeout=5
                ) as resp:
                    if b"screener_top_source_flags{" in resp.read():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((work / "daemon.log").read_text()[-3000:])
            await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        scrape = await loop.run_in_executor(None, scrape_times, http_port, rounds)
    finally:
        proc.terminate()
        proc.wait(10)
        await peer.close()
    registry = CollectorRegistry()
    Counter("bench_total", "one counter", registry=registry).inc()
    floor_port = free_port()
    server, thread = start_http_server(floor_port, addr="127.0.0.1", registry=registry)
    try:
        floor = await asyncio.get_running_loop().run_in_executor(
            None, scrape_times, floor_port, rounds
        )
    finally:
        server.shutdown()
        thread.join()
    return scrape, floor


async def raw_report_work(
    raw: aioredis.Redis, store: Store, today: date, period: int
) -> list[float]:
    k = store.keys
    days = [report.day_key(today - timedelta(days=i)) for i in range(period)]
    times = []
    for _ in range(3):
        t = time.perf_counter()
        async with raw.pipeline(transaction=False) as p:
            for d in days:
                p.hgetall(k.day_hours(d))
                p.hgetall(k.day_hotlines(d))
            p.zunionstore(k.scratch("bench"), [k.day_callers(d) for d in days])
            p.zrevrange(k.scratch("bench"), 0, 19, withscores=True)
            p.delete(k.scratch("bench"))
            await p.execute()
        times.append(time.perf_counter() - t)
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flags", type=int, default=10_000_000)
    parser.add_argument("--callers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="100x fewer flags and callers")
    a = parser.parse_args()
    if a.quick:
        a.flags, a.callers, a.rounds = 100_000, 10_000, 20
    result = asyncio.run(main(a.flags, a.callers, a.days, a.rounds))
    print(json.dumps(result))
