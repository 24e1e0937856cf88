"""Prometheus metrics: the only module that creates them.

Built on an injected registry (a fresh one per test, read back with ``get_sample_value``).
Labels have low cardinality by construction: hotline names come from the configuration (unknown
numbers are ``other``), number kinds and regions from phonenumbers' fixed vocabularies, outcomes
and attack kinds from enums. No caller number, channel or uniqueid is ever a label.

>>> from prometheus_client import CollectorRegistry
>>> m = Metrics(CollectorRegistry())
>>> m.flag_requests.labels(outcome="recorded").inc()
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric screener exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.flags = Counter(
            "screener_flags_total",
            "Calls flagged by agents and moved to the analysis queue.",
            ["hotline", "queue", "presentation", "source", "kind", "region"],
            registry=registry,
        )
        self.flag_requests = Counter(
            "screener_flag_requests_total",
            "Flag requests by outcome (recorded, duplicate, not_inbound, caller_gone, ...).",
            ["outcome"],
            registry=registry,
        )
        self.flag_redirect_seconds = Histogram(
            "screener_flag_redirect_seconds",
            "From the flag event's arrival to Asterisk confirming the redirect.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.attacks = Counter(
            "screener_attacks_total",
            "Forged or hostile input detected and refused.",
            ["kind"],
            registry=registry,
        )
        self.errors = Counter(
            "screener_errors_total",
            "Errors caught at a boundary, by component.",
            ["component"],
            registry=registry,
        )
        self.ami_connected = Gauge(
            "screener_ami_connected",
            "1 while logged in to the Asterisk Manager Interface.",
            registry=registry,
        )
        self.ami_reconnects = Counter(
            "screener_ami_reconnects_total",
            "AMI connections lost or declared dead by the watchdog.",
            ["reason"],
            registry=registry,
        )
        self.ami_events = Counter(
            "screener_ami_events_total",
            "AMI events taken in, by event name.",
            ["event"],
            registry=registry,
        )
        self.spool_pending = Gauge(
            "screener_spool_pending",
            "Flags kept in the local spool, waiting for Redis.",
            registry=registry,
        )
        self.redis_up = Gauge(
            "screener_redis_up",
            "1 if the last Redis operation succeeded.",
            registry=registry,
        )
        self.screens = Counter(
            "screener_screens_total",
            "Calls screened on entry, by verdict, why (allowlist, number, prefix, range, "
            "anonymous, no_rule, failopen_*) and treatment.",
            ["verdict", "reason", "treatment", "hotline"],
            registry=registry,
        )
        self.screen_seconds = Histogram(
            "screener_screen_seconds",
            "From the FastAGI request to the verdict being decided.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.screen_failopen = Counter(
            "screener_screen_failopen_total",
            "Screens answered 'allow' because screener could not decide in time.",
            ["reason"],
            registry=registry,
        )
        self.shadow_hits = Counter(
            "screener_shadow_hits_total",
            "Shadow rules that matched a call (what they would have done).",
            ["match", "action"],
            registry=registry,
        )
        self.auto_blocks = Counter(
            "screener_auto_blocks_total",
            "Automatic blocks made from a quorum of agents' flags.",
            registry=registry,
        )
        self.rules = Gauge(
            "screener_rules",
            "Blocklist and allowlist sizes by list, match kind and origin.",
            ["list", "match", "origin"],
            registry=registry,
        )
        self.high_risk_hours = Gauge(
            "screener_high_risk_hours",
            "Hours of day currently learned as high-risk (from agents' flags).",
            registry=registry,
        )
        self.agi_sessions = Counter(
            "screener_agi_sessions_total",
            "FastAGI connections that ended in error, by kind (remote, timeout, overload...).",
            ["kind"],
            registry=registry,
        )
        self.flags_by_hour = Gauge(
            "screener_flags_by_hour",
            "Flags recorded in Redis by hour of day (configured time zone), all callers.",
            ["hour"],
            registry=registry,
        )
        self.flags_by_weekday = Gauge(
            "screener_flags_by_weekday",
            "Flags recorded in Redis by ISO weekday (1 = Monday), all callers.",
            ["weekday"],
            registry=registry,
        )
        self.top_sources = Gauge(
            "screener_top_source_flags",
            "Flags of the most-flagged callers (a bounded top list; numbers masked).",
            ["rank", "source", "kind", "region"],
            registry=registry,
        )
        self.callers_flagged = Gauge(
            "screener_callers_flagged",
            "Distinct callers with at least one flag in Redis (within retention).",
            registry=registry,
        )
        self.prefix_clusters = Gauge(
            "screener_prefix_clusters",
            "Number blocks (100 numbers) with at least 3 distinct flagged numbers.",
            registry=registry,
        )
