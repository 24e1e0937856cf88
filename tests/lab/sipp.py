"""SIPp processes for lab calls: callers (UAC) and agents (UAS) from ``tests/scenarios``.

Each process gets its own work dir (its pcaps, CSV and traces live there), its own SIP, control
and media ports, ``-m 1`` (one call, then exit) and a bounded ``-timeout`` that makes it fail
rather than hang. Exit code 0 means the whole scenario ran, e.g. the BYE from Asterisk arrived.

    sipp = SippFactory(lab, tmp_path)
    agent = sipp.agent("agent1", dtmf="*9", dtmf_delay_ms=1500)
    caller = sipp.caller(DID_QUEUE, from_user="0123456789")
    assert await caller.finished(30) == 0, caller.describe()
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.lab import SCENARIOS
from tests.lab.asterisk import AsteriskLab
from tests.lab.net import free_block, free_port
from tests.lab.rtp import write_dtmf_pcap, write_pcmu_pcap

EXIT_CODES = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


class Sipp:
    """One SIPp process running ``tests/scenarios/<scenario>.xml`` in ``workdir``.

    ``csv_fields`` become ``[field0]``, ``[field1]``... through an ``-inf`` file (values are
    written byte for byte, so hostile strings reach the wire as given; they must not contain
    ``;`` or a line break). ``keys`` become ``-key NAME VALUE``, used as ``[NAME]``.
    """

    def __init__(
        self,
        scenario: str,
        workdir: Path,
        *,
        local_port: int,
        remote: str | None = None,
        service: str | None = None,
        pause_ms: int | None = None,
        keys: Mapping[str, str] | None = None,
        csv_fields: Sequence[str] | None = None,
        timeout_s: float = 40.0,
    ) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.local_port = local_port
        self.remote = remote
        self.service = service
        self.pause_ms = pause_ms
        self.keys = dict(keys or {})
        self.csv_fields = list(csv_fields) if csv_fields is not None else None
        self.timeout_s = timeout_s
        self.control_port = free_port()
        self.media_port = free_block(4, align=2)
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def scenario_file(self) -> Path:
        """The copy in ``workdir``: SIPp looks for the scenario's pcaps next to it."""
        return self.workdir / f"{self.scenario}.xml"

    @property
    def messages_log(self) -> Path:
        return self.workdir / "messages.log"

    @property
    def errors_log(self) -> Path:
        return self.workdir / "errors.log"

    @property
    def stderr_log(self) -> Path:
        return self.workdir / "stderr.log"

    def argv(self) -> list[str]:
        argv = ["sipp"]
        if self.remote:
            argv.append(self.remote)
        argv += [
            "-sf", str(self.scenario_file),
            "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(self.local_port), "-cp", str(self.control_port), "-mp", str(self.media_port),
            "-m", "1", "-l", "1", "-nostdin", "-aa",
            "-timeout", f"{self.timeout_s:g}s", "-timeout_error",
            "-max_invite_retrans", "3", "-max_non_invite_retrans", "3",
            "-trace_err", "-error_file", str(self.errors_log),
            "-trace_msg", "-message_file", str(self.messages_log),
        ]  # fmt: skip
        if self.service is not None:
            argv += ["-s", self.service]
        if self.pause_ms is not None:
            argv += ["-d", str(self.pause_ms)]
        if self.csv_fields is not None:
            argv += ["-inf", str(self._write_csv())]
        for name, value in self.keys.items():
            argv += ["-key", name, value]
        return argv

    def _write_csv(self) -> Path:
        assert self.csv_fields is not None
        for value in self.csv_fields:
            if any(bad in value for bad in ";\r\n"):
                raise ValueError(f"a SIPp CSV field cannot hold ; CR or LF: {value!r}")
        path = self.workdir / "fields.csv"
        path.write_text("SEQUENTIAL\n" + "".join(f"{v};" for v in self.csv_fields) + "\n")
        return path

    def start(self) -> Sipp:
        """Start the process (the scenario's pcaps must already be in ``workdir``)."""
        shutil.copyfile(SCENARIOS / f"{self.scenario}.xml", self.scenario_file)
        argv = self.argv()
        (self.workdir / "argv.txt").write_text(" ".join(argv) + "\n")
        with self.stderr_log.open("wb") as stderr:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def returncode(self) -> int | None:
        """The exit code (``-9`` after :meth:`kill`), or None while it runs."""
        return self._reap()

    def _reap(self) -> int | None:
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is not None and self.ended_at is None:
            self.ended_at = time.monotonic()
        return code

    def running(self) -> bool:
        return self._proc is not None and self.returncode is None

    async def finished(self, timeout: float) -> int:
        """Wait for the exit code (kills the process and returns -9 on timeout)."""
        deadline = time.monotonic() + timeout
        while (code := self.returncode) is None:
            if time.monotonic() > deadline:
                self.kill()
                return -9
            await asyncio.sleep(0.05)
        return code

    def wait(self, timeout: float) -> int:
        """Blocking variant of :meth:`finished`."""
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.returncode if self.returncode is not None else -9

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def final_response(self) -> int | None:
        """The status code of the last final (>= 200) response SIPp received, from its log."""
        if not self.messages_log.exists():
            return None
        codes = re.findall(r"^SIP/2\.0 ([2-6][0-9][0-9]) ", self.messages_log.read_text(), re.M)
        return int(codes[-1]) if codes else None

    def describe(self, lines: int = 40) -> str:
        """Exit status plus the tails of the error log, the message trace and stderr."""
        code = self.returncode
        meaning = (
            "still running" if code is None else "killed" if code < 0 else EXIT_CODES.get(code, "?")
        )
        out = [f"sipp {self.scenario} port {self.local_port}: exit {code} ({meaning})"]
        for path in (self.errors_log, self.stderr_log, self.messages_log):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                out.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(out)


class SippFactory:
    """Starts callers and agents against one :class:`AsteriskLab`; kills them all in ``close``."""

    def __init__(self, lab: AsteriskLab, base_dir: Path) -> None:
        self.lab = lab
        self.base_dir = base_dir
        self.processes: list[Sipp] = []

    def _workdir(self, label: str) -> Path:
        return self.base_dir / f"{len(self.processes) + 1:02d}-{label}"

    def _caller_port(self) -> int:
        busy = {p.local_port for p in self.processes if p.running()}
        for port in self.lab.ports.callers:
            if port not in busy:
                return port
        raise RuntimeError("all caller ports of the lab are busy")

    def caller(
        self,
        did: str,
        *,
        from_user: str = "0123456789",
        from_name: str = "Lab Caller",
        hangup_after_ms: int | None = None,
        withheld: bool = False,
        audio_seconds: float = 1.0,
        timeout_s: float = 40.0,
        dtmf: str | None = None,
        dtmf_delay_ms: int = 1500,
    ) -> Sipp:
        """Call ``did`` from the caller endpoint and wait for Asterisk's BYE.

        ``hangup_after_ms``: hang up ourselves that long after the answer instead.
        ``withheld``: anonymous From, the number in P-Asserted-Identity with ``Privacy: id``.
        ``dtmf``: send these digits (RFC 4733) ``dtmf_delay_ms`` after the answer.
        """
        chosen = [
            name
            for name, wanted in (
                ("caller_hangup", hangup_after_ms is not None),
                ("caller_private", withheld),
                ("caller_dtmf", dtmf is not None),
            )
            if wanted
        ]
        if len(chosen) > 1:
            raise ValueError(f"no scenario combines {' and '.join(chosen)}")
        scenario = chosen[0] if chosen else "caller"
        workdir = self._workdir("caller")
        workdir.mkdir(parents=True)
        write_pcmu_pcap(workdir / "audio.pcap", audio_seconds)
        if dtmf is not None:
            write_dtmf_pcap(workdir / "dtmf.pcap", dtmf)
        sipp = Sipp(
            scenario,
            workdir,
            local_port=self._caller_port(),
            remote=f"127.0.0.1:{self.lab.sip_port}",
            service=did,
            pause_ms=hangup_after_ms if dtmf is None else dtmf_delay_ms,
            csv_fields=[from_user, from_name],
            timeout_s=timeout_s,
        )
        return self._start(sipp)

    def caller_refused(
        self,
        did: str,
        *,
        from_user: str = "0123456789",
        from_name: str = "Lab Caller",
        timeout_s: float = 20.0,
    ) -> Sipp:
        """Call ``did`` and expect a 486 or 403 final response (see ``final_response``)."""
        workdir = self._workdir("caller")
        workdir.mkdir(parents=True)
        sipp = Sipp(
            "caller_refused",
            workdir,
            local_port=self._caller_port(),
            remote=f"127.0.0.1:{self.lab.sip_port}",
            service=did,
            csv_fields=[from_user, from_name],
            timeout_s=timeout_s,
        )
        return self._start(sipp)

    def agent(
        self,
        agent: str,
        *,
        dtmf: str = "*9",
        dtmf_delay_ms: int = 1500,
        tone_ms: int = 100,
        gap_ms: int = 200,
        audio_seconds: float = 1.0,
        timeout_s: float = 40.0,
    ) -> Sipp:
        """Answer as ``agent``, send ``dtmf`` (RFC 4733) after ``dtmf_delay_ms``, await the BYE."""
        workdir = self._workdir(agent)
        workdir.mkdir(parents=True)
        write_pcmu_pcap(workdir / "audio.pcap", audio_seconds)
        write_dtmf_pcap(workdir / "dtmf.pcap", dtmf, tone_ms=tone_ms, gap_ms=gap_ms)
        sipp = Sipp(
            "agent",
            workdir,
            local_port=self.lab.agent_port(agent),
            pause_ms=dtmf_delay_ms,
            keys={"agent": agent},
            timeout_s=timeout_s,
        )
        return self._start(sipp)

    def agent_idle(
        self, agent: str, *, audio_seconds: float = 1.0, timeout_s: float = 40.0
    ) -> Sipp:
        """Answer as ``agent`` and wait for the BYE, sending no DTMF."""
        workdir = self._workdir(agent)
        workdir.mkdir(parents=True)
        write_pcmu_pcap(workdir / "audio.pcap", audio_seconds)
        sipp = Sipp(
            "agent_idle",
            workdir,
            local_port=self.lab.agent_port(agent),
            keys={"agent": agent},
            timeout_s=timeout_s,
        )
        return self._start(sipp)

    def agent_refer(
        self,
        agent: str,
        target: str,
        *,
        refer_delay_ms: int = 1000,
        audio_seconds: float = 1.0,
        timeout_s: float = 40.0,
    ) -> Sipp:
        """Answer as ``agent``, then blind-transfer the caller to ``target`` with a SIP REFER."""
        workdir = self._workdir(agent)
        workdir.mkdir(parents=True)
        write_pcmu_pcap(workdir / "audio.pcap", audio_seconds)
        sipp = Sipp(
            "agent_refer",
            workdir,
            local_port=self.lab.agent_port(agent),
            pause_ms=refer_delay_ms,
            keys={
                "agent": agent,
                "target": target,
                "asterisk": f"127.0.0.1:{self.lab.sip_port}",
            },
            timeout_s=timeout_s,
        )
        return self._start(sipp)

    def _start(self, sipp: Sipp) -> Sipp:
        self.processes.append(sipp)
        return sipp.start()

    def close(self) -> None:
        for sipp in self.processes:
            sipp.kill()

    def describe(self) -> str:
        return "\n\n".join(p.describe() for p in self.processes)
