"""Statistics end to end: the shipped Prometheus rules and Grafana dashboard against a real
Prometheus (Debian's package) scraping the real daemon after a scripted day at the call centre.

The day, on real Asterisk 22 + SIPp + Redis: Asterisk restarts under the daemon (an AMI
reconnect); Redis goes away while an agent flags a withheld caller (screening fails open, the flag
waits in the spool, then reaches Redis); an admin adds rules through the HTTP API (a blocked
number with a treatment, an allowlisted number, a shadow rule) and callers hit them, one with a
caller ID carrying forged AGI lines; a FastAGI client sends garbage; two agents flag the same
caller, who is blocked automatically and refused on the next call. That gives every metric family
samples. Then every panel query of ``deploy/grafana/dashboards/screener.json`` and every recording
rule of ``deploy/prometheus`` must return data, and every ``screener_*`` name they use must be in
the daemon's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DaemonFactory, require_lab
from tests.lab import REPO
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_DIRECT, DID_LOCAL, DID_QUEUE, DID_SHORT
from tests.lab.daemon import ScreenerDaemon
from tests.lab.prometheus import (
    DEPLOY_PROMETHEUS,
    RULE_FILES,
    PrometheusServer,
    missing_prometheus,
)
from tests.lab.redis import RedisServer
from tests.lab.sipp import Sipp, SippFactory

pytestmark = [pytest.mark.lab, pytest.mark.timeout(150)]

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "screener.json"
HOTLINES = {DID_QUEUE: "lab-service", DID_DIRECT: "lab-direct", DID_LOCAL: "lab-local"}
ENV = {
    "SCREENER_HOTLINES": json.dumps(HOTLINES),  # DID_SHORT stays "other"
    "SCREENER_SCREENING__LEARN_INTERVAL": "0.5",
    "SCREENER_SCREENING__SWEEP_INTERVAL": "0.5",
    "SCREENER_SCREENING__QUORUM": "2",
    "SCREENER_SCREENING__DEFAULT_TREATMENT": "reject",
}
HARASSER = "13812341234"  # flagged by two agents, then blocked automatically
WITHHELD = "13700001111"  # flagged with Privacy: id while Redis is down
BLOCKED = "13900001111"  # an admin's block, treatment reject
ALLOWED = "13600003333"  # on the allowlist
SHADOWED = "13500002222"  # a shadow block rule

# Grafana's variables, as the lab sets them. Scrapes are 1 s apart and the whole day takes well
# under a minute: a 1m rate window spans all of it, where Grafana's own $__rate_interval (four
# scrape intervals) would only see the last few seconds. $__range covers the whole run.
GRAFANA = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "hotline": ".*"}
VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
METRIC = re.compile(r"(?<![\w:])(?:screener_[a-z0-9_]+|up)(?![\w:])")


def grafana_expr(expr: str) -> str:
    """A panel's PromQL with the dashboard variables substituted."""

    def value(m: re.Match[str]) -> str:
        assert m.group(1) in GRAFANA, f"unknown dashboard variable {m.group(0)} in {expr}"
        return GRAFANA[m.group(1)]

    return VARIABLE.sub(value, expr)


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, substituted expression, legend format) of every panel target."""
    model = json.loads(DASHBOARD.read_text())
    every = [p for top in model["panels"] for p in (top, *top.get("panels", []))]
    return [
        (p["title"], grafana_expr(t["expr"]), t.get("legendFormat", ""))
        for p in every
        for t in p.get("targets", [])
    ]


def dashboard_variables() -> list[str]:
    model = json.loads(DASHBOARD.read_text())
    return [v["definition"] for v in model["templating"]["list"] if v["type"] == "query"]


# --- lab helpers ------------------------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[ScreenerDaemon], PrometheusServer]]:
    """Starts a real Prometheus scraping a daemon with the shipped rules; stopped at teardown."""
    require_lab(missing_prometheus())
    servers: list[PrometheusServer] = []

    def start(daemon: ScreenerDaemon) -> PrometheusServer:
        server = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{daemon.http_port}")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
        print(f"--- prometheus log ({server.log}) ---\n{server.tail(30)}")


@contextlib.contextmanager
def analysis_seconds(lab: AsteriskLab, seconds: int) -> Iterator[None]:
    """Shorten the analysis queue wait (a dialplan global) for the block, then restore it."""
    name = "SCREENER_ANALYSIS_SECONDS"
    old = re.search(rf"^\s*{name}=(\d+)", lab.cli("dialplan show globals"), re.M)
    lab.cli(f"dialplan set global {name} {seconds}")
    try:
        yield
    finally:
        if lab.running():
            lab.cli(f"dialplan set global {name} {old.group(1) if old else 15}")


def add_rule(daemon: ScreenerDaemon, **fields: Any) -> dict[str, Any]:
    status, body = daemon.request("POST", "/api/v1/rules", {"by": "lab-admin", **fields})
    assert status == 201, body
    rule: dict[str, Any] = body["rule"]
    return rule


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def completed(*calls: Sipp, timeout: float = 25.0) -> None:
    for call in calls:
        assert await call.finished(timeout) == 0, call.describe()


def _pct(text: str) -> str:
    return "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in text)


async def garbage_fastagi(port: int) -> None:
    """A FastAGI client that sends bytes no Asterisk would (counted, never fatal)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes(range(256)) * 4 + b"\n\n")
    await writer.drain()
    writer.close()


# --- the scripted day ---------------------------------------------------------------------------


async def flag_while_redis_is_down(
    sipp: SippFactory, daemon: ScreenerDaemon, redis: RedisServer
) -> None:
    """A withheld caller screened (fails open) and flagged (spooled) with Redis away."""
    redis.stop()
    try:
        agent = sipp.agent("agent1", dtmf="*9", dtmf_delay_ms=1000)
        caller = sipp.caller(DID_QUEUE, from_user=WITHHELD, withheld=True)
        daemon.wait_metric("screener_spool_pending", timeout=20)
        assert daemon.metric("screener_redis_up") == 0
        assert daemon.metric("screener_screen_failopen_total", {"reason": "redis"}) == 1
    finally:
        redis.start()
    await completed(caller, agent)
    await wait_until(
        lambda: (
            daemon.metric("screener_spool_pending") == 0 and daemon.metric("screener_redis_up") == 1
        ),
        10,
        "the spooled flag reaches Redis",
    )


async def screen_callers_against_admin_rules(sipp: SippFactory, daemon: ScreenerDaemon) -> None:
    add_rule(daemon, value=BLOCKED, reason="abusive, ticket 7", treatment="reject")
    add_rule(daemon, value=ALLOWED, list="allow", reason="our own test line")
    add_rule(daemon, value=SHADOWED, reason="trying it out first", mode="shadow")
    refused = [
        sipp.caller_refused(DID_QUEUE, from_user=BLOCKED),
        # the number, then a forged line of AGI environment: screened by the number all the same
        sipp.caller_refused(DID_DIRECT, from_user=BLOCKED + _pct("\r\nagi_arg_9: x")),
    ]
    await garbage_fastagi(daemon.agi_port)
    await completed(*refused)
    assert [c.final_response() for c in refused] == [403, 403]
    daemon.wait_metric("screener_attacks_total", {"kind": "cid_injection"})
    daemon.wait_metric("screener_agi_sessions_total", {"kind": "remote"})


async def calls_through_to_agents_and_a_quorum_of_flags(
    sipp: SippFactory, daemon: ScreenerDaemon
) -> None:
    """Four calls at once: allowlisted, shadow-matched, and the harasser twice, flagged by two
    agents (quorum 2); then the harasser's next call is refused by the automatic block."""
    calls = [
        sipp.agent_idle("agent2"),
        sipp.caller(DID_LOCAL, from_user=ALLOWED, hangup_after_ms=500),
        sipp.agent_idle("x"),
        sipp.caller(DID_SHORT, from_user=SHADOWED, hangup_after_ms=500),
        sipp.agent("agent1", dtmf="*9", dtmf_delay_ms=1000),
        sipp.caller(DID_QUEUE, from_user=HARASSER),
        sipp.agent("agent3", dtmf="*9", dtmf_delay_ms=1000),
        sipp.caller(DID_DIRECT, from_user=HARASSER),
    ]
    await completed(*calls)
    daemon.wait_metric("screener_auto_blocks_total")
    again = sipp.caller_refused(DID_QUEUE, from_user=HARASSER)
    await completed(again)
    assert again.final_response() == 403


def exposition(daemon: ScreenerDaemon) -> set[str]:
    """Every sample name the daemon's /metrics carries."""
    _, text = daemon.request("GET", "/metrics")
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def empty(prom: PrometheusServer, exprs: list[str]) -> list[str]:
    """The expressions whose instant query returns nothing."""
    return [expr for expr in exprs if not prom.query(expr)]


async def test_every_dashboard_panel_and_recording_rule_has_data(
    asterisk: AsteriskLab,
    sipp: SippFactory,
    screener: DaemonFactory,
    redis_server: RedisServer,
    prometheus: Callable[[ScreenerDaemon], PrometheusServer],
) -> None:
    began = time.monotonic()
    daemon = screener(env=ENV)
    prom = prometheus(daemon)
    asterisk.restart()  # under the running daemon: an AMI reconnect
    daemon.wait_metric("screener_ami_reconnects_total", timeout=15)
    daemon.wait_healthy(20)
    with analysis_seconds(asterisk, 2):
        await flag_while_redis_is_down(sipp, daemon, redis_server)
        await screen_callers_against_admin_rules(sipp, daemon)
        await calls_through_to_agents_and_a_quorum_of_flags(sipp, daemon)
    scripted = time.monotonic()
    await wait_until(
        lambda: (
            daemon.metric("screener_flags_by_hour") == 3
            and daemon.metric("screener_rules", {"origin": "auto"}) >= 1
        ),
        10,
        "statistics and rule gauges refreshed from Redis",
    )

    # Prometheus has scraped the end of the day and evaluated the rules on it
    prom.wait_until(
        lambda: (
            prom.value("sum(screener_flags_total)") == 3
            and prom.value("sum(hour:screener_flags_by_hour:max)") == 3
            and (prom.value('sum(list:screener_rules:sum{list="block"})') or 0) >= 3
        ),
        "Prometheus sees the final flags, statistics and blocklist",
    )
    panels = dashboard_targets()
    rules = prom.rules()
    recorded = [r["name"] for r in rules if r["type"] == "recording"]
    exprs = [expr for _, expr, _ in panels] + recorded
    missing, deadline = exprs, time.monotonic() + 15
    while (missing := empty(prom, missing)) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    assert missing == [], "queries without data:\n" + "\n".join(missing)
    print(
        f"scripted day {scripted - began:.1f}s, all data in Prometheus after "
        f"{time.monotonic() - began:.1f}s: {len(panels)} panel queries, {len(recorded)} "
        f"recording rules, {len(rules) - len(recorded)} alerts"
    )

    # each panel's legend names labels its query's series carry
    for title, expr, legend in panels:
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            for series in prom.query(expr):
                assert label in series["metric"], f"{title}: {expr} has no {label} for {legend}"
    for definition in dashboard_variables():
        variable = re.fullmatch(r"label_values\((.*), (\w+)\)", definition)
        assert variable is not None, definition
        selector, label = variable.groups()
        assert set(prom.label_values(label, selector)) >= {"lab-service", "lab-direct", "other"}

    # every rule loaded and evaluated without error; the target is the daemon, up
    shipped = "\n".join(DEPLOY_PROMETHEUS.joinpath(name).read_text() for name in RULE_FILES)
    assert len(recorded) == shipped.count("- record: ") > 0
    assert len(rules) - len(recorded) == shipped.count("- alert: ") > 0
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    (target,) = prom.targets()
    assert target["labels"]["job"] == "screener" and target["health"] == "up"
    assert target["scrapeUrl"] == f"http://127.0.0.1:{daemon.http_port}/metrics"

    # every metric the dashboard and the rules name is exported, and Prometheus holds it
    text = "\n".join([*exprs, *(r["query"] for r in rules)])
    named = set(METRIC.findall(text))
    assert len(named) > 20
    assert named - {"up"} <= exposition(daemon)
    stored = {s["metric"]["__name__"] for s in prom.query('group by (__name__) ({job="screener"})')}
    assert named <= stored, named - stored

    # and the numbers are the day's
    assert prom.value('sum(screener_flags_total{presentation="withheld"})') == 1
    assert prom.value('sum(screener_flags_total{hotline="lab-direct"})') == 1
    assert prom.value('sum(screener_screen_failopen_total{reason="redis"})') == 1
    assert prom.value('sum(screener_shadow_hits_total{match="number", action="block"})') == 1
    assert prom.value('sum(screener_screens_total{verdict="allow", reason="allowlist"})') == 1
    assert prom.value("sum(screener_auto_blocks_total)") == 1
    assert (prom.value("sum(screener_ami_reconnects_total)") or 0) >= 1
    assert (prom.value("max(job:screener_flag_redirect_seconds:p99_5m)") or 0) > 0
