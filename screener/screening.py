"""Use cases of screening: the verdict for a call on entry, learning high-risk hours, automatic
blocks from agents' flags, and the expiry of rules. No library I/O of its own.

The dialplan's ``screener-inbound`` Gosub runs
``AGI(agi://HOST:4573/screen,${SCREENER_CID_B64},${SCREENER_DID},${SCREENER_CID_PRES})``:
the caller number arrives base64-encoded (the raw bytes, whatever a caller put in them), the
called number already filtered to digits, the presentation as Asterisk names it. Nothing from the
AGI environment is used: ``agi_callerid`` and friends may hold a caller's forged lines.

:meth:`ScreeningService.screen` answers within ``screening.budget_ms``: if Redis fails or is slow
the verdict is ``allow`` (fail open), counted in ``screener_screen_failopen_total``. The verdict
goes back in one channel variable, ``SCREENER_SCREEN = verdict/treatment/digit/rule`` (``-`` for
none), which the dialplan cuts apart: one command, one round trip.

A caller number holding a control character (CR, LF...) is an injection attempt: it is counted
(``screener_attacks_total{kind="cid_injection"}``) and screened by what precedes the first
control character, the number the caller's carrier actually presented.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from screener.agi_protocol import AgiRequest
from screener.agi_server import AgiSession
from screener.config import Settings
from screener.errors import StoreError
from screener.metrics import Metrics
from screener.model import Flag, Presentation
from screener.number import identity, is_dialable, mask
from screener.policy import (
    Call,
    Decision,
    Treatments,
    auto_block_duration,
    decide,
    fail_open,
    high_risk_hours,
    human_duration,
    quorum,
)
from screener.rules import (
    Match,
    Mode,
    Origin,
    Rule,
    RuleList,
    Verdict,
    describe,
    index_values,
    with_id,
)
from screener.service import decode_b64
from screener.store import Patterns

logger = logging.getLogger(__name__)

RESULT_VARIABLE = "SCREENER_SCREEN"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PRESENTATION = re.compile(r"[a-z_]{0,40}")


class RuleStore(Protocol):
    """What screening needs from Redis (``store.Store`` implements it)."""

    async def candidate_rules(
        self,
        number_key: str,
        anonymous_kind: str,
        e164: str,
        timeout: float | None = None,
    ) -> list[Rule]: ...

    async def patterns(self) -> Patterns: ...

    async def agents_who_flagged(self, caller_key: str, since: float) -> dict[str, float]: ...

    async def auto_blocks_of(self, caller_key: str) -> int: ...

    async def add_auto_block(self, rule: Rule, *, caller_key: str, now: float) -> str | None: ...

    async def expired_rule_ids(self, now: float, limit: int = 500) -> list[str]: ...

    async def remove_rule(
        self, rule_id: str, *, by: str, why: str, now: float, action: str = "remove"
    ) -> Rule | None: ...

    async def rule_counts(self) -> dict[tuple[str, str, str], int]: ...

    async def abort_stale_imports(self, now: float, older_than: float = 3600.0) -> int: ...


def caller_number(raw: str) -> tuple[str, bool]:
    """The number a caller presented, and whether text was injected after it.

    >>> caller_number("0123\\r\\nagi_arg_1: x")
    ('0123', True)
    """
    m = _CONTROL.search(raw)
    return (raw[: m.start()], True) if m else (raw, False)


class ScreeningService:
    """Verdicts for calls on entry, and what screening learns from flags."""

    def __init__(
        self,
        settings: Settings,
        store: RuleStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        cfg = settings.screening
        self.treatments = Treatments(cfg.default_treatment, dict(cfg.treatments))
        self.high_risk: frozenset[int] = frozenset()

    # -- the verdict -------------------------------------------------------------------------
    def call_from_args(self, args: Sequence[str], now: float) -> Call:
        """The call as the dialplan describes it in the AGI arguments (see module doc)."""
        cfg = self.settings
        raw = decode_b64(args[0]) if args else ""
        number, injected = caller_number(raw)
        key, e164 = identity(number, cfg.numbers.default_region)
        if injected:
            self.metrics.attacks.labels(kind="cid_injection").inc()
            # the number is masked like every logged number; the injected text (which may
            # hold numbers too) is only counted
            logger.warning(
                "screen caller id holds control characters (injection attempt) caller=%s "
                "injected_chars=%d",
                mask(e164) if e164 else "invalid",
                len(raw) - len(number),
            )
        did = args[1] if len(args) > 1 and is_dialable(args[1]) else ""
        pres = args[2] if len(args) > 2 and _PRESENTATION.fullmatch(args[2]) else ""
        return Call(
            key=key,
            e164=e164,
            presentation=Presentation.from_asterisk(pres, number),
            hotline=cfg.hotline_name(did),
            local=datetime.fromtimestamp(now, cfg.numbers.zone),
        )

    async def decide(self, call: Call, now: float) -> Decision:
        """The verdict for a call, failing open within the budget."""
        if not self.settings.screening.enabled:
            return Decision(Verdict.ALLOW, "failopen_disabled")
        budget = self.settings.screening.budget
        try:
            async with asyncio.timeout(budget):
                rules = await self.store.candidate_rules(
                    call.key, call.anonymous_kind, call.e164, budget
                )
        except TimeoutError:
            return fail_open("timeout")
        except StoreError as e:
            self.metrics.redis_up.set(0)
            self.metrics.errors.labels(component="redis").inc()
            logger.warning("screen fails open, redis error=%s", e)
            return fail_open("redis")
        self.metrics.redis_up.set(1)
        return decide(call, rules, now=now, high_risk=self.high_risk, treatments=self.treatments)

    async def screen(self, args: Sequence[str]) -> tuple[Decision, str]:
        """Decide a call from its AGI arguments; returns the decision and the ``SCREENER_SCREEN``
        value. Counts and logs it."""
        started = time.perf_counter()
        now = self.clock()
        call = self.call_from_args(args, now)
        decision = await self.decide(call, now)
        digit = ""
        if decision.verdict is Verdict.CHALLENGE:
            digit = secrets.choice(self.settings.screening.challenge_digits)
        self._count(call, decision, time.perf_counter() - started)
        rule_id = decision.rule.id if decision.rule else "-"
        value = f"{decision.verdict}/{decision.treatment or '-'}/{digit or '-'}/{rule_id}"
        return decision, value

    def _count(self, call: Call, decision: Decision, seconds: float) -> None:
        m = self.metrics
        m.screen_seconds.observe(seconds)
        m.screens.labels(
            verdict=str(decision.verdict),
            reason=decision.label,
            treatment=str(decision.treatment or "none"),
            hotline=call.hotline,
        ).inc()
        if decision.reason.startswith("failopen_") and decision.reason != "failopen_disabled":
            m.screen_failopen.labels(reason=decision.reason.removeprefix("failopen_")).inc()
        for rule in decision.shadow:
            m.shadow_hits.labels(match=str(rule.match), action=str(rule.action)).inc()
            logger.info(
                "screen shadow rule would apply rule=%s caller=%s hotline=%s",
                describe(rule),
                normalise_masked(call),
                call.hotline,
            )
        level = logging.DEBUG if decision.rule is None and not decision.shadow else logging.INFO
        logger.log(
            level,
            "screen verdict=%s treatment=%s reason=%r caller=%s hotline=%s ms=%.2f",
            decision.verdict,
            decision.treatment or "-",
            decision.reason,
            normalise_masked(call),
            call.hotline,
            seconds * 1000,
        )

    async def handle_agi(self, session: AgiSession) -> None:
        """The FastAGI route ``screen``: decide, then answer in one SET VARIABLE."""
        _, value = await self.screen(session.request.args)
        await session.set_variable(RESULT_VARIABLE, value)

    def on_suspicious(self, request: AgiRequest) -> None:
        """An AGI environment with forged lines (a caller ID holding CR LF)."""
        self.metrics.attacks.labels(kind="agi_environment").inc()

    def on_agi_error(self, kind: str) -> None:
        self.metrics.agi_sessions.labels(kind=kind).inc()

    # -- learning ----------------------------------------------------------------------------
    async def relearn(self) -> frozenset[int]:
        """Recompute the high-risk hours from the flag histogram.

        Raises:
            StoreError: Redis failed (the previous hours stay in force).
        """
        return self.learn((await self.store.patterns()).hours)

    def learn(self, hours: Mapping[int, int]) -> frozenset[int]:
        """Set the high-risk hours from a flag histogram (hour of day -> flags)."""
        cfg = self.settings.screening
        learned = high_risk_hours(hours, factor=cfg.learn_factor, min_flags=cfg.learn_min_flags)
        if learned != self.high_risk:
            logger.info("high-risk hours learned hours=%s", ",".join(map(str, sorted(learned))))
        self.high_risk = learned
        self.metrics.high_risk_hours.set(len(learned))
        return learned

    async def consider_auto_block(self, flag: Flag) -> Rule | None:
        """After a flag is stored: block the caller for a while if enough distinct agents
        flagged them within the window. Withheld or non-numbers and allowlisted numbers are never
        blocked automatically. Returns the new rule, if one was made.

        Raises:
            StoreError: Redis failed.
        """
        cfg = self.settings.screening
        e164 = flag.caller.info.e164
        withheld = flag.caller.presentation is not Presentation.ALLOWED
        if not cfg.auto_block or not e164 or withheld:
            return None
        now = self.clock()
        window = cfg.quorum_window_hours * 3600
        key = flag.caller.key
        agents = await self.store.agents_who_flagged(key, now - window)
        reached = quorum(agents, now, window=window, needed=cfg.quorum)
        if reached is None:
            return None
        existing = await self.store.candidate_rules(key, "", e164)
        for rule in existing:
            if rule.mode is not Mode.ENFORCE or not rule.active(now) or not rule.covers(e164):
                continue
            if rule.list is RuleList.ALLOW:
                logger.info(
                    "auto block skipped, allowlisted caller=%s rule=%s", flag.caller.masked, rule.id
                )
                return None
            if rule.match is Match.NUMBER and rule.action is Verdict.BLOCK:
                return None  # already blocked
        previous = await self.store.auto_blocks_of(key)
        duration = auto_block_duration(previous, [h * 3600 for h in cfg.auto_block_hours])
        names = ", ".join(reached.agents)
        reason = (
            f"auto: flagged by {len(reached.agents)} distinct agents ({names}) within "
            f"{human_duration(window)}; automatic block #{previous + 1}, "
            f"{human_duration(duration)}"
        )
        rule = Rule(
            id="",
            list=RuleList.BLOCK,
            match=Match.NUMBER,
            value=e164,
            action=Verdict.BLOCK,
            reason=reason[:200],
            created_by="screener",
            created_at=now,
            expires_at=now + duration,
            origin=Origin.AUTO,
            index=index_values(Match.NUMBER, e164),
        )
        rule_id = await self.store.add_auto_block(rule, caller_key=key, now=now)
        if rule_id is None:
            return None
        self.metrics.auto_blocks.inc()
        logger.info("auto block rule=%s caller=%s reason=%r", rule_id, flag.caller.masked, reason)
        return with_id(rule, rule_id)

    async def sweep_expired(self) -> int:
        """Delete expired rules (audited as ``expire``); returns how many.

        Raises:
            StoreError: Redis failed.
        """
        now = self.clock()
        removed = 0
        for rule_id in await self.store.expired_rule_ids(now):
            if await self.store.remove_rule(
                rule_id, by="screener", why="expired", now=now, action="expire"
            ):
                removed += 1
        if removed:
            logger.info("expired rules removed=%d", removed)
        withdrawn = await self.store.abort_stale_imports(now)
        if withdrawn:
            logger.warning("stale import withdrawn rules=%d", withdrawn)
        return removed

    async def refresh_gauges(self) -> None:
        """Blocklist sizes for ``screener_rules``.

        Raises:
            StoreError: Redis failed.
        """
        counts = await self.store.rule_counts()
        self.metrics.rules.clear()
        for (rule_list, match, origin), n in counts.items():
            self.metrics.rules.labels(list=rule_list, match=match, origin=origin).set(n)


def normalise_masked(call: Call) -> str:
    """The caller as logs show it: masked E.164, or the kind."""
    if call.e164:
        return mask(call.e164)
    return call.anonymous_kind or "invalid"
