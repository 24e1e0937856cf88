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
    }


def test_labels_have_low_cardinality() -> None:
    m = Metrics(CollectorRegistry())
    metrics = [v for v in vars(m).values() if not isinstance(v, CollectorRegistry)]
    assert len(metrics) == 10
    for metric in metrics:
        assert not FORBIDDEN_LABELS & set(metric._labelnames)


def test_counter_samples_end_in_total() -> None:
    m = Metrics(CollectorRegistry())
    m.ami_reconnects.labels(reason="watchdog").inc()
    for family in m.registry.collect():
        if family.type == "counter":
            for sample in family.samples:
                assert sample.name.endswith(("_total", "_created")), sample.name


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
        hotline="service", presentation="allowed", source="feature", kind="mobile", region="CN"
    ).inc()
    m.attacks.labels(kind="forged_flag").inc(2)
    m.flag_redirect_seconds.observe(0.003)
    r = m.registry
    labels = {
        "hotline": "service",
        "presentation": "allowed",
        "source": "feature",
        "kind": "mobile",
        "region": "CN",
    }
    assert r.get_sample_value("screener_flags_total", labels) == 1
    assert r.get_sample_value("screener_attacks_total", {"kind": "forged_flag"}) == 2
    assert r.get_sample_value("screener_flag_redirect_seconds_bucket", {"le": "0.005"}) == 1
    assert r.get_sample_value("screener_flag_redirect_seconds_count") == 1
