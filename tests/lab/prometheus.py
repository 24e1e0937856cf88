"""A real Prometheus (Debian's ``prometheus`` package) scraping a lab daemon with the shipped rules.

The configuration is ``deploy/prometheus/prometheus.yml`` as shipped, with four things rewritten
(:func:`render_config`): the target address, the scrape and evaluation intervals (1 s in the lab)
and the rule file paths (the shipped files in ``deploy/prometheus``). Storage is a temporary
directory; the HTTP API is read with :meth:`PrometheusServer.query`, ``rules`` and ``targets``.

    prom = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{daemon.http_port}")
    prom.start()                  # waits for /-/ready
    prom.query("up")              # [{'metric': {...}, 'value': [ts, '1']}]
    prom.stop()

Prometheus reloads its scrape targets every 5 s: the first scrape comes about 5 s after start.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.lab import REPO
from tests.lab.net import free_port

DEPLOY_PROMETHEUS = REPO / "deploy" / "prometheus"
SHIPPED_CONFIG = DEPLOY_PROMETHEUS / "prometheus.yml"
RULE_FILES = ("screener.rules.yml", "screener.alerts.yml")


class PrometheusError(RuntimeError):
    """Prometheus failed to start, or its API answered with an error."""


def missing_prometheus() -> list[str]:
    """What running Prometheus needs and this machine lacks (empty: all there)."""
    return [
        f"{name} not found on PATH (apt-get install prometheus)"
        for name in ("prometheus", "promtool")
        if shutil.which(name) is None
    ]


def _replace(pattern: str, repl: str | Callable[[re.Match[str]], str], text: str, n: int) -> str:
    new, count = re.subn(pattern, repl, text, flags=re.M)
    if count != n:
        raise ValueError(
            f"expected {n} match(es) of {pattern!r} in the shipped prometheus.yml, found {count}: "
            "update tests/lab/prometheus.py render_config to its new shape"
        )
    return new


def render_config(
    shipped: str,
    *,
    target: str,
    interval: str = "1s",
    rules_dir: Path = DEPLOY_PROMETHEUS,
) -> str:
    """The shipped configuration pointed at ``target``, scraped and evaluated every ``interval``,
    loading the rule files from ``rules_dir``. Everything else stays as shipped.

    Raises:
        ValueError: the shipped file no longer has the shape this function rewrites.
    """
    text = _replace(r"^([ \t]+scrape_interval:[ \t]*)\S+", rf"\g<1>{interval}", shipped, 1)
    text = _replace(r"^([ \t]+evaluation_interval:[ \t]*)\S+", rf"\g<1>{interval}", text, 1)
    text = _replace(r"^([ \t]+- targets:[ \t]*)\[[^\]]*\]", rf'\g<1>["{target}"]', text, 1)
    names = "|".join(re.escape(name) for name in RULE_FILES)
    return _replace(
        rf"^([ \t]+-[ \t]*)\S*?({names})[ \t]*$",
        lambda m: f"{m.group(1)}{rules_dir / m.group(2)}",
        text,
        len(RULE_FILES),
    )


def promtool(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args``; the caller checks the return code and output."""
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class PrometheusServer:
    """One ``prometheus`` process on a free loopback port, scraping ``target``."""

    def __init__(self, workdir: Path, target: str, *, interval: str = "1s") -> None:
        self.workdir = workdir
        self.target = target
        self.interval = interval
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.data = workdir / "data"
        self.log = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Debian's defaults point at /etc/prometheus; the lab serves no console pages
            f"--web.console.templates={self.workdir / 'consoles'}",
            f"--web.console.libraries={self.workdir / 'console_libraries'}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ]

    def start(self, timeout: float = 20.0) -> None:
        """Write the configuration, start, and wait until ``/-/ready`` answers.

        Raises:
            PrometheusError: it exited or was not ready within ``timeout`` (log tail included).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            render_config(SHIPPED_CONFIG.read_text(), target=self.target, interval=self.interval)
        )
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited {self._proc.returncode}:\n{self.tail()}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(f"prometheus not ready after {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def api(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``.

        Raises:
            PrometheusError: the API answered with an error (bad query, ...).
        """
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; a vector as a list of ``{metric, value}``, a scalar as one item.

        Raises:
            PrometheusError: the expression does not parse or evaluate.
        """
        params = [("query", expr)]
        if at is not None:
            params.append(("time", f"{at:.3f}"))
        data = self.api("query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None when the result is empty)."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr}: {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting), each with its group's name added."""
        groups = self.api("rules")["groups"]
        return [rule | {"group": group["name"]} for group in groups for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", [("match[]", match)])
        return values

    def wait_until(
        self, check: Callable[[], bool], what: str, timeout: float = 20.0, every: float = 0.25
    ) -> None:
        """Poll ``check`` until it is true.

        Raises:
            AssertionError: not within ``timeout`` (the log tail included).
        """
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}\n{self.tail()}")
            time.sleep(every)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
