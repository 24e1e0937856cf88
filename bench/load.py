"""Sustained load through the real stack: SIPp callers at ``--rate`` calls/s for ``--minutes``
into Asterisk 22, every call screened on entry by the real ``screener run`` daemon (FastAGI,
real redis-server holding ``--rules`` block rules), every allowed call answered by an agent, and a
deterministic ``--flag-share`` of them flagged by the agent pressing ``*9`` (the real feature-key
path: UserEvent -> daemon verification -> caller to the analysis queue, agent to wrap-up ->
flag in Redis). Targets: zero failed screens, zero lost flags, memory flat.

The parts (``tests/lab``): one SIPp UAC (``tests/scenarios/caller_load.xml``) places the calls
to one DID; the dialplan runs the shipped ``Gosub(screener-inbound,...)``, then ``Dial()`` with
the shipped pre-dial handler ``b(screener-agent-predial^s^1)`` (the flag key on every agent leg)
to one of two SIPp UAS agents in load mode (no ``-m``: any number of concurrent calls): callers
``137...`` go to ``agent2`` (``agent_load.xml``: answers, holds ``--hold-ms``, hangs up), callers
``138...`` to ``agent1`` (``agent.xml``: answers, talks ``--dtmf-delay-ms``, sends ``*9`` as
RFC 4733 from a pcap, waits for the wrap-up's BYE). Call ``i`` is flagged when
``floor((i+1)*share) > floor(i*share)``, so the expected flags are known exactly. Every call
comes from a new number (the worst case for per-number caches), or with ``--distinct-callers N``
the calls cycle through N numbers. A second SIPp UAC adds ``--blocked-rate`` calls/s from
listed numbers (``caller_refused.xml``, 403 expected), counted separately: screening decides
under load. ``SCREENER_ANALYSIS_SECONDS`` is set to ``--analysis-seconds`` (AMI ``Setvar``) so
that flagged callers leave the analysis queue quickly and concurrency stays bounded.

Measured: SIPp call counts (attempted, completed, failed) for callers and agents, and the rate
SIPp really held (first to last INVITE); the daemon's screens (``screener_screens_total`` by
verdict) against the calls, fail-opens (``screener_screen_failopen_total``), AGI error sessions
(``screener_agi_sessions_total``), and on the Asterisk side: after the Gosub, a call whose
``AGISTATUS`` is not ``SUCCESS`` or that got no verdict writes one AstDB entry (family
``loadbench``), counted at the end; flags expected vs recorded in Redis (the caller numbers of
the flag records against the flagged calls: none missing, no extra or duplicate record, no flag
left in the spool); RSS of the daemon, Redis and Asterisk from ``/proc`` every
``--sample-seconds`` (start, end, max, and the least-squares slope per minute over the second
half of the load); CPU per process (``/proc/<pid>/stat``); INVITE -> 200 OK call setup (p50, p99)
from SIPp's ``-trace_shortmsg`` (microseconds).

Memory flat: the daemon's and Asterisk's RSS slope over the second half at most
``--flat-mib-per-min``; Redis keeps every flag (``retention_days``) so its data grows by design:
its ``used_memory`` beyond the keyspace's own bytes (``MEMORY USAGE`` of every key) must stay
under ``--redis-overhead-mib``. Only judged for loads of ``--memory-min-minutes`` or more
(Asterisk's RSS grows for its first minute under load before it levels off).

Peer baseline, same run (``--baseline-minutes``, 0 to skip): the same load with screening off
(global ``SCREENER_AGI`` emptied by AMI ``Setvar``, which the shipped dialplan supports): call
setup and CPU per call without the FastAGI dialogue. Flags still work then and are checked too.

Prints a summary and ends with one JSON line (``pass`` and one boolean per criterion; ``null``
for a criterion not judged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.ami_peer import percentile
from bench.call_setup import cpu_seconds, load_rules, loadavg, setup_times
from screener.keys import KeySpace
from tests.lab import SCENARIOS, missing
from tests.lab.ami import AmiObserver
from tests.lab.asterisk import AsteriskError, AsteriskLab
from tests.lab.daemon import ScreenerDaemon
from tests.lab.net import free_block, free_port
from tests.lab.redis import RedisServer
from tests.lab.rtp import write_dtmf_pcap, write_pcmu_pcap

DID_LOAD = "4009100001"
NORMAL = "137{:08d}"  # allowed, routed to the agent that talks and hangs up
FLAGGED = "138{:08d}"  # allowed, routed to the agent that presses *9
LISTED = "139{:08d}"  # the block rules (treatment reject); blocked callers come from here
FLAG_AGENT, TALK_AGENT = "agent1", "agent2"
PREDIAL = "b(screener-agent-predial^s^1)"
MIB = 1024 * 1024
SIPP_FAILURES = (
    "FailedCall(C)",
    "FailedCallRejected(C)",
    "FailedCmdNotSent(C)",
    "FailedMaxUDPRetrans(C)",
    "FailedUnexpectedMessage(C)",
    "FailedTimeoutOnRecv(C)",
    "FailedTimeoutOnSend(C)",
    "FailedRegexpDoesntMatch(C)",
    "FailedRegexpHdrNotFound(C)",
    "FailedOutboundCongestion(C)",
)


def dialplan() -> str:
    """The load DID: screening, an Asterisk-side record of any call without a verdict, then the
    agent chosen by the caller number (``138...`` -> the flagging agent)."""
    return (
        "; bench/load.py\n"
        "[hotline]\n"
        f"exten => {DID_LOAD},1,Gosub(screener-inbound,s,1(${{EXTEN}},load))\n"
        ' same => n,ExecIf($["${SCREENER_AGI}" != "" & ("${AGISTATUS}" != "SUCCESS"'
        ' | "${SCREENER_SCREEN}" = "")]'
        "?Set(DB(loadbench/${UNIQUEID})=${AGISTATUS}-${SCREENER_SCREEN}))\n"
        ' same => n,GotoIf($["${CALLERID(num):0:3}" = "138"]?flag)\n'
        f" same => n,Dial(PJSIP/{TALK_AGENT},30,{PREDIAL})\n"
        " same => n,Hangup()\n"
        f" same => n(flag),Dial(PJSIP/{FLAG_AGENT},30,{PREDIAL})\n"
        " same => n,Hangup()\n"
    )


def is_flagged(i: int, share: float) -> bool:
    """Call ``i`` (0-based) is flagged: exactly ``floor(n * share)`` of the first ``n`` are."""
    eps = 1e-9
    return int((i + 1) * share + eps) > int(i * share + eps)


def caller_numbers(first: int, count: int, share: float, distinct: int = 0) -> list[str]:
    """The From numbers of calls ``first .. first+count-1``: a new number for every call, or with
    ``distinct`` the calls cycle through that many numbers (each always or never flagged)."""
    out = []
    for i in range(first, first + count):
        j = i % distinct if distinct else i
        out.append((FLAGGED if is_flagged(j, share) else NORMAL).format(j))
    return out


# -- SIPp in load mode ---------------------------------------------------------------------------


@dataclass(slots=True)
class LoadSipp:
    """One SIPp process with its own work dir, stat CSV (``-trace_stat``) and error log."""

    name: str
    workdir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ended: float | None = None
    cpu_s: float = 0.0

    @property
    def stat_file(self) -> Path:
        return self.workdir / "stat.csv"

    @property
    def short_log(self) -> Path:
        return self.workdir / "short.log"

    def start(self) -> LoadSipp:
        (self.workdir / "argv.txt").write_text(" ".join(self.argv) + "\n")
        with (self.workdir / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.started = time.monotonic()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def wait(self, timeout: float) -> int:
        """Wait for the exit (SIGKILL after ``timeout``), reading its CPU time until then."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.cpu_s = cpu_seconds(self.proc.pid) or self.cpu_s
            time.sleep(0.5)
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self.ended = self.ended or time.monotonic()
        return code

    def quit(self, timeout: float = 15.0) -> int:
        """SIGUSR1 (SIPp's soft exit: no new calls, end when the open ones are done)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stats(self) -> dict[str, int]:
        """The cumulative counters of the last line of the stat CSV."""
        try:
            lines = [ln for ln in self.stat_file.read_text().splitlines() if ln.strip()]
        except OSError:
            return {}
        if len(lines) < 2:
            return {}
        out = {}
        for key, value in zip(lines[0].split(";"), lines[-1].split(";"), strict=False):
            if key.endswith("(C)") or key in ("TotalCallCreated", "CurrentCall"):
                with contextlib.suppress(ValueError):
                    out[key] = int(value)
        return out


def sipp_common(local_port: int, workdir: Path, scenario: str) -> list[str]:
    shutil.copyfile(SCENARIOS / f"{scenario}.xml", workdir / f"{scenario}.xml")
    return [
        "-sf", f"{scenario}.xml", "-i", "127.0.0.1", "-mi", "127.0.0.1",
        "-p", str(local_port), "-cp", str(free_port()), "-mp", str(free_block(4, align=2)),
        "-nostdin", "-aa", "-recv_timeout", "60000",
        "-trace_err", "-error_file", "errors.log",
        "-trace_stat", "-stf", "stat.csv", "-fd", "1",
    ]  # fmt: skip


def start_agent(
    lab: AsteriskLab, base: Path, agent: str, *, flags: bool, pause_ms: int
) -> LoadSipp:
    workdir = base / agent
    workdir.mkdir(parents=True)
    scenario = "agent" if flags else "agent_load"
    argv = ["sipp", *sipp_common(lab.agent_port(agent), workdir, scenario)]
    argv += ["-d", str(pause_ms), "-key", "agent", agent]
    if flags:
        write_pcmu_pcap(workdir / "audio.pcap", 0.5)
        write_dtmf_pcap(workdir / "dtmf.pcap", "*9")
        argv += ["-trace_shortmsg", "-shortmessage_file", "short.log"]
    return LoadSipp(agent, workdir, argv).start()


def start_callers(
    lab: AsteriskLab,
    workdir: Path,
    numbers: list[str],
    rate: float,
    *,
    refused: bool = False,
) -> LoadSipp:
    """``len(numbers)`` calls at ``rate`` calls/s to the load DID, one number per call."""
    workdir.mkdir(parents=True)
    scenario = "caller_refused" if refused else "caller_load"
    port = lab.ports.callers[1 if refused else 0]
    (workdir / "callers.csv").write_text(
        "SEQUENTIAL\n" + "".join(f"{n};Load Caller;\n" for n in numbers)
    )
    duration = len(numbers) / rate
    argv = ["sipp", f"127.0.0.1:{lab.sip_port}", *sipp_common(port, workdir, scenario)]
    argv += [
        "-s", DID_LOAD, "-inf", "callers.csv",
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(len(numbers)), "-l", "5000",
        "-timeout", f"{duration + 180:.0f}s", "-timeout_error",
        "-trace_shortmsg", "-shortmessage_file", "short.log",
    ]  # fmt: skip
    return LoadSipp(workdir.name, workdir, argv).start()


def agent_release_ms(short_log: Path, pause_ms: int) -> list[float]:
    """Flagging agent: ACK received -> the wrap-up's BYE received, minus the talk before ``*9``
    (so: the key's RTP, feature detection, the daemon, the Redirect, the wrap-up beep)."""
    acks: dict[str, float] = {}
    out = []
    with contextlib.suppress(OSError):
        for line in short_log.read_text(errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 7 or parts[3] != "R":
                continue
            if parts[6].startswith("ACK "):
                acks.setdefault(parts[4], float(parts[2]))
            elif parts[6].startswith("BYE ") and parts[4] in acks:
                out.append((float(parts[2]) - acks.pop(parts[4])) * 1000 - pause_ms)
    return out


def invite_span(short_log: Path) -> tuple[float, float, int]:
    """First and last INVITE sent (epoch seconds) and how many: the rate SIPp really held."""
    stamps = []
    with contextlib.suppress(OSError):
        for line in short_log.read_text(errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 7 and parts[3] == "S" and parts[6].startswith("INVITE "):
                stamps.append(float(parts[2]))
    return (min(stamps), max(stamps), len(stamps)) if stamps else (0.0, 0.0, 0)


# -- observation ---------------------------------------------------------------------------------


def rss_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(slots=True)
class Sample:
    at: float
    rss: dict[str, int]
    cpu: dict[str, float]
    redis_used: int
    channels: int
    load1: float


class Sampler(threading.Thread):
    """RSS and CPU of the watched processes, Redis ``used_memory`` and Asterisk's channel count,
    every ``interval`` seconds, until ``stop()``."""

    def __init__(
        self, pids: dict[str, int | None], lab: AsteriskLab, redis_url: str, interval: float
    ):
        super().__init__(daemon=True, name="load-sampler")
        self.pids = pids
        self.lab = lab
        self.client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        self.interval = interval
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def sample(self) -> Sample:
        try:
            used = int(self.client.info("memory")["used_memory"])
        except redis.RedisError:
            used = -1
        try:
            channels = self.lab.channel_count()
        except (AsteriskError, ValueError):  # a busy CLI must not end the sampling
            channels = -1
        return Sample(
            at=time.monotonic(),
            rss={name: rss_bytes(pid) for name, pid in self.pids.items()},
            cpu={name: cpu_seconds(pid) for name, pid in self.pids.items()},
            redis_used=used,
            channels=channels,
            load1=loadavg(),
        )

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            self.samples.append(self.sample())
            next_at += self.interval
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.samples.append(self.sample())
        self.client.close()


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 3:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 60 if den else None


def memory_report(samples: list[Sample], name: str, t0: float, t1: float) -> dict[str, Any]:
    """RSS of ``name`` over the load ``[t0, t1]``: start, end, max (MiB) and the slope of the
    second half (MiB/min)."""
    window = [s for s in samples if t0 - 1 <= s.at <= t1 + 1 and s.rss.get(name)]
    if not window:
        return {}
    half = t0 + (t1 - t0) / 2
    second = [(s.at - t0, s.rss[name] / MIB) for s in window if s.at >= half]
    slope = slope_per_min(second)
    return {
        "start_mib": round(window[0].rss[name] / MIB, 1),
        "end_mib": round(window[-1].rss[name] / MIB, 1),
        "max_mib": round(max(s.rss[name] for s in window) / MIB, 1),
        "slope_2nd_half_mib_per_min": round(slope, 3) if slope is not None else None,
        "samples": len(window),
    }


MetricSnap = list[tuple[str, dict[str, str], float]]


def metrics_snapshot(daemon: ScreenerDaemon) -> MetricSnap:
    _, text = daemon.request("GET", "/metrics")
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def msum(snap: MetricSnap, name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in snap if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def mdelta(before: MetricSnap, after: MetricSnap, name: str, **labels: str) -> int:
    return round(msum(after, name, **labels) - msum(before, name, **labels))


def by_label(snap: MetricSnap, name: str, label: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for n, lab, v in snap:
        if n == name and v:
            out[lab.get(label, "")] += round(v)
    return dict(out)


async def ami_setvar(lab: AsteriskLab, variable: str, value: str) -> None:
    """Set a global dialplan variable through AMI (no channel)."""
    ami = AmiObserver(lab.ami_port, lab.secrets.lab_user, lab.secrets.lab_secret, events=False)
    await ami.connect()
    try:
        reply = await ami.action({"Action": "Setvar", "Variable": variable, "Value": value})
        if reply.response != "Success":
            raise RuntimeError(f"Setvar {variable} failed: {reply}")
    finally:
        await ami.close()


def astdb_failures(lab: AsteriskLab) -> list[str]:
    """The AstDB entries the load dialplan wrote for calls without a verdict."""
    out = lab.cli("database show loadbench", timeout=30)
    return [ln.strip() for ln in out.splitlines() if ln.strip().startswith("/loadbench/")]


def redis_flags(url: str) -> list[str]:
    """The caller number (raw, as received) of every flag record in Redis."""
    keys = KeySpace("screener")
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30)
    try:
        ids = [str(i) for i in client.zrange(keys.flags, 0, -1)]
        numbers = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            for raw in client.mget([keys.flag(i) for i in chunk]):
                numbers.append(json.loads(raw)["caller"]["raw"] if raw else "<missing record>")
        return numbers
    finally:
        client.close()


def redis_info(url: str) -> dict[str, int]:
    """``used_memory``, the key count and the bytes the keyspace itself holds (the sum of
    ``MEMORY USAGE ... SAMPLES 0`` over every key): growth of ``used_memory`` beyond the
    keyspace's is memory Redis holds for something other than data."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=60)
    try:
        data = 0
        batch: list[str] = []
        for key in [*client.scan_iter(count=1000), None]:
            if key is not None:
                batch.append(key)
            if batch and (key is None or len(batch) == 1000):
                pipe = client.pipeline(transaction=False)
                for k in batch:
                    pipe.memory_usage(k, samples=0)
                data += sum(int(n or 0) for n in pipe.execute())
                batch = []
        return {
            "used_memory": int(client.info("memory")["used_memory"]),
            "keys": int(client.dbsize()),
            "data": data,
        }
    finally:
        client.close()


def log_summary(daemon: ScreenerDaemon) -> dict[str, Any]:
    """Levels and AGI session outcomes counted in the daemon's log."""
    levels: Counter[str] = Counter()
    agi: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    for line in daemon.logs().splitlines():
        for level in ("WARNING", "ERROR", "CRITICAL"):
            if f" {level} " in line:
                levels[level] += 1
        if "agi session " in line and "outcome=" in line:
            agi[line.split("outcome=", 1)[1].split()[0]] += 1
        elif "flag outcome=" in line:
            flags[line.split("flag outcome=", 1)[1].split()[0]] += 1
    return {"levels": dict(levels), "agi_outcomes": dict(agi), "flag_outcomes": dict(flags)}


# -- one load phase ------------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    name: str
    rate: float
    seconds: float
    calls: int
    flagged_numbers: Counter[str]
    blocked_calls: int
    caller: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)
    caller_rc: int = -1
    blocked_rc: int | None = None
    setup_ms: list[float] = field(default_factory=list)
    held_rate: float = 0.0
    wall_s: float = 0.0
    t0: float = 0.0
    t1: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    metrics_before: MetricSnap = field(default_factory=list)
    metrics_after: MetricSnap = field(default_factory=list)
    drain_s: float = 0.0


@dataclass(slots=True)
class Rig:
    """The running lab, and the phases run on it (caller numbers never repeat across them)."""

    lab: AsteriskLab
    daemon: ScreenerDaemon
    work: Path
    args: argparse.Namespace
    pids: dict[str, int | None] = field(default_factory=dict)
    next_call: int = 0

    def spool_left(self) -> int:
        return len(list(self.daemon.spool.glob("*"))) if self.daemon.spool.exists() else 0

    def drain(self, timeout: float = 90.0) -> float:
        """Wait until Asterisk has no channel and the daemon's spool is empty."""
        began = time.monotonic()
        while time.monotonic() < began + timeout:
            if not self.spool_left() and self.lab.channel_count() == 0:
                break
            time.sleep(0.5)
        return time.monotonic() - began

    def run_phase(self, name: str, rate: float, seconds: float, blocked_rate: float) -> Phase:
        """``rate`` calls/s for ``seconds`` (plus ``blocked_rate`` calls/s from listed numbers),
        until every call has ended and the spool is empty."""
        calls = max(1, round(rate * seconds))
        numbers = caller_numbers(
            self.next_call, calls, self.args.flag_share, self.args.distinct_callers
        )
        self.next_call += calls
        blocked_n = round(blocked_rate * seconds)
        flagged = Counter(n for n in numbers if n.startswith(FLAGGED[:3]))
        phase = Phase(name, rate, seconds, calls, flagged, blocked_n)
        phase.metrics_before = metrics_snapshot(self.daemon)
        cpu0 = {p: cpu_seconds(pid) for p, pid in self.pids.items()}
        phase.t0 = time.monotonic()
        caller = start_callers(self.lab, self.work / f"{name}-callers", numbers, rate)
        blocked = None
        if blocked_n:
            listed = [LISTED.format(i % self.args.rules) for i in range(blocked_n)]
            blocked = start_callers(
                self.lab, self.work / f"{name}-blocked", listed, blocked_rate, refused=True
            )
        phase.caller_rc = caller.wait(seconds + 300)
        if blocked is not None:
            phase.blocked_rc = blocked.wait(60)
            phase.blocked = blocked.stats()
        phase.t1 = time.monotonic()
        phase.wall_s = phase.t1 - phase.t0
        phase.cpu_s = {p: cpu_seconds(pid) - cpu0[p] for p, pid in self.pids.items()}
        phase.cpu_s["sipp_caller"] = caller.cpu_s
        phase.drain_s = self.drain()
        time.sleep(2)  # the agents' stat CSV (-fd 1) and the daemon's last writes
        phase.metrics_after = metrics_snapshot(self.daemon)
        phase.caller = caller.stats()
        phase.setup_ms, _ = setup_times(caller.short_log)
        first, last, n = invite_span(caller.short_log)
        phase.held_rate = (n - 1) / (last - first) if n > 1 and last > first else 0.0
        return phase


@dataclass(slots=True)
class Outcome:
    """Everything measured, before judging."""

    main: Phase
    baseline: Phase | None
    samples: list[Sample]
    redis_before: dict[str, int]
    redis_after: dict[str, int]
    main_flags: list[str]
    all_flags: list[str]
    spool_left: int
    agents: dict[str, dict[str, int]]
    release_ms: list[float]
    no_verdict: list[str]
    daemon_log: dict[str, Any]
    rules_load_s: float
    blocked_rate: float


def measure(args: argparse.Namespace, work: Path) -> Outcome:
    """Start the lab, load the rules, start the agents, run the phases, collect."""
    redis_server = RedisServer(work / "redis")
    lab = AsteriskLab(
        extra_dialplan=dialplan(), rtp_ports=args.rtp_ports, verbose=args.asterisk_verbose
    )
    daemon = ScreenerDaemon.on_lab(
        work / "screener", lab, redis_server.url, env={"SCREENER_LOG__LEVEL": args.log_level}
    )
    agents: list[LoadSipp] = []
    sampler: Sampler | None = None
    try:
        redis_server.start()
        lab.start(timeout=60)
        listed = [LISTED.format(i) for i in range(args.rules)]
        rules_s = asyncio.run(load_rules(redis_server.url, listed))
        daemon.start()
        asyncio.run(ami_setvar(lab, "SCREENER_ANALYSIS_SECONDS", f"{args.analysis_seconds:g}"))
        agents = [
            start_agent(lab, work, FLAG_AGENT, flags=True, pause_ms=args.dtmf_delay_ms),
            start_agent(lab, work, TALK_AGENT, flags=False, pause_ms=args.hold_ms),
        ]
        time.sleep(0.5)
        rig = Rig(lab, daemon, work, args)
        rig.pids = {"asterisk": lab.pid, "daemon": daemon.pid, "redis": redis_server.pid}
        rig.pids |= {a.name: a.pid for a in agents}
        sampler = Sampler(rig.pids, lab, redis_server.url, args.sample_seconds)
        redis_before = redis_info(redis_server.url)
        sampler.start()
        main = rig.run_phase("screening", args.rate, args.minutes * 60, args.blocked_rate)
        redis_after = redis_info(redis_server.url)
        main_flags = redis_flags(redis_server.url)
        baseline = None
        if args.baseline_minutes > 0:
            asyncio.run(ami_setvar(lab, "SCREENER_AGI", ""))
            baseline = rig.run_phase("baseline", args.rate, args.baseline_minutes * 60, 0)
            asyncio.run(ami_setvar(lab, "SCREENER_AGI", f"agi://127.0.0.1:{lab.agi_port}/screen"))
        sampler.stop()
        spool_left = rig.spool_left() + round(
            msum(metrics_snapshot(daemon), "screener_spool_pending")
        )
        agent_rc = {a.name: a.quit() for a in agents}
        return Outcome(
            main=main,
            baseline=baseline,
            samples=sampler.samples,
            redis_before=redis_before,
            redis_after=redis_after,
            main_flags=main_flags,
            all_flags=redis_flags(redis_server.url),
            spool_left=spool_left,
            agents={a.name: sipp_summary(a.stats()) | {"exit": agent_rc[a.name]} for a in agents},
            release_ms=agent_release_ms(agents[0].short_log, args.dtmf_delay_ms),
            no_verdict=astdb_failures(lab),
            daemon_log=log_summary(daemon),
            rules_load_s=rules_s,
            blocked_rate=args.blocked_rate,
        )
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for a in agents:
            a.kill()
        daemon.stop()
        lab.cleanup()
        redis_server.stop()


# -- judging and reporting -----------------------------------------------------------------------


def sipp_summary(stats: dict[str, int]) -> dict[str, int]:
    """Attempted (created by a UAC, received by a UAS), completed, failed, and why."""
    out = {
        "attempted": stats.get("TotalCallCreated", 0) or stats.get("IncomingCall(C)", 0),
        "completed": stats.get("SuccessfulCall(C)", 0),
        "failed": stats.get("FailedCall(C)", 0),
    }
    for key in SIPP_FAILURES[1:]:
        if stats.get(key):
            out[key.removesuffix("(C)")] = stats[key]
    return out


def quantiles(values: list[float], prefix: str) -> dict[str, float | None]:
    return {
        f"{prefix}_p50_ms": round(statistics.median(values), 3) if values else None,
        f"{prefix}_p90_ms": round(percentile(values, 90), 3) if values else None,
        f"{prefix}_p99_ms": round(percentile(values, 99), 3) if values else None,
        f"{prefix}_max_ms": round(max(values), 3) if values else None,
    }


def phase_report(p: Phase, samples: list[Sample]) -> dict[str, Any]:
    b, a = p.metrics_before, p.metrics_after
    requests_before = by_label(b, "screener_flag_requests_total", "outcome")
    redirect_n = mdelta(b, a, "screener_flag_redirect_seconds_count")
    redirect_s = msum(a, "screener_flag_redirect_seconds_sum") - msum(
        b, "screener_flag_redirect_seconds_sum"
    )
    screened = mdelta(b, a, "screener_screen_seconds_count")
    screen_s = msum(a, "screener_screen_seconds_sum") - msum(b, "screener_screen_seconds_sum")
    window = [s for s in samples if p.t0 <= s.at <= p.t1 + 1]
    return {
        "rate": p.rate,
        "seconds": p.seconds,
        "calls": p.calls,
        "expected_flags": p.flagged_numbers.total(),
        "held_rate": round(p.held_rate, 2),
        "wall_s": round(p.wall_s, 1),
        "drain_s": round(p.drain_s, 1),
        "caller": sipp_summary(p.caller) | {"exit": p.caller_rc},
        "blocked_caller": (
            sipp_summary(p.blocked) | {"exit": p.blocked_rc} if p.blocked_calls else None
        ),
        "answered": len(p.setup_ms),
        **quantiles(p.setup_ms, "setup"),
        "daemon_screens": mdelta(b, a, "screener_screens_total"),
        "daemon_allow": mdelta(b, a, "screener_screens_total", verdict="allow"),
        "daemon_block": mdelta(b, a, "screener_screens_total", verdict="block"),
        "daemon_failopen": mdelta(b, a, "screener_screen_failopen_total"),
        "daemon_agi_errors": mdelta(b, a, "screener_agi_sessions_total"),
        "daemon_errors": mdelta(b, a, "screener_errors_total"),
        "daemon_flags": mdelta(b, a, "screener_flags_total"),
        "daemon_flag_requests": {
            k: v - requests_before.get(k, 0)
            for k, v in by_label(a, "screener_flag_requests_total", "outcome").items()
            if v - requests_before.get(k, 0)
        },
        "daemon_screen_mean_ms": (round(screen_s / screened * 1000, 3) if screened else None),
        "daemon_flag_redirect_mean_ms": (
            round(redirect_s / redirect_n * 1000, 2) if redirect_n else None
        ),
        "cpu_pct_of_core": {k: round(v / p.wall_s * 100, 1) for k, v in p.cpu_s.items()},
        "cpu_ms_per_call": {
            k: round(v / (p.calls + p.blocked_calls) * 1000, 3) for k, v in p.cpu_s.items()
        },
        "max_channels": max((s.channels for s in window), default=None),
        "loadavg_max": max((s.load1 for s in window), default=None),
    }


@dataclass(slots=True)
class Verdicts:
    """One boolean per criterion (all its checks must hold) and why any failed."""

    checks: dict[str, bool | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, note: str) -> None:
        self.checks[name] = self.checks.get(name, True) is not False and ok
        if not ok:
            self.notes.append(f"{name}: {note}")


def judge_phase(v: Verdicts, name: str, r: dict[str, Any], *, screening: bool) -> None:
    c = r["caller"]
    v.check(
        "zero_failed_calls",
        c["failed"] == 0 and c["completed"] == r["calls"] and r["answered"] == r["calls"],
        f"{name}: caller {c}, {r['answered']}/{r['calls']} answered",
    )
    bc = r["blocked_caller"]
    if bc is not None:
        v.check(
            "zero_failed_calls",
            bc["failed"] == 0 and bc["completed"] == bc["attempted"],
            f"{name}: blocked caller {bc}",
        )
    if screening:
        v.check(
            "zero_failed_screens",
            r["daemon_allow"] == r["calls"]
            and r["daemon_block"] == (bc["attempted"] if bc else 0)
            and r["daemon_failopen"] == 0
            and r["daemon_agi_errors"] == 0,
            f"{name}: allow {r['daemon_allow']}/{r['calls']}, block {r['daemon_block']}/"
            f"{bc['attempted'] if bc else 0}, failopen {r['daemon_failopen']}, AGI errors "
            f"{r['daemon_agi_errors']}",
        )
    v.check(
        "rate_held",
        r["held_rate"] >= 0.97 * r["rate"] or r["calls"] < 3,
        f"{name}: SIPp held {r['held_rate']} calls/s of {r['rate']}",
    )


def judge_agents(v: Verdicts, agents: dict[str, dict[str, int]], flagged: int, calls: int) -> None:
    for name, expected in ((FLAG_AGENT, flagged), (TALK_AGENT, calls - flagged)):
        a = agents.get(name, {})
        v.check(
            "zero_failed_calls",
            a.get("failed") == 0 and a.get("completed") == expected,
            f"{name}: {a}, expected {expected} calls",
        )


def judge_flags(
    v: Verdicts, expected: Counter[str], recorded: list[str], spool_left: int
) -> dict[str, Any]:
    """The flag records' caller numbers against the flagged calls' (a number flagged on k calls
    must have k records): none missing, none extra (a duplicate is an extra), nothing spooled."""
    got = Counter(recorded)
    lost = expected - got
    extra = got - expected
    v.check(
        "zero_lost_flags",
        not lost and not extra and spool_left == 0,
        f"expected {expected.total()}, recorded {len(recorded)} ({lost.total()} missing, "
        f"{extra.total()} extra or duplicate), spool left {spool_left}",
    )
    return {
        "expected": expected.total(),
        "recorded": len(recorded),
        "missing": lost.total(),
        "extra_or_duplicate": extra.total(),
        "spool_left": spool_left,
        "missing_examples": sorted(lost)[:5],
    }


def memory_section(out: Outcome) -> dict[str, dict[str, Any]]:
    main = out.main
    memory = {
        name: memory_report(out.samples, name, main.t0, main.t1)
        for name in ("daemon", "asterisk", "redis", FLAG_AGENT, TALK_AGENT)
    }
    memory["series"] = {
        "t_s": [round(s.at - main.t0) for s in out.samples],
        **{
            name: [round(s.rss.get(name, 0) / MIB, 1) for s in out.samples]
            for name in ("daemon", "asterisk", "redis")
        },
        "redis_used": [round(s.redis_used / MIB, 2) for s in out.samples],
        "channels": [s.channels for s in out.samples],
    }
    per_minute = (main.rate + out.blocked_rate) * 60
    for name in ("daemon", "asterisk", "redis"):
        slope = memory[name].get("slope_2nd_half_mib_per_min")
        if slope is not None:
            memory[name]["bytes_per_call_2nd_half"] = round(slope * MIB / per_minute)
    r0, r1 = out.redis_before, out.redis_after
    used, data = r1["used_memory"] - r0["used_memory"], r1["data"] - r0["data"]
    flags = len(out.main_flags)
    memory["redis"] |= {
        "used_memory_start_mib": round(r0["used_memory"] / MIB, 2),
        "used_memory_end_mib": round(r1["used_memory"] / MIB, 2),
        "keyspace_growth_mib": round(data / MIB, 2),
        "keyspace_bytes_per_flag": round(data / flags) if flags else None,
        "growth_beyond_keyspace_mib": round((used - data) / MIB, 2),
        "keys_start": r0["keys"],
        "keys_end": r1["keys"],
    }
    return memory


def judge_memory(v: Verdicts, memory: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """Daemon and Asterisk: RSS slope over the second half within ``--flat-mib-per-min``.
    Redis keeps every flag (``retention_days``), so its data grows by design: what must stay
    flat is ``used_memory`` beyond what the keyspace holds."""
    if args.minutes < args.memory_min_minutes:
        v.checks["memory_flat"] = None
        v.notes.append(
            f"memory_flat: not judged, a {args.minutes:g} min load is shorter than "
            f"--memory-min-minutes {args.memory_min_minutes:g} (Asterisk alone grows for ~1 min)"
        )
        return
    for name in ("daemon", "asterisk"):
        slope = memory[name].get("slope_2nd_half_mib_per_min")
        v.check(
            "memory_flat",
            slope is not None and slope <= args.flat_mib_per_min,
            f"{name} RSS slope over the second half {slope} MiB/min "
            f"(limit {args.flat_mib_per_min})",
        )
    beyond = memory["redis"]["growth_beyond_keyspace_mib"]
    v.check(
        "memory_flat",
        beyond <= args.redis_overhead_mib,
        f"redis used_memory grew {beyond} MiB beyond its keyspace (limit "
        f"{args.redis_overhead_mib})",
    )


def build_result(args: argparse.Namespace, out: Outcome, wall_s: float) -> dict[str, Any]:
    v = Verdicts()
    m = phase_report(out.main, out.samples)
    judge_phase(v, "screening", m, screening=True)
    b = phase_report(out.baseline, out.samples) if out.baseline is not None else None
    if b is not None:
        judge_phase(v, "baseline", b, screening=False)
    v.check(
        "zero_failed_screens",
        not out.no_verdict,
        f"{len(out.no_verdict)} calls without a verdict in AstDB: {out.no_verdict[:3]}",
    )
    expected = out.main.flagged_numbers + (
        out.baseline.flagged_numbers if out.baseline else Counter()
    )
    calls = out.main.calls + (out.baseline.calls if out.baseline else 0)
    judge_agents(v, out.agents, expected.total(), calls)
    flags = judge_flags(v, expected, out.all_flags, out.spool_left)
    main_flags = judge_flags(v, out.main.flagged_numbers, out.main_flags, out.spool_left)
    memory = memory_section(out)
    judge_memory(v, memory, args)
    return {
        "benchmark": "load",
        "pass": all(c is not False for c in v.checks.values()),
        **v.checks,
        "notes": v.notes,
        "rate": args.rate,
        "minutes": args.minutes,
        "flag_share": args.flag_share,
        "blocked_rate": args.blocked_rate,
        "rules": args.rules,
        "distinct_callers": args.distinct_callers or None,
        "hold_ms": args.hold_ms,
        "dtmf_delay_ms": args.dtmf_delay_ms,
        "analysis_seconds": args.analysis_seconds,
        "screening": m,
        "flags_screening_phase": main_flags,
        "flags_all_phases": flags,
        "astdb_no_verdict": len(out.no_verdict),
        "agents": out.agents,
        **quantiles(out.release_ms, "flag_release"),
        "memory": memory,
        "daemon_log": out.daemon_log,
        "baseline_no_screening": b,
        "setup_p50_ratio_vs_baseline": (
            round(m["setup_p50_ms"] / b["setup_p50_ms"], 3)
            if b and m["setup_p50_ms"] and b["setup_p50_ms"]
            else None
        ),
        "rules_load_s": round(out.rules_load_s, 1),
        "asterisk_verbose": args.asterisk_verbose,
        "daemon_log_level": args.log_level,
        "cores": os.cpu_count(),
        "wall_s": round(wall_s, 1),
    }


def print_summary(r: dict[str, Any]) -> None:
    m = r["screening"]
    print(
        f"load: {m['calls']} calls at {r['rate']:g}/s for {r['minutes']:g} min "
        f"(SIPp held {m['held_rate']}/s), {r['flag_share']:.0%} flagged, "
        f"+{r['blocked_rate']:g}/s from listed numbers; {r['rules']:,} block rules; callers: "
        + (f"{r['distinct_callers']:,} numbers" if r["distinct_callers"] else "a new number each")
    )
    print(f"  caller: {m['caller']}; blocked caller: {m['blocked_caller']}")
    print(f"  agents (all phases): {r['agents']}")
    print(
        f"  screens: allow {m['daemon_allow']}, block {m['daemon_block']}, failopen "
        f"{m['daemon_failopen']}, AGI errors {m['daemon_agi_errors']}; AstDB no-verdict "
        f"{r['astdb_no_verdict']}; daemon log {r['daemon_log']}"
    )
    print(
        f"  flags (screening phase): {r['flags_screening_phase']}; daemon requests "
        f"{m['daemon_flag_requests']}; all phases {r['flags_all_phases']['recorded']}/"
        f"{r['flags_all_phases']['expected']}"
    )
    print(
        f"  setup INVITE->200 OK: p50 {m['setup_p50_ms']} ms, p99 {m['setup_p99_ms']} ms, "
        f"max {m['setup_max_ms']} ms; flag key -> agent released p50 "
        f"{r['flag_release_p50_ms']} ms, p99 {r['flag_release_p99_ms']} ms (daemon redirect "
        f"mean {m['daemon_flag_redirect_mean_ms']} ms)"
    )
    print(f"  CPU % of a core: {m['cpu_pct_of_core']}")
    print(f"  CPU ms per call: {m['cpu_ms_per_call']}")
    for name, mem in r["memory"].items():
        if name != "series":
            print(f"  memory {name}: {mem}")
    series = r["memory"]["series"]
    print(f"  RSS MiB by time (s from the load's start): t {series['t_s']}")
    for name in ("daemon", "asterisk", "redis"):
        print(f"    {name} {series[name]}")
    b = r["baseline_no_screening"]
    if b:
        print(
            f"  peer baseline, screening off ({b['calls']} calls at {b['rate']:g}/s): setup p50 "
            f"{b['setup_p50_ms']} ms, p99 {b['setup_p99_ms']} ms; CPU ms per call "
            f"{b['cpu_ms_per_call']}"
        )
    print(
        f"  load average max {m['loadavg_max']}, max channels {m['max_channels']}, "
        f"wall {r['wall_s']} s"
    )
    print(("  PASS" if r["pass"] else "  FAIL") + "".join(f"\n    {n}" for n in r["notes"]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    add = parser.add_argument
    add("--rate", type=float, help="calls per second (50; quick 20)")
    add("--minutes", type=float, help="length of the screening load (10; quick 1)")
    add("--flag-share", type=float, default=0.10, help="share of the calls flagged (0.10)")
    add("--quick", action="store_true", help="20 calls/s for 1 minute, baseline 0.5 minute")
    add("--blocked-rate", type=float, default=1.0, help="extra calls/s from listed numbers")
    add("--rules", type=int, default=10_000, help="block rules in Redis (10,000)")
    add("--hold-ms", type=int, default=2000, help="talk time of unflagged calls (2000)")
    add("--dtmf-delay-ms", type=int, default=1000, help="talk time before *9 (1000)")
    add("--analysis-seconds", type=float, default=1, help="SCREENER_ANALYSIS_SECONDS (1)")
    add("--baseline-minutes", type=float, help="screening off afterwards (1; quick 0.5; 0: no)")
    add("--sample-seconds", type=float, help="memory/CPU sampling period (10; quick 5)")
    add("--distinct-callers", type=int, default=0, help="cycle through N numbers (0: all new)")
    add("--memory-min-minutes", type=float, default=5, help="judge memory from this long (5)")
    add("--flat-mib-per-min", type=float, default=1.0, help="RSS slope limit, daemon/Asterisk")
    add("--redis-overhead-mib", type=float, default=4.0, help="Redis growth beyond its data")
    add("--rtp-ports", type=int, default=2000, help="Asterisk's RTP port range (2000)")
    add("--asterisk-verbose", type=int, default=0, help="Asterisk verbosity (0; the lab's 3)")
    add("--log-level", default="INFO", help="the daemon's log level (shipped: INFO)")
    add("--keep", type=Path, help="work in this new directory and keep it (traces, logs)")
    args = parser.parse_args()
    defaults = {
        "rate": (20.0, 50.0),
        "minutes": (1.0, 10.0),
        "baseline_minutes": (0.5, 1.0),
        "sample_seconds": (5.0, 10.0),
    }
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if not 0 <= args.flag_share <= 1:
        parser.error("--flag-share must be within 0..1")
    return args


def main() -> None:
    args = parse_args()
    problems = missing()
    if problems:
        raise SystemExit("lab not installed: " + "; ".join(problems))
    # A SIGTERM (e.g. from timeout(1)) unwinds like an exception: the lab is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="screener-load-")))
        else:
            work = args.keep
            work.mkdir(parents=True, exist_ok=False)
        outcome = measure(args, work)
    result = build_result(args, outcome, time.monotonic() - began)
    print_summary(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
