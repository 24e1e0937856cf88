"""deploy/prometheus and deploy/grafana, checked without the lab.

promtool (Debian's ``prometheus`` package) checks the rule and alert files and the scrape config
(rendered the way the lab renders it, since the shipped one names /etc/prometheus paths), and
runs the alert unit tests (``screener.alerts.test.yml``). The dashboard's JSON model is checked
for what Grafana needs, and every metric and label the files name must exist in ``metrics.py``.
Whether each query returns data is the lab's job: ``tests/e2e/test_prometheus_dashboard.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from screener.metrics import Metrics
from tests.lab import REPO, in_ci
from tests.lab.prometheus import (
    DEPLOY_PROMETHEUS,
    RULE_FILES,
    SHIPPED_CONFIG,
    missing_prometheus,
    promtool,
    render_config,
)

DEPLOY_GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = DEPLOY_GRAFANA / "dashboards" / "screener.json"
ALERT_TESTS = DEPLOY_PROMETHEUS / "screener.alerts.test.yml"
PROMETHEUS_FILES = (SHIPPED_CONFIG, *(DEPLOY_PROMETHEUS / f for f in RULE_FILES), ALERT_TESTS)

# A metric name, not the middle of a recording rule's name (level:metric:operations).
METRIC = r"(?<![\w:])(screener_[a-z0-9_]+)(?![\w:])"
MATCHERS = re.compile(METRIC + r"\{([^}]*)\}")
# An aggregation directly over a raw metric, e.g. ``sum by (hotline) (rate(screener_x[5m]))``.
AGGREGATION = re.compile(
    r"\b(?:sum|max|min|avg|count) by \(([^)]*)\) \((?:(?:rate|increase|delta|irate)\()?" + METRIC
)
TARGET_LABELS = {"job", "instance"}


@pytest.fixture(scope="module")
def promtool_available() -> None:
    problems = missing_prometheus()
    if problems:
        message = "; ".join(problems)
        if in_ci():
            pytest.fail(message + " (CI=true: never skipped)")
        pytest.skip(message)


def exported() -> dict[str, set[str]]:
    """Every sample name ``Metrics`` can export, with the labels its samples carry."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics(CollectorRegistry())).values():
        if isinstance(metric, CollectorRegistry):
            continue
        labels = set(metric._labelnames)
        if metric._type == "counter":
            names[f"{metric._name}_total"] = labels
        elif metric._type == "histogram":
            names[f"{metric._name}_bucket"] = labels | {"le"}
            names[f"{metric._name}_sum"] = labels
            names[f"{metric._name}_count"] = labels
        else:
            names[metric._name] = labels
    return names


def dashboard() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return model


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in model["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_text() -> str:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    model = dashboard()
    exprs = [t["expr"] for p in panels(model) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in model["templating"]["list"] if v["type"] == "query"]
    return "\n".join(exprs)


def sources() -> dict[str, str]:
    texts = {path.name: path.read_text() for path in PROMETHEUS_FILES}
    texts[DASHBOARD.name] = dashboard_text()
    return texts


# --- promtool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULE_FILES)
def test_rule_files_pass_promtool_check_rules(promtool_available: None, name: str) -> None:
    done = promtool("check", "rules", str(DEPLOY_PROMETHEUS / name))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_scrape_config_passes_promtool_check_config(
    promtool_available: None, tmp_path: Path
) -> None:
    """The shipped file with its rule paths pointed at this checkout (and the lab's target)."""
    config = tmp_path / "prometheus.yml"
    config.write_text(render_config(SHIPPED_CONFIG.read_text(), target="127.0.0.1:8090"))
    done = promtool("check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    for name in RULE_FILES:
        assert f"{name}\n  SUCCESS" in done.stdout, done.stdout


def test_render_config_rewrites_only_target_intervals_and_rule_paths() -> None:
    shipped = SHIPPED_CONFIG.read_text()
    rendered = render_config(shipped, target="127.0.0.1:1234", rules_dir=Path("/x"))
    changed = {
        (a.strip(), b.strip())
        for a, b in zip(shipped.splitlines(), rendered.splitlines(), strict=True)
        if a != b
    }
    assert changed == {
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("- /etc/prometheus/screener.rules.yml", "- /x/screener.rules.yml"),
        ("- /etc/prometheus/screener.alerts.yml", "- /x/screener.alerts.yml"),
        ('- targets: ["127.0.0.1:8090"]', '- targets: ["127.0.0.1:1234"]'),
    }
    with pytest.raises(ValueError, match="targets"):
        render_config(shipped.replace("- targets:", "- hosts:"), target="127.0.0.1:1")


def test_alert_rules_pass_their_unit_tests(promtool_available: None) -> None:
    """AmiDown, RedisUnreachable and every other alert fire (and stay silent) on synthetic
    series as screener.alerts.test.yml expects."""
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    defined = set(re.findall(r"- alert: (\w+)", (DEPLOY_PROMETHEUS / RULE_FILES[1]).read_text()))
    assert {"AmiDown", "RedisUnreachable"} <= defined
    assert tested == defined
    firing = re.findall(
        r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", ALERT_TESTS.read_text()
    )
    assert set(firing) == defined  # each alert is seen firing at least once


def test_alert_labels_carry_no_numbers() -> None:
    """Labels identify an alert; values and thresholds belong in annotations."""
    text = (DEPLOY_PROMETHEUS / RULE_FILES[1]).read_text()
    labels = re.findall(r"labels:\n((?:\s+\w+: .*\n)+)", text)
    assert labels
    for block in labels:
        for name, value in re.findall(r"(\w+): (.*)", block):
            assert name == "severity" and value in {"critical", "warning"}, (name, value)


# --- the Grafana model -----------------------------------------------------------------------


def test_dashboard_is_a_grafana_model_with_a_datasource_variable() -> None:
    model = dashboard()
    assert model["uid"] == "screener-overview" and model["schemaVersion"] >= 36
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["hotline"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    every = panels(model)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"] and t["expr"].strip(), panel["title"]


def test_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_grafana_provisioning_files() -> None:
    provider = (DEPLOY_GRAFANA / "provisioning" / "dashboards" / "screener.yml").read_text()
    assert "apiVersion: 1" in provider and "type: file" in provider
    datasource = (DEPLOY_GRAFANA / "provisioning" / "datasources" / "screener.yml").read_text()
    assert "type: prometheus" in datasource and "timeInterval: 15s" in datasource
    assert "scrape_interval: 15s" in SHIPPED_CONFIG.read_text()  # what timeInterval mirrors


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*(p.name for p in PROMETHEUS_FILES), DASHBOARD.name])
def test_every_metric_named_exists_in_metrics_py(name: str) -> None:
    named = set(re.findall(METRIC, sources()[name]))
    assert named or name == "prometheus.yml"
    assert not named - exported().keys()


@pytest.mark.parametrize("name", [*(p.name for p in PROMETHEUS_FILES), DASHBOARD.name])
def test_every_label_used_on_a_metric_is_one_it_has(name: str) -> None:
    text, labels = sources()[name], exported()
    checked = 0
    for metric, matchers in MATCHERS.findall(text):
        used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
        assert used <= labels[metric] | TARGET_LABELS, (metric, used)
        checked += 1
    for by, metric in AGGREGATION.findall(text):
        used = {label.strip() for label in by.split(",")}
        assert used <= labels[metric] | TARGET_LABELS, (metric, used)
        checked += 1
    assert checked or name == "prometheus.yml"


def test_the_dashboard_and_rules_use_every_exported_metric() -> None:
    """Nothing screener exports is left off: shown on the dashboard or used by a rule."""

    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name)

    texts = sources()
    used = {
        family(name)
        for source in (DASHBOARD.name, *RULE_FILES)
        for name in re.findall(METRIC, texts[source])
    }
    assert {family(name) for name in exported()} - used == set()
