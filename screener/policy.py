"""Screening policy: a pure function from a call and its candidate rules to a verdict. No I/O.

:func:`decide` is the whole policy:

1. Rules that are expired, out of scope for the call's hotline, outside their time windows, or
   (ranges) do not cover the number are set aside.
2. Shadow rules never decide; every one that applies is reported in ``Decision.shadow`` (to be
   logged and counted as "would have hit").
3. Any applicable allowlist rule wins: the call is allowed, whatever else matches.
4. Otherwise the most specific applicable blocklist rule decides: an exact number before a range
   before a prefix (longer prefixes first) before an anonymous rule; between equals the harsher
   action (block, then analysis, then challenge), then the newest.
5. No rule: allow.

A block's treatment is the rule's own, else the hotline's configured one, else the default.

:func:`high_risk_hours` learns the hours rules can call ``learned`` from the flag histogram, and
:func:`quorum` / :func:`auto_block_duration` decide automatic blocks from agents' flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from screener.model import Presentation
from screener.rules import Match, Mode, Rule, RuleList, Treatment, Verdict

_SEVERITY = {Verdict.BLOCK: 3, Verdict.ANALYSIS: 2, Verdict.CHALLENGE: 1, Verdict.ALLOW: 0}


@dataclass(frozen=True, slots=True)
class Call:
    """What screening knows of a call: the caller's key and E.164 (``""`` when withheld or not a
    number), presentation, hotline name and the local time of the call."""

    key: str
    e164: str
    presentation: Presentation
    hotline: str
    local: datetime

    @property
    def anonymous_kind(self) -> str:
        """``withheld`` / ``unavailable`` for anonymous callers, ``""`` otherwise."""
        if self.presentation is Presentation.WITHHELD:
            return "withheld"
        if self.presentation is Presentation.UNAVAILABLE or self.key == "anonymous":
            return "unavailable"
        return ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, the rule that made it (None: no rule, or failing open) and why."""

    verdict: Verdict
    reason: str
    rule: Rule | None = None
    treatment: Treatment | None = None
    shadow: tuple[Rule, ...] = ()

    @property
    def label(self) -> str:
        """Why, as a bounded metric label: ``allowlist``, ``number``, ``prefix``, ``range``,
        ``anonymous``, ``no_rule`` or a fail-open reason."""
        if self.rule is None:
            return self.reason if self.reason.startswith("failopen") else "no_rule"
        if self.rule.list is RuleList.ALLOW:
            return "allowlist"
        return str(self.rule.match)


@dataclass(frozen=True, slots=True)
class Treatments:
    """The configured treatments: per hotline, and the default."""

    default: Treatment = Treatment.ANALYSIS
    per_hotline: Mapping[str, Treatment] | None = None

    def for_rule(self, rule: Rule, hotline: str) -> Treatment:
        if rule.treatment is not None:
            return rule.treatment
        if self.per_hotline and hotline in self.per_hotline:
            return self.per_hotline[hotline]
        return self.default


def _specificity(rule: Rule) -> tuple[int, int]:
    if rule.match is Match.NUMBER:
        return (4, 0)
    if rule.match is Match.RANGE:
        lo, _, hi = rule.value.partition("..")
        # a narrower range is more specific
        return (3, -(int(hi[1:]) - int(lo[1:])))
    if rule.match is Match.PREFIX:
        return (2, len(rule.value))
    return (1, 0)


def _matches_identity(rule: Rule, call: Call) -> bool:
    if rule.match is Match.ANONYMOUS:
        kind = call.anonymous_kind
        return bool(kind) and rule.value in ("any", kind)
    if not call.e164:
        return False
    if rule.match is Match.NUMBER:
        return rule.value == call.e164
    if rule.match is Match.PREFIX:
        return call.e164.startswith(rule.value)
    return rule.covers(call.e164)


def applicable(
    rules: Iterable[Rule], call: Call, now: float, high_risk: frozenset[int]
) -> list[Rule]:
    """The rules that apply to this call now (identity, expiry, scope, windows)."""
    return [
        r
        for r in rules
        if r.active(now)
        and r.applies_to(call.hotline)
        and _matches_identity(r, call)
        and r.in_window(call.local, high_risk)
    ]


def decide(
    call: Call,
    candidates: Iterable[Rule],
    *,
    now: float,
    high_risk: frozenset[int] = frozenset(),
    treatments: Treatments = Treatments(),
) -> Decision:
    """The verdict for ``call`` given the rules its identity could match (see module doc)."""
    rules = applicable(candidates, call, now, high_risk)
    shadow = tuple(r for r in rules if r.mode is Mode.SHADOW)
    enforced = [r for r in rules if r.mode is Mode.ENFORCE]
    allows = [r for r in enforced if r.list is RuleList.ALLOW]
    if allows:
        rule = max(allows, key=lambda r: (_specificity(r), r.created_at))
        return Decision(Verdict.ALLOW, f"allowlisted by {rule.id}", rule, shadow=shadow)
    blocks = [r for r in enforced if r.list is RuleList.BLOCK]
    if not blocks:
        return Decision(Verdict.ALLOW, "no rule", shadow=shadow)
    rule = max(blocks, key=lambda r: (_specificity(r), _SEVERITY[r.action], r.created_at))
    treatment = treatments.for_rule(rule, call.hotline) if rule.action is Verdict.BLOCK else None
    return Decision(rule.action, f"{rule.match} rule {rule.id}", rule, treatment, shadow)


def fail_open(reason: str) -> Decision:
    """The verdict when screening cannot decide in time: allow, and say why."""
    return Decision(Verdict.ALLOW, f"failopen_{reason}")


# --- learning from flags ------------------------------------------------------------------------


def high_risk_hours(
    hours: Mapping[int, int], *, factor: float = 1.5, min_flags: int = 5
) -> frozenset[int]:
    """Hours of day whose flag count is at least ``factor`` times the hourly mean and at least
    ``min_flags``: where harassment concentrates (typically night and noon).

    >>> sorted(high_risk_hours({0: 30, 1: 25, 12: 20, 15: 2}, factor=2, min_flags=5))
    [0, 1, 12]
    """
    total = sum(hours.values())
    if total == 0:
        return frozenset()
    mean = total / 24
    return frozenset(h for h, n in hours.items() if n >= min_flags and n >= factor * mean)


@dataclass(frozen=True, slots=True)
class Quorum:
    """Agents who flagged a caller within the window, when they are enough for a block."""

    agents: tuple[str, ...]
    window: float


def quorum(
    agent_last_flag: Mapping[str, float], now: float, *, window: float, needed: int
) -> Quorum | None:
    """The distinct agents who flagged within ``window`` seconds, if at least ``needed``."""
    recent = tuple(sorted(a for a, t in agent_last_flag.items() if now - t <= window))
    return Quorum(recent, window) if len(recent) >= needed else None


def auto_block_duration(previous_blocks: int, durations: Sequence[float]) -> float:
    """Escalation: the first automatic block lasts ``durations[0]``, the next ``durations[1]``...
    and every later one the last duration."""
    return durations[min(previous_blocks, len(durations) - 1)]


def human_duration(seconds: float) -> str:
    """``3600`` -> ``1h``; ``93600`` -> ``1d2h``."""
    rest = int(seconds)
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"
