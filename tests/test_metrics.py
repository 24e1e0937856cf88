"""Tests for screener.metrics: names, types and labels on an injected registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from screener.metrics import Metrics

FORBIDDEN_LABELS = {"caller", "number", "uniqueid", "linkedid", "channel", "agent", "flag_id"}


def families(registry: CollectorRegistry) -> dict[str, str]:
    return {m.name: m.type for m in registry.collect()}


def test_metric_names_and_types() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    found = families(registry)
    assert found == {
        "screener_flags": "counter",
        "screener_flag_requests": "counter",
        "screener_flag_redirect_seconds": "histogram",
        "screener_attacks": "counter",
        "screener_errors": "counter",
        "screener_ami_connected": "gauge",
        "screener_ami_reconnects": "counter",
        "screener_ami_events": "counter",
        "screener_spool_pending": "gauge",
        "screener_redis_up": "gauge",
        "screener_screens": "counter",
        "screener_screen_seconds": "histogram",
        "screener_screen_failopen": "counter",
        "screener_shadow_hits": "counter",
        "screener_auto_blocks": "counter",
        "screener_rules": "gauge",
        "screener_high_risk_hours": "gauge",
        "screener_agi_sessions": "counter",
        "screener_flags_by_hour": "gauge",
        "screener_flags_by_weekday": "gauge",
        "screener_top_source_flags": "gauge",
        "screener_callers_flagged": "gauge",
        "screener_prefix_clusters": "gauge",
    }


def test_labels_have_low_cardinality() -> None:
    m = Metrics(CollectorRegistry())
    metrics = [v for v in vars(m).values() if not isinstance(v, CollectorRegistry)]
    assert len(metrics) == 23
    for metric in metrics:
        assert not FORBIDDEN_LABELS & set(metric._labelnames)


def test_counter_samples_end_in_total() -> None:
    m = Metrics(CollectorRegistry())
    m.ami_reconnects.labels(reason="watchdog").inc()
    for family in m.registry.collect():
        if family.type == "counter":
            for sample in family.samples:
                assert sample.name.endswith(("_total", "_created")), sample.name


def test_screening_labels() -> None:
    m = Metrics(CollectorRegistry())
    labels = {
        "screens": ("verdict", "reason", "treatment", "hotline"),
        "screen_failopen": ("reason",),
        "shadow_hits": ("match", "action"),
        "rules": ("list", "match", "origin"),
        "agi_sessions": ("kind",),
        "auto_blocks": (),
        "high_risk_hours": (),
        "screen_seconds": (),
    }
    for attr, names in labels.items():
        assert tuple(getattr(m, attr)._labelnames) == names, attr


def test_screening_samples() -> None:
    m = Metrics(CollectorRegistry())
    m.screens.labels(verdict="block", reason="number", treatment="busy", hotline="service").inc()
    m.screen_failopen.labels(reason="timeout").inc()
    m.auto_blocks.inc()
    m.rules.labels(list="block", match="number", origin="auto").set(4)
    m.screen_seconds.observe(0.0007)
    r = m.registry
    screen = {"verdict": "block", "reason": "number", "treatment": "busy", "hotline": "service"}
    assert r.get_sample_value("screener_screens_total", screen) == 1
    assert r.get_sample_value("screener_screen_failopen_total", {"reason": "timeout"}) == 1
    assert r.get_sample_value("screener_auto_blocks_total") == 1
    rules = {"list": "block", "match": "number", "origin": "auto"}
    assert r.get_sample_value("screener_rules", rules) == 4
    assert r.get_sample_value("screener_screen_seconds_bucket", {"le": "0.001"}) == 1
    assert r.get_sample_value("screener_screen_seconds_bucket", {"le": "0.0005"}) == 0


def test_a_fresh_registry_per_instance() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.flag_requests.labels(outcome="recorded").inc()
    assert a.registry.get_sample_value("screener_flag_requests_total", {"outcome": "recorded"}) == 1
    assert (
        b.registry.get_sample_value("screener_flag_requests_total", {"outcome": "recorded"}) is None
    )


def test_two_metrics_on_one_registry_collide() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry)


def test_counters_are_exposed_with_total() -> None:
    m = Metrics(CollectorRegistry())
    m.flags.labels(
        hotline="service",
        queue="hotline",
        presentation="allowed",
        source="feature",
        kind="mobile",
        region="CN",
    ).inc()
    m.attacks.labels(kind="forged_flag").inc(2)
    m.flag_redirect_seconds.observe(0.003)
    r = m.registry
    labels = {
        "hotline": "service",
        "queue": "hotline",
        "presentation": "allowed",
        "source": "feature",
        "kind": "mobile",
        "region": "CN",
    }
    assert r.get_sample_value("screener_flags_total", labels) == 1
    assert r.get_sample_value("screener_attacks_total", {"kind": "forged_flag"}) == 2
    assert r.get_sample_value("screener_flag_redirect_seconds_bucket", {"le": "0.005"}) == 1
    assert r.get_sample_value("screener_flag_redirect_seconds_count") == 1


def test_statistics_gauges_have_bounded_labels() -> None:
    m = Metrics(CollectorRegistry())
    assert tuple(m.flags._labelnames) == (
        "hotline", "queue", "presentation", "source", "kind", "region"
    )  # fmt: skip
    assert tuple(m.flags_by_hour._labelnames) == ("hour",)
    assert tuple(m.flags_by_weekday._labelnames) == ("weekday",)
    assert tuple(m.top_sources._labelnames) == ("rank", "source", "kind", "region")
