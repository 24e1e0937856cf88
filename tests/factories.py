"""Builders for the value types the tests share (plain functions, no pytest)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from screener.model import CallerId, Flag, FlagSource, Presentation
from screener.number import normalise
from screener.rules import Origin, Rule, RuleContext, parse_rule

AT = datetime(2024, 3, 6, 14, 30, 5, tzinfo=UTC)  # a Wednesday, 14h


def make_flag(
    flag_id: str = "1700000000.1",
    raw: str = "13812341234",
    *,
    raw_name: str = "Caller Name",
    at: datetime = AT,
    agent: str = "PJSIP/agent1",
    hotline: str = "service",
    presentation: Presentation = Presentation.ALLOWED,
    region: str = "CN",
    **changes: Any,
) -> Flag:
    """A genuine-looking flag of one call; ``changes`` replaces any other field."""
    flag = Flag(
        flag_id=flag_id,
        caller=CallerId(raw, raw_name, presentation, normalise(raw, region)),
        called="4008001234",
        hotline=hotline,
        queue="hotline",
        agent=agent,
        agent_channel=f"{agent}-00000002",
        caller_channel="PJSIP/trunk-00000001",
        uniqueid=flag_id,
        linkedid=flag_id,
        source=FlagSource.FEATURE,
        at=at,
        tz=str(at.tzinfo),
    )
    return dataclasses.replace(flag, **changes)


RULE_HOTLINES = frozenset({"service", "sales"})


def make_rule(
    value: str = "+8613812341234",
    *,
    now: float = AT.timestamp(),
    actor: str = "alice",
    origin: Origin = Origin.ADMIN,
    **fields: object,
) -> Rule:
    """A rule as an admin would give it (checked by ``parse_rule``; the id is left empty)."""
    ctx = RuleContext(
        region="CN",
        zone=ZoneInfo("UTC"),
        now=now,
        actor=actor,
        hotlines=RULE_HOTLINES,
        origin=origin,
    )
    return parse_rule({"value": value, "reason": f"test {value}", **fields}, ctx)
