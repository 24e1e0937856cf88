"""The real screener daemon (``python -m screener run``) as a process of the lab.

It is configured the way an admin would: ``deploy/screener.toml`` plus ``SCREENER_*`` environment
variables for what the lab chooses at run time (ports, secrets, the spool directory). Tests talk
to it only as users do: SIP calls, its HTTP API and ``/metrics``, Redis, its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.lab import REPO
from tests.lab.asterisk import AsteriskLab
from tests.lab.net import free_port

CONFIG = REPO / "deploy" / "screener.toml"


class ScreenerDaemon:
    """One ``screener run`` process; ``env`` adds or overrides ``SCREENER_*`` settings."""

    def __init__(
        self,
        workdir: Path,
        *,
        ami_port: int,
        ami_user: str,
        ami_secret: str,
        redis_url: str,
        agi_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.agi_port = agi_port if agi_port is not None else free_port()
        self.http_port = free_port()
        self.token = "lab-token-" + os.urandom(8).hex()
        self.spool = workdir / "spool"
        self.log = workdir / "screener.log"
        self.env = {
            "SCREENER_AMI__PORT": str(ami_port),
            "SCREENER_AMI__USERNAME": ami_user,
            "SCREENER_AMI__SECRET": ami_secret,
            "SCREENER_AMI__PING_INTERVAL": "1",
            "SCREENER_AMI__WATCHDOG_TIMEOUT": "3",
            "SCREENER_REDIS__URL": redis_url,
            "SCREENER_FLAG__SPOOL_DIR": str(self.spool),
            "SCREENER_HTTP__PORT": str(self.http_port),
            "SCREENER_HTTP__TOKEN": self.token,
            "SCREENER_AGI__PORT": str(self.agi_port),
            "SCREENER_NUMBERS__TIMEZONE": "UTC",
            "SCREENER_LOG__LEVEL": "DEBUG",
        } | (env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_lab(
        cls,
        workdir: Path,
        lab: AsteriskLab,
        redis_url: str,
        *,
        lab_user: bool = False,
        env: dict[str, str] | None = None,
    ) -> ScreenerDaemon:
        """A daemon for a lab Asterisk: the shipped ``screener`` AMI user, or with ``lab_user``
        the unfiltered full-privilege one (a PBX that kept an all-powerful AMI user)."""
        s = lab.secrets
        user, secret = (
            (s.lab_user, s.lab_secret) if lab_user else (s.screener_user, s.screener_secret)
        )
        return cls(
            workdir,
            ami_port=lab.ami_port,
            ami_user=user,
            ami_secret=secret,
            redis_url=redis_url,
            agi_port=lab.agi_port,
            env=env,
        )

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs (e.g. to read its CPU time in /proc)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait until ``/healthz`` says ok (logged in to AMI)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")} | self.env
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "screener", "run", "--config", str(CONFIG)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"screener exited {self._proc.returncode}:\n{self.tail()}")
            try:
                status, body = self.request("GET", "/healthz")
                last = body
                if status == 200:
                    return body
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError(f"screener not healthy after {timeout}s ({last}):\n{self.tail()}")

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """An HTTP request to the daemon; returns (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample from ``/metrics`` (0.0 when absent)."""
        _, text = self.request("GET", "/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    total += sample.value
        return total

    def wait_metric(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        *,
        at_least: float = 1.0,
        timeout: float = 10.0,
    ) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = self.metric(name, labels)
            if value >= at_least:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels or ''} = {value} < {at_least}:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])
