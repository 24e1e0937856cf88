"""Blocklist administration: what the CLI and the HTTP admin API both do. No library I/O.

Every change names who made it (``actor``) and why; the store writes it to the audit trail in the
same atomic step as the change itself. Imports are checked whole before anything is written and
then applied in one transaction (:meth:`RuleAdmin.import_rules`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from screener.config import Settings
from screener.errors import ScreenerError
from screener.number import normalise
from screener.rules import (
    ACTOR,
    Match,
    Origin,
    Rule,
    RuleContext,
    RuleList,
    canonical_value,
    clean_text,
    export_csv,
    export_json,
    infer_match,
    parse_import,
    parse_rule,
    with_id,
)
from screener.store import AuditEntry


class NotFound(ScreenerError):
    """No rule by that id."""


class AdminStore(Protocol):
    """What administration needs from Redis (``store.Store`` implements it)."""

    async def add_rules(
        self, rules: Iterable[Rule], *, by: str, action: str, now: float
    ) -> list[str]: ...

    async def import_rules(
        self, rules: Iterable[Rule], *, by: str, why: str, now: float, chunk: int = 5000
    ) -> list[str]: ...

    async def get_rule(self, rule_id: str) -> Rule | None: ...

    async def remove_rule(
        self, rule_id: str, *, by: str, why: str, now: float, action: str = "remove"
    ) -> Rule | None: ...

    async def all_rules(self) -> list[Rule]: ...

    async def candidate_rules(
        self,
        number_key: str,
        anonymous_kind: str,
        e164: str,
        timeout: float | None = None,
    ) -> list[Rule]: ...

    async def audit_trail(
        self, limit: int = 100, rule_id: str | None = None
    ) -> list[AuditEntry]: ...


@dataclass(frozen=True, slots=True)
class RuleFilter:
    """Which rules ``list`` shows (all when empty)."""

    list: RuleList | None = None
    origin: Origin | None = None
    value: str = ""  # rules whose value matches this number, prefix or range text exactly
    include_expired: bool = False


def check_actor(actor: str) -> str:
    """Who makes a change: 1-64 of ``A-Z a-z 0-9 . _ @ + -``.

    Raises:
        ValueError: anything else.
    """
    if not ACTOR.fullmatch(actor):
        raise ValueError("the actor (--by) must be 1-64 of A-Z a-z 0-9 . _ @ + -")
    return actor


class RuleAdmin:
    """Add, remove, list, show, import and export rules; read the audit trail."""

    def __init__(
        self, settings: Settings, store: AdminStore, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock

    def context(self, actor: str, origin: Origin = Origin.ADMIN) -> RuleContext:
        s = self.settings
        return RuleContext(
            region=s.numbers.default_region,
            zone=s.numbers.zone,
            now=self.clock(),
            actor=check_actor(actor),
            hotlines=frozenset(s.hotlines.values()),
            origin=origin,
        )

    async def add(self, fields: dict[str, object], actor: str) -> Rule:
        """Check and store one rule.

        Raises:
            ValueError: the fields are wrong (every problem named).
            StoreError: Redis failed; nothing stored.
        """
        rule = parse_rule(fields, self.context(actor))
        (rule_id,) = await self.store.add_rules([rule], by=actor, action="add", now=rule.created_at)
        return with_id(rule, rule_id)

    async def remove(self, rule_id: str, actor: str, why: str) -> Rule:
        """Delete one rule, saying why.

        Raises:
            NotFound: no such rule.
            ValueError: no reason given or a bad actor.
            StoreError: Redis failed.
        """
        check_actor(actor)
        reason = clean_text(why, "reason")
        if not reason:
            raise ValueError("reason is required (say why, for the audit trail)")
        removed = await self.store.remove_rule(rule_id, by=actor, why=reason, now=self.clock())
        if removed is None:
            raise NotFound(f"no rule {rule_id}")
        return removed

    async def show(self, rule_id: str) -> tuple[Rule, list[AuditEntry]]:
        """A rule and its history.

        Raises:
            NotFound: no such rule.
            StoreError: Redis failed.
        """
        rule = await self.store.get_rule(rule_id)
        if rule is None:
            raise NotFound(f"no rule {rule_id}")
        return rule, await self.store.audit_trail(limit=100, rule_id=rule_id)

    async def find(self, which: RuleFilter, limit: int | None = None) -> list[Rule]:
        """Rules, oldest first, filtered.

        Raises:
            ValueError: ``which.value`` is not a number, prefix or range.
            StoreError: Redis failed.
        """
        now = self.clock()
        if which.value:
            rules = await self._by_value(which.value)
        else:
            rules = await self.store.all_rules()
        out = [
            r
            for r in rules
            if (which.list is None or r.list is which.list)
            and (which.origin is None or r.origin is which.origin)
            and (which.include_expired or r.active(now))
        ]
        return out[:limit] if limit is not None else out

    async def _by_value(self, text: str) -> list[Rule]:
        region = self.settings.numbers.default_region
        match = infer_match(text)
        value = canonical_value(match, text, region)
        if match is Match.NUMBER:
            key = normalise(value, region).key
            rules = await self.store.candidate_rules(key, "", "")
        elif match is Match.ANONYMOUS:
            rules = await self.store.candidate_rules("-", value, "")
        else:
            rules = await self.store.all_rules()
        return [r for r in rules if r.match is match and r.value == value]

    async def import_rules(self, text: str, fmt: str, actor: str) -> list[str]:
        """Check every line, then store all rules so that they take effect together
        (staged in chunks, then committed in one step: see ``Store.import_rules``).

        Raises:
            ImportFormatError: bad lines (each named); nothing stored.
            StoreError: Redis failed; nothing stored.
        """
        ctx = self.context(actor)
        rules = parse_import(text, fmt, ctx)
        why = f"{fmt} import of {len(rules)} rules"
        return await self.store.import_rules(rules, by=actor, why=why, now=ctx.now)

    async def export(self, fmt: str, which: RuleFilter) -> str:
        """Rules as CSV (formula-safe) or JSON lines.

        Raises:
            ValueError: unknown format.
            StoreError: Redis failed.
        """
        if fmt not in ("csv", "json"):
            raise ValueError("format is csv or json")
        rules = await self.find(which)
        return export_csv(rules) if fmt == "csv" else export_json(rules)

    async def audit(self, limit: int = 100, rule_id: str | None = None) -> list[AuditEntry]:
        """The audit trail, newest first.

        Raises:
            StoreError: Redis failed.
        """
        return await self.store.audit_trail(limit=limit, rule_id=rule_id)
