"""Call setup through the real Asterisk 22 under SIPp load: what screening on entry costs a
caller, against an AstDB blacklist lookup (target: screener p50 within 1.10x of AstDB).

Three dialplans, each under its own DID in the lab's ``hotline`` context, each ending in
``Answer(,i)``, a short ``Wait`` and ``Hangup`` (SIPp: INVITE -> 200 OK -> ACK, then Asterisk's
BYE):

* ``none``: no screening, answered at once;
* ``astdb``: a Gosub doing what FreePBX's ``app-blacklist-check`` does, one
  ``GotoIf(${DB_EXISTS(blacklist/${CALLERID(num)})}?...)``, with 100,000 AstDB entries (bulk-loaded
  by AMI ``DBPut`` pipelined on one connection);
* ``screener``: the shipped ``Gosub(screener-inbound,s,1(${EXTEN}))`` asking the real
  ``screener run`` daemon over FastAGI, with 100,000 exact-number block rules in a real
  redis-server (loaded through ``Store.add_rules``).

Two diagnostics split the screener's cost (``--no-breakdown`` drops them):

* ``screener_no_agi``: the shipped Gosub with ``SCREENER_AGI`` empty on the channel, i.e. its
  dialplan work without the FastAGI dialogue;
* ``screener_min_agi``: the shipped Gosub pointed at a minimal asyncio FastAGI server (read the
  environment, look the base64 caller up in an in-memory set of the listed numbers, one
  ``SET VARIABLE``, close): the floor of a FastAGI design in Python, without screener's fences,
  rules, Redis, metrics and logs.

Every call comes from a number on neither list, so every call is allowed and answered; before
measuring, one call from a listed number to each list must be refused (403), which proves the
lookups really run. Each round runs one SIPp batch per dialplan (``--calls`` calls at ``--rate``
calls/s), the order rotated between rounds so that drift touches every dialplan alike; a warm-up
batch per dialplan comes first and is not counted.

Call setup is INVITE sent -> 200 OK received per call, from SIPp's ``-trace_shortmsg`` log
(microsecond timestamps; SIPp's own response times tick at 4 ms). CPU per call is the process's
user+system time over the batch (``/proc/<pid>/stat``) divided by its calls. Prints a table and
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.ami_peer import percentile
from screener.rules import Origin, RuleContext, parse_rule
from screener.store import Store
from tests.lab import SCENARIOS, missing
from tests.lab.asterisk import AsteriskLab
from tests.lab.daemon import ScreenerDaemon
from tests.lab.net import free_block, free_port
from tests.lab.redis import RedisServer
from tests.lab.sipp import Sipp

TARGET_RATIO = 1.10
HOLD_SECONDS = 0.1  # Wait() between the answer and Asterisk's BYE
LISTED = "139{:08d}"  # the blacklist / block rules: 13900000000, 13900000001, ...
CALLER = "137{:08d}"  # the callers: on neither list


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    did: str
    label: str


PLANS = (
    Plan("none", "4009000001", "no screening"),
    Plan("astdb", "4009000002", "AstDB blacklist lookup"),
    Plan("screener", "4009000003", "screener (FastAGI + Redis)"),
    Plan("screener_no_agi", "4009000004", "  diagnostic: its dialplan, no AGI"),
    Plan("screener_min_agi", "4009000005", "  diagnostic: minimal FastAGI server"),
)
DIAGNOSTICS = ("screener_no_agi", "screener_min_agi")
BY_NAME = {p.name: p for p in PLANS}


def dialplan(min_agi_port: int) -> str:
    """The bench's extensions: exact DIDs added to ``[hotline]`` (they outrank its ``_X.``)."""
    wait_hangup = f" same => n,Wait({HOLD_SECONDS:g})\n same => n,Hangup()\n"
    answer = f" same => n,Answer(,i)\n{wait_hangup}"
    d = {p.name: p.did for p in PLANS}
    return (
        "; bench/call_setup.py: one DID per dialplan under test\n"
        "[hotline]\n"
        f"exten => {d['none']},1,Answer(,i)\n{wait_hangup}"
        f"exten => {d['astdb']},1,Gosub(bench-blacklist-check,s,1())\n{answer}"
        f"exten => {d['screener']},1,Gosub(screener-inbound,s,1(${{EXTEN}}))\n{answer}"
        f"exten => {d['screener_no_agi']},1,Set(SCREENER_AGI=)\n"
        f" same => n,Gosub(screener-inbound,s,1(${{EXTEN}}))\n{answer}"
        f"exten => {d['screener_min_agi']},1,"
        f"Set(SCREENER_AGI=agi://127.0.0.1:{min_agi_port}/screen)\n"
        f" same => n,Gosub(screener-inbound,s,1(${{EXTEN}}))\n{answer}"
        "\n"
        "; FreePBX's app-blacklist-check, with the lookup spelled as DB_EXISTS\n"
        "[bench-blacklist-check]\n"
        "exten => s,1,GotoIf(${DB_EXISTS(blacklist/${CALLERID(num)})}?blacklisted)\n"
        " same => n,Set(CALLED_BLACKLIST=1)\n"
        " same => n,Return()\n"
        " same => n(blacklisted),Hangup(21)\n"
    )


# -- loading the lists ---------------------------------------------------------------------------


async def load_astdb(lab: AsteriskLab, numbers: Sequence[str]) -> float:
    """``DBPut blacklist/<number> 1`` for every number, pipelined on one AMI connection.

    Returns the seconds it took. Raises RuntimeError if any put failed.
    """
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", lab.ami_port)
    try:
        await reader.readline()  # banner
        s = lab.secrets
        writer.write(
            f"Action: Login\r\nUsername: {s.lab_user}\r\nSecret: {s.lab_secret}\r\n"
            "Events: off\r\n\r\n".encode()
        )
        login = await reader.readuntil(b"\r\n\r\n")
        if b"Response: Success" not in login:
            raise RuntimeError(f"AMI login failed: {login!r}")

        async def count_replies() -> int:
            ok = failed = 0
            pending = b""
            while ok + failed < len(numbers):
                chunk = await reader.read(1 << 16)
                if not chunk:
                    raise RuntimeError("AMI closed during the DBPut load")
                pending += chunk
                done, _, pending = pending.rpartition(b"\r\n\r\n")
                ok += done.count(b"Response: Success")
                failed += done.count(b"Response: Error")
            return failed

        replies = asyncio.create_task(count_replies())
        for start in range(0, len(numbers), 5000):
            writer.write(
                b"".join(
                    b"Action: DBPut\r\nFamily: blacklist\r\nKey: %s\r\nVal: 1\r\n\r\n" % n.encode()
                    for n in numbers[start : start + 5000]
                )
            )
            await writer.drain()
        failed = await asyncio.wait_for(replies, 120)
        if failed:
            raise RuntimeError(f"{failed} AMI DBPut actions failed")
    finally:
        writer.close()
    return time.perf_counter() - started


async def load_rules(redis_url: str, numbers: Sequence[str], chunk: int = 20_000) -> float:
    """One exact-number block rule (treatment ``reject``) per number, as an import would add them.

    Returns the seconds it took (parsing included).
    """
    started = time.perf_counter()
    ctx = RuleContext(
        region="CN",  # deploy/screener.toml's numbers.default_region, which the daemon uses
        zone=ZoneInfo("UTC"),
        now=time.time(),
        actor="bench",
        origin=Origin.IMPORT,
    )
    store = Store.from_url(redis_url, timeout=60)
    try:
        for i in range(0, len(numbers), chunk):
            rules = [
                parse_rule({"value": n, "treatment": "reject", "reason": "bench call_setup"}, ctx)
                for n in numbers[i : i + chunk]
            ]
            await store.add_rules(rules, by="bench", action="import", now=ctx.now)
        counts = await store.rule_counts()
    finally:
        await store.aclose()
    stored = sum(counts.values())
    if stored != len(numbers):
        raise RuntimeError(f"{stored} rules in Redis, expected {len(numbers)}")
    return time.perf_counter() - started


def astdb_count(lab: AsteriskLab) -> int:
    out = lab.cli(
        "database query \"SELECT COUNT(*) FROM astdb WHERE key LIKE '/blacklist/%'\"", timeout=30
    )
    digits = [w for w in out.split() if w.isdigit()]
    return int(digits[0]) if digits else -1


# A FastAGI server reduced to what a verdict needs: argv = port, count, LISTED.
MIN_AGI_SERVER = r"""
import asyncio, base64, sys
port, count, listed_format = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
listed = {listed_format.format(i) for i in range(count)}
async def session(reader, writer):
    try:
        env = {}
        while (line := (await reader.readline()).strip()):
            key, _, value = line.decode(errors="replace").partition(": ")
            env[key] = value
        if not env:
            return  # a probe
        number = base64.b64decode(env.get("agi_arg_1", "")).decode(errors="replace")
        verdict = "block/reject/-/-" if number in listed else "allow/-/-/-"
        writer.write(b'SET VARIABLE SCREENER_SCREEN "%s"\n' % verdict.encode())
        await writer.drain()
        await reader.readline()
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(session, "127.0.0.1", port)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def start_min_agi(port: int, entries: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MIN_AGI_SERVER, str(port), str(entries), LISTED],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the minimal FastAGI server exited {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the minimal FastAGI server is not listening")


# -- measuring -----------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process and all its threads, dead ones included."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def setup_times(shortmsg: Path) -> tuple[list[float], int]:
    """INVITE sent -> first 200 OK received (ms) for each answered call, and the calls sent.

    A line of SIPp's short message trace: date, time, epoch.micros, S|R, Call-ID, CSeq, first
    line. The first INVITE of a call counts (a retransmission would be part of its setup time).
    """
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    for line in shortmsg.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 7 or not parts[5].endswith(" INVITE"):
            continue
        stamp, direction, call_id, first = float(parts[2]), parts[3], parts[4], parts[6]
        if direction == "S" and first.startswith("INVITE "):
            sent.setdefault(call_id, stamp)
        elif direction == "R" and first.startswith("SIP/2.0 200"):
            answered.setdefault(call_id, stamp)
    times = [(answered[c] - t) * 1000 for c, t in sent.items() if c in answered]
    return times, len(sent)


@dataclass(slots=True)
class Batch:
    plan: str
    round: int
    times_ms: list[float]
    sent: int
    expected: int
    wall_s: float
    cpu_s: dict[str, float]
    sipp_rc: int


@dataclass(slots=True)
class Bench:
    lab: AsteriskLab
    work: Path
    rate: float
    pids: dict[str, int | None] = field(default_factory=dict)
    _next_caller: int = 0
    _batches: int = 0

    def callers(self, count: int) -> list[str]:
        first, self._next_caller = self._next_caller, self._next_caller + count
        return [CALLER.format(i) for i in range(first, first + count)]

    def batch(self, plan: Plan, calls: int, round_no: int) -> Batch:
        """One SIPp run: ``calls`` calls to ``plan``'s DID at ``self.rate`` calls/s."""
        self._batches += 1
        workdir = self.work / f"{self._batches:03d}-{plan.name}"
        workdir.mkdir(parents=True)
        shutil.copyfile(SCENARIOS / "caller_load.xml", workdir / "caller_load.xml")
        (workdir / "callers.csv").write_text(
            "SEQUENTIAL\n" + "".join(f"{n};\n" for n in self.callers(calls))
        )
        argv = [
            "sipp", f"127.0.0.1:{self.lab.sip_port}", "-sf", "caller_load.xml",
            "-s", plan.did, "-inf", "callers.csv",
            "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(self.lab.ports.callers[0]),
            "-cp", str(free_port()), "-mp", str(free_block(4, align=2)),
            "-r", f"{self.rate:g}", "-rp", "1000", "-m", str(calls), "-l", "2000",
            "-nostdin", "-aa", "-timeout", f"{calls / self.rate + 60:.0f}s", "-timeout_error",
            "-trace_shortmsg", "-shortmessage_file", "short.log",
            "-trace_err", "-error_file", "errors.log",
        ]  # fmt: skip
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        began = time.monotonic()
        with (workdir / "stderr.log").open("wb") as stderr:
            done = subprocess.run(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=calls / self.rate + 120,
                check=False,
            )
        wall = time.monotonic() - began
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in self.pids.items()}
        times, sent = setup_times(workdir / "short.log")
        self.drain()
        return Batch(plan.name, round_no, times, sent, calls, wall, cpu, done.returncode)

    def drain(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.lab.channel_count() and time.monotonic() < deadline:
            time.sleep(0.1)

    def refused(self, plan: Plan, number: str) -> int | None:
        """One call from a listed number: the final response (403 expected)."""
        self._batches += 1
        sipp = Sipp(
            "caller_refused",
            self.work / f"{self._batches:03d}-{plan.name}-listed",
            local_port=self.lab.ports.callers[1],
            remote=f"127.0.0.1:{self.lab.sip_port}",
            service=plan.did,
            csv_fields=[number, "Listed Caller"],
            timeout_s=10,
        ).start()
        sipp.wait(20)
        return sipp.final_response()


# -- reporting -----------------------------------------------------------------------------------


def progress(b: Batch) -> None:
    p50, p99 = (
        (statistics.median(b.times_ms), percentile(b.times_ms, 99)) if b.times_ms else (0.0, 0.0)
    )
    print(
        f"round {b.round} {b.plan:16} {len(b.times_ms)}/{b.expected} answered, p50 {p50:.3f} ms"
        f", p99 {p99:.3f} ms, {b.wall_s:.1f} s, sipp exit {b.sipp_rc}",
        flush=True,
    )


def summary(batches: Iterable[Batch], plan: str) -> dict[str, Any]:
    mine = [b for b in batches if b.plan == plan]
    times = [t for b in mine for t in b.times_ms]
    calls = sum(b.expected for b in mine)
    out: dict[str, Any] = {
        "calls": calls,
        "sent": sum(b.sent for b in mine),
        "failed": calls - len(times),
        "p50_ms": round(statistics.median(times), 3) if times else None,
        "p90_ms": round(percentile(times, 90), 3) if times else None,
        "p99_ms": round(percentile(times, 99), 3) if times else None,
        "mean_ms": round(statistics.fmean(times), 3) if times else None,
        "round_p50_ms": [round(statistics.median(b.times_ms), 3) for b in mine if b.times_ms],
    }
    for proc in mine[0].cpu_s if mine else {}:
        out[f"{proc}_cpu_ms_per_call"] = round(sum(b.cpu_s[proc] for b in mine) / calls * 1000, 3)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def round_ratios(batches: list[Batch], top: str, bottom: str) -> list[float]:
    """The p50 ratio within each round (the spread shows how much drift there was)."""
    out = []
    for r in sorted({b.round for b in batches}):
        a = [b for b in batches if b.round == r and b.plan == top and b.times_ms]
        z = [b for b in batches if b.round == r and b.plan == bottom and b.times_ms]
        if a and z:
            out.append(
                round(statistics.median(a[0].times_ms) / statistics.median(z[0].times_ms), 3)
            )
    return out


def _ms(value: float | None, width: int = 8) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"


def report(result: dict[str, Any], plans: Sequence[Plan]) -> None:
    s = result["dialplans"]
    print(
        f"call setup, INVITE -> 200 OK (ms): {result['rounds']} rounds x {result['calls']} calls "
        f"per dialplan at {result['rate']:g} calls/s, {result['entries']:,} entries per list"
    )
    head = f"{'dialplan':36}{'calls':>7}{'fail':>6}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}"
    print(head + f"{'CPU ms/call: Asterisk':>23}{'AGI side':>10}")
    for p in plans:
        d = s[p.name]
        times = "".join(_ms(d[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"))
        agi_side = {
            "screener": d["daemon_cpu_ms_per_call"] + d["redis_cpu_ms_per_call"],
            "screener_min_agi": d.get("min_agi_cpu_ms_per_call", 0.0),
        }.get(p.name)
        print(
            f"{p.label:36}{d['calls']:>7}{d['failed']:>6}{times}"
            f"{d['asterisk_cpu_ms_per_call']:>23.3f}{_ms(agi_side, 10)}"
        )
    print("p50 per round: " + "; ".join(f"{p.name} {s[p.name]['round_p50_ms']}" for p in plans))
    sc = s["screener"]
    print(
        f"AGI side per screener call: daemon CPU {sc['daemon_cpu_ms_per_call']:.3f} ms, "
        f"redis CPU {sc['redis_cpu_ms_per_call']:.3f} ms, daemon decision (mean, "
        f"screener_screen_seconds) {result['daemon_decision_mean_ms']} ms"
    )
    met = "met" if result["target_met"] else "NOT met"
    print(
        f"screener/AstDB p50 {result['ratio_screener_astdb_p50']} (p99 "
        f"{result['ratio_screener_astdb_p99']}; per round {result['ratio_screener_astdb_rounds']})"
        f", target <= {TARGET_RATIO}: {met}"
    )
    print(
        f"AstDB/none p50 {result['ratio_astdb_none_p50']} (p99 {result['ratio_astdb_none_p99']})"
        f"; load average {result['loadavg_start']} -> {result['loadavg_end']}, "
        f"wall {result['wall_s']} s"
    )


# -- the run -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    batches: list[Batch]
    metrics: dict[str, float]
    astdb_load_s: float
    rules_load_s: float


def measure(args: argparse.Namespace, plans: Sequence[Plan], work: Path) -> Outcome:
    """Start the lab, load both lists, check that listed callers are refused, then the rounds."""
    listed = [LISTED.format(i) for i in range(args.entries)]
    min_agi_port = free_port()
    redis = RedisServer(work / "redis")
    lab = AsteriskLab(
        extra_dialplan=dialplan(min_agi_port),
        rtp_ports=args.rtp_ports,
        verbose=args.asterisk_verbose,
    )
    daemon = ScreenerDaemon.on_lab(
        work / "screener", lab, redis.url, env={"SCREENER_LOG__LEVEL": args.log_level}
    )
    min_agi: subprocess.Popen[bytes] | None = None
    try:
        redis.start()
        lab.start()
        astdb_s = asyncio.run(load_astdb(lab, listed))
        if (n := astdb_count(lab)) != args.entries:
            raise RuntimeError(f"AstDB holds {n} blacklist entries, expected {args.entries}")
        rules_s = asyncio.run(load_rules(redis.url, listed))
        daemon.start()
        bench = Bench(lab, work / "sipp", args.rate)
        bench.pids = {"asterisk": lab.pid, "daemon": daemon.pid, "redis": redis.pid}
        if any(p.name == "screener_min_agi" for p in plans):
            min_agi = start_min_agi(min_agi_port, args.entries)
            bench.pids["min_agi"] = min_agi.pid
        for name in ("astdb", "screener", "screener_min_agi"):
            if name in {p.name for p in plans}:
                code = bench.refused(BY_NAME[name], listed[len(listed) // 2])
                if code != 403:
                    raise RuntimeError(f"a listed caller to {name} got {code}, not 403")
        for plan in plans:
            bench.batch(plan, args.warmup, 0)
        batches: list[Batch] = []
        for r in range(1, args.rounds + 1):
            shift = (r - 1) % len(plans)
            for plan in [*plans[shift:], *plans[:shift]]:
                batches.append(bench.batch(plan, args.calls, r))
                progress(batches[-1])
        metrics = {
            "screens": daemon.metric("screener_screens_total"),
            "allowed": daemon.metric("screener_screens_total", {"verdict": "allow"}),
            "failopen": daemon.metric("screener_screen_failopen_total"),
            "decided": daemon.metric("screener_screen_seconds_count"),
            "decide_s": daemon.metric("screener_screen_seconds_sum"),
        }
    finally:
        if min_agi is not None:
            min_agi.kill()
            min_agi.wait()
        daemon.stop()
        lab.cleanup()
        redis.stop()
    return Outcome(batches, metrics, astdb_s, rules_s)


def run(args: argparse.Namespace) -> dict[str, Any]:
    problems = missing()
    if problems:
        raise SystemExit("lab not installed: " + "; ".join(problems))
    plans = [p for p in PLANS if args.breakdown or p.name not in DIAGNOSTICS]
    began = time.monotonic()
    load_start = loadavg()
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="screener-bench-")))
        else:
            work = args.keep
            work.mkdir(parents=True, exist_ok=False)
        out = measure(args, plans, work)
    s = {p.name: summary(out.batches, p.name) for p in plans}
    result: dict[str, Any] = {
        "benchmark": "call_setup",
        "calls": args.calls,
        "rounds": args.rounds,
        "rate": args.rate,
        "entries": args.entries,
        "hold_s": HOLD_SECONDS,
        "dialplans": s,
    }
    for p in plans:
        for key in ("p50_ms", "p90_ms", "p99_ms", "failed", "asterisk_cpu_ms_per_call"):
            result[f"{p.name}_{key}"] = s[p.name][key]
    for top, bottom in (("screener", "astdb"), ("astdb", "none")):
        for q in ("p50", "p99"):
            result[f"ratio_{top}_{bottom}_{q}"] = ratio(s[top][f"{q}_ms"], s[bottom][f"{q}_ms"])
        result[f"ratio_{top}_{bottom}_rounds"] = round_ratios(out.batches, top, bottom)
    r50 = result["ratio_screener_astdb_p50"]
    m = out.metrics
    result |= {
        "target_ratio": TARGET_RATIO,
        "target_basis": "screener p50 / astdb p50",
        "target_met": r50 is not None and r50 <= TARGET_RATIO,
        "screener_daemon_cpu_ms_per_call": s["screener"]["daemon_cpu_ms_per_call"],
        "screener_redis_cpu_ms_per_call": s["screener"]["redis_cpu_ms_per_call"],
        "daemon_decision_mean_ms": (
            round(m["decide_s"] / m["decided"] * 1000, 3) if m["decided"] else None
        ),
        "daemon_screens": int(m["screens"]),
        # every screener call is allowed: the warm-up and the measured calls
        "daemon_allowed_vs_calls": [int(m["allowed"]), args.warmup + args.calls * args.rounds],
        "daemon_failopen": int(m["failopen"]),
        "astdb_load_s": round(out.astdb_load_s, 2),
        "rules_load_s": round(out.rules_load_s, 2),
        "asterisk_verbose": args.asterisk_verbose,
        "daemon_log_level": args.log_level,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "cores": os.cpu_count(),
        "wall_s": round(time.monotonic() - began, 1),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--calls", type=int, help="calls per dialplan in each round (1000)")
    parser.add_argument("--rate", type=float, help="calls per second (100)")
    parser.add_argument("--rounds", type=int, help="rounds (3)")
    parser.add_argument("--warmup", type=int, help="uncounted calls per dialplan first (100)")
    parser.add_argument("--entries", type=int, default=100_000, help="entries in each list")
    parser.add_argument(
        "--quick", action="store_true", help="a short run (150 calls, 2 rounds, 30 warm-up)"
    )
    parser.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the two diagnostic dialplans (no AGI; a minimal FastAGI server)",
    )
    parser.add_argument(
        "--asterisk-verbose",
        type=int,
        default=3,
        help="Asterisk's verbosity (3, the lab's: every dialplan step in the full log; 0: none)",
    )
    parser.add_argument("--log-level", default="INFO", help="the daemon's (shipped: INFO)")
    parser.add_argument(
        "--keep", type=Path, help="work in this new directory and keep it (SIPp traces, logs)"
    )
    parser.add_argument("--rtp-ports", type=int, default=2000, help="Asterisk's RTP port range")
    args = parser.parse_args()
    defaults = (150, 100.0, 2, 30) if args.quick else (1000, 100.0, 3, 100)
    for name, value in zip(("calls", "rate", "rounds", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    result = run(args)
    report(result, [p for p in PLANS if p.name in result["dialplans"]])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
