"""Blocklist and allowlist rules: the model, its text forms, and the import codecs. No I/O.

A :class:`Rule` says what to do with calls from some source:

* ``match`` is what it matches: one ``number`` (E.164 after :func:`screener.number.normalise`),
  a number ``prefix`` (``+86105``: a bank of public or office phones), an inclusive ``range`` of
  numbers of one length (``+861012345600..+861012345699``, indexed as the fewest prefixes that
  cover it), or ``anonymous`` callers (``any``, ``withheld`` or ``unavailable`` caller ID).
* ``list`` is ``block`` or ``allow``; the allowlist always wins (see :mod:`screener.policy`).
* ``action`` (block list only) is ``block`` (with a ``treatment``), ``challenge`` or
  ``analysis``; ``windows`` limit it to times of day and days of week in the configured time
  zone, or to the ``learned`` high-risk hours; ``hotlines`` limit its scope; ``expires_at`` ends
  it; ``mode = shadow`` makes it counted and logged but not enforced.
* ``reason``, ``created_by``, ``created_at`` and ``origin`` (``admin``, ``import``, ``auto``)
  say who set it and why; every change also goes to the audit trail.

Rules come in from admins (CLI, HTTP API, CSV and JSON imports) through :func:`parse_rule`, which
checks every field and names what is wrong. :func:`parse_import` checks a whole file first and
raises :class:`~screener.errors.ImportFormatError` listing every bad line, so an import is applied
whole or not at all. Exports are written by :func:`export_csv` (formula-safe) and
:func:`export_json`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

import phonenumbers

from screener.errors import ImportFormatError
from screener.number import ANONYMOUS_WORDS, normalise

MAX_REASON: Final = 200
MAX_IMPORT_ROWS: Final = 2_000_000
MAX_RANGE_PREFIXES: Final = 1000
MAX_EXPIRY: Final = 253_370_764_800.0
"""1 January 9999 UTC: a later expiry cannot be written as a date in every time zone."""
RULE_ID = re.compile(r"r[0-9]{1,18}")
ACTOR = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_HOTLINE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
FIELDS: Final = (
    "id",
    "list",
    "match",
    "value",
    "action",
    "treatment",
    "hotlines",
    "windows",
    "expires",
    "mode",
    "reason",
    "created_by",
    "created_at",
    "origin",
)
"""Columns of the CSV export, in order (an import needs ``value`` and ``reason`` at least)."""


class RuleList(StrEnum):
    BLOCK = "block"
    ALLOW = "allow"


class Match(StrEnum):
    NUMBER = "number"
    PREFIX = "prefix"
    RANGE = "range"
    ANONYMOUS = "anonymous"


class Verdict(StrEnum):
    """What screening tells the dialplan (``SCREENER_VERDICT``)."""

    ALLOW = "allow"
    BLOCK = "block"
    CHALLENGE = "challenge"
    ANALYSIS = "analysis"


class Treatment(StrEnum):
    """What a blocked caller gets (the dialplan's ``screener-treatment`` extensions)."""

    ANALYSIS = "analysis"  # the analysis queue: prompt, signal tone, "analysis complete"
    LINEFAULT = "linefault"  # "Hello? Hello? Sorry, the line is faulty..."
    BUSY = "busy"  # SIP 486 Busy Here
    REJECT = "reject"  # SIP 403 (call rejected)


class Mode(StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"  # counted and logged as a would-be hit; the call goes on


class Origin(StrEnum):
    ADMIN = "admin"
    IMPORT = "import"
    AUTO = "auto"


ANONYMOUS_VALUES: Final = ("any", "withheld", "unavailable")
_ANONYMOUS_ALIASES: Final = {
    "": "any",
    "anonymous": "any",
    "private": "withheld",
    "restricted": "withheld",
    "unknown": "unavailable",
}


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week and a time of day (``mon-fri 22:00-06:00``), or ``learned``.

    A window that ends before it starts runs past midnight: ``fri 22:00-06:00`` is Friday 22:00
    to Saturday 06:00 (the days name the day the window starts). ``learned`` matches during the
    high-risk hours screener learns from agents' flags.
    """

    days: frozenset[int] = frozenset(range(1, 8))  # ISO weekdays
    start: int = 0  # minutes after midnight
    end: int = 1440
    learned: bool = False

    @classmethod
    def parse(cls, text: str) -> Window:
        """``learned``, ``22:00-06:00``, ``sat,sun``, ``mon-fri 09:00-18:00``, ``*``.

        Raises:
            ValueError: says what is wrong.
        """
        words = text.strip().lower().split()
        if words == ["learned"]:
            return cls(learned=True)
        if (
            not words
            or len(words) > 2
            or (len(words) == 2 and (":" in words[0]) == (":" in words[1]))  # one days, one times
        ):
            raise ValueError(f"window {text!r}: expected 'DAYS HH:MM-HH:MM', 'DAYS', or 'learned'")
        days: frozenset[int] = frozenset(range(1, 8))
        start, end = 0, 1440
        for word in words:
            if ":" in word:
                start, end = _parse_times(word)
            else:
                days = _parse_days(word)
        return cls(days, start, end)

    def __str__(self) -> str:
        if self.learned:
            return "learned"
        parts = []
        if self.days != frozenset(range(1, 8)):
            parts.append(",".join(_DAY_NAMES[d - 1] for d in sorted(self.days)))
        if (self.start, self.end) != (0, 1440):
            parts.append(f"{_hhmm(self.start)}-{_hhmm(self.end)}")
        return " ".join(parts) or "*"

    def matches(self, local: datetime, high_risk_hours: frozenset[int]) -> bool:
        if self.learned:
            return local.hour in high_risk_hours
        minute = local.hour * 60 + local.minute
        day = local.isoweekday()
        if self.start <= self.end:
            return day in self.days and self.start <= minute < self.end
        if minute >= self.start:
            return day in self.days
        previous = 7 if day == 1 else day - 1
        return minute < self.end and previous in self.days


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _parse_times(word: str) -> tuple[int, int]:
    m = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})", word)
    if not m:
        raise ValueError(f"time range {word!r}: expected HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"time range {word!r}: hours 00-24, minutes 00-59")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"time range {word!r} is empty")
    return start, end


def _parse_days(word: str) -> frozenset[int]:
    if word == "*":
        return frozenset(range(1, 8))
    days: set[int] = set()
    for part in word.split(","):
        first, _, last = part.partition("-")
        try:
            a = _DAY_NAMES.index(first) + 1
            b = _DAY_NAMES.index(last) + 1 if last else a
        except ValueError:
            raise ValueError(
                f"days {word!r}: use mon tue wed thu fri sat sun, a-b or a,b"
            ) from None
        days.update(range(a, b + 1) if a <= b else [*range(a, 8), *range(1, b + 1)])
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class Rule:
    """One blocklist or allowlist entry (see the module docstring)."""

    id: str
    list: RuleList
    match: Match
    value: str
    action: Verdict
    reason: str
    created_by: str
    created_at: float
    treatment: Treatment | None = None
    hotlines: tuple[str, ...] = ()
    windows: tuple[Window, ...] = ()
    expires_at: float | None = None
    mode: Mode = Mode.ENFORCE
    origin: Origin = Origin.ADMIN
    index: tuple[str, ...] = field(default=(), compare=False)
    """Index values: the number, the prefixes (a range's cover), or the anonymous kind."""

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def applies_to(self, hotline: str) -> bool:
        return not self.hotlines or hotline in self.hotlines

    def in_window(self, local: datetime, high_risk_hours: frozenset[int]) -> bool:
        return not self.windows or any(w.matches(local, high_risk_hours) for w in self.windows)

    def covers(self, e164: str) -> bool:
        """For a ``range``: whether ``e164`` lies in it (its index prefixes may cover longer
        numbers too)."""
        if self.match is not Match.RANGE:
            return True
        lo, _, hi = self.value.partition("..")
        return len(e164) == len(lo) and lo <= e164 <= hi

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, defaults left out; the inverse of :meth:`from_dict`."""
        data: dict[str, Any] = {
            "id": self.id,
            "list": str(self.list),
            "match": str(self.match),
            "value": self.value,
            "action": str(self.action),
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "origin": str(self.origin),
            "mode": str(self.mode),
        }
        if self.treatment is not None:
            data["treatment"] = str(self.treatment)
        if self.hotlines:
            data["hotlines"] = list(self.hotlines)
        if self.windows:
            data["windows"] = [str(w) for w in self.windows]
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Read a stored rule (trusted: written by :meth:`to_dict`)."""
        treatment = data.get("treatment")
        match = Match(data["match"])
        value = str(data["value"])
        return cls(
            id=data["id"],
            list=RuleList(data["list"]),
            match=match,
            value=value,
            action=Verdict(data["action"]),
            reason=data["reason"],
            created_by=data["created_by"],
            created_at=float(data["created_at"]),
            treatment=Treatment(treatment) if treatment else None,
            hotlines=tuple(data.get("hotlines", ())),
            windows=tuple(Window.parse(w) for w in data.get("windows", ())),
            expires_at=data.get("expires_at"),
            mode=Mode(data.get("mode", "enforce")),
            origin=Origin(data.get("origin", "admin")),
            index=index_values(match, value),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Rule:
        return cls.from_dict(json.loads(text))


# --- number forms -------------------------------------------------------------------------------


def index_values(match: Match, value: str) -> tuple[str, ...]:
    """What a rule is found by: the number, the prefix, a range's covering prefixes, the kind."""
    if match is Match.RANGE:
        lo, _, hi = value.partition("..")
        return tuple("+" + p for p in range_prefixes(lo[1:], hi[1:]))
    return (value,)


def range_prefixes(lo: str, hi: str) -> list[str]:
    """The fewest digit prefixes that cover exactly the numbers ``lo..hi`` of that length.

    >>> range_prefixes("1200", "1299")
    ['12']
    >>> range_prefixes("1250", "1320")
    ['125', '126', '127', '128', '129', '130', '131', '1320']
    """
    if len(lo) != len(hi) or not (lo + hi).isdigit() or lo > hi:
        raise ValueError("a range needs two numbers of the same length, low first")
    out: list[str] = []

    def cover(prefix: str, low: str, high: str) -> None:
        k = len(low)
        if low == "0" * k and high == "9" * k:
            out.append(prefix)
        elif low[0] == high[0]:
            cover(prefix + low[0], low[1:], high[1:])
        else:
            cover(prefix + low[0], low[1:], "9" * (k - 1))
            out.extend(prefix + str(d) for d in range(int(low[0]) + 1, int(high[0])))
            cover(prefix + high[0], "0" * (k - 1), high[1:])

    cover("", lo, hi)
    return out


def number_prefixes(e164: str) -> list[str]:
    """Every prefix of an E.164 number that a prefix rule could name: ``+8``, ``+86``, ...

    >>> number_prefixes("+8610")
    ['+8', '+86', '+861', '+8610']
    """
    return [e164[:n] for n in range(2, len(e164) + 1)] if e164.startswith("+") else []


def _international_digits(text: str, region: str) -> str:
    """``+86 10-1234`` or ``010 1234`` (the region's trunk prefix) -> ``+86101234``."""
    compact = re.sub(r"[\s().-]", "", text)
    if compact.startswith("+"):
        digits = compact[1:]
        if not digits.isdigit() or digits.startswith("0"):
            raise ValueError(f"{text!r} is not a number prefix")
        return "+" + digits
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    trunk = meta.national_prefix if meta is not None else None
    if not compact.isdigit() or not trunk or not compact.startswith(trunk):
        raise ValueError(
            f"{text!r}: write a prefix in international form (+CC...) "
            f"or with the trunk prefix of {region} ({trunk or 'none'})"
        )
    if compact[len(trunk) :].startswith("0"):
        raise ValueError(f"{text!r}: write an international prefix as +CC..., not with 00")
    return f"+{meta.country_code if meta else ''}{compact[len(trunk) :]}"


def canonical_value(match: Match, text: str, region: str) -> str:
    """The stored form of a rule's value.

    Raises:
        ValueError: the value does not fit the match kind.
    """
    text = text.strip()
    if match is Match.ANONYMOUS:
        value = _ANONYMOUS_ALIASES.get(text.lower(), text.lower())
        if value not in ANONYMOUS_VALUES:
            raise ValueError(f"anonymous rules match one of {', '.join(ANONYMOUS_VALUES)}")
        return value
    if match is Match.NUMBER:
        info = normalise(re.sub(r"[ \t().-]", "", text), region)  # "+86 138-1234 1234"
        if not info.e164:
            raise ValueError(f"{text[:40]!r} is not a phone number")
        return info.e164
    if match is Match.PREFIX:
        value = _international_digits(text.rstrip("*"), region)
        if not 3 <= len(value) <= 16:
            raise ValueError(f"prefix {text!r}: 2 to 15 digits after the +")
        return value
    lo_text, sep, hi_text = text.partition("..")
    if not sep:
        raise ValueError(f"range {text!r}: write LOW..HIGH")
    lo, hi = (canonical_value(Match.NUMBER, t, region) for t in (lo_text, hi_text))
    if len(lo) != len(hi) or lo > hi:
        raise ValueError(f"range {text!r}: both ends the same length, low first")
    if len(range_prefixes(lo[1:], hi[1:])) > MAX_RANGE_PREFIXES:
        raise ValueError(f"range {text!r} is too fragmented; split it or use prefixes")
    return f"{lo}..{hi}"


def infer_match(text: str) -> Match:
    """``*`` at the end -> prefix, ``..`` -> range, anonymous words -> anonymous, else number."""
    t = text.strip().lower()
    if t in ANONYMOUS_WORDS or t in ANONYMOUS_VALUES:
        return Match.ANONYMOUS
    if ".." in t:
        return Match.RANGE
    if t.endswith("*"):
        return Match.PREFIX
    return Match.NUMBER


# --- parsing what admins give -------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """``90m``, ``12h``, ``7d``, ``2w`` or ``1d12h`` -> seconds.

    Raises:
        ValueError: not a duration.
    """
    t = text.strip().lower()
    if not _is_duration(t):
        raise ValueError(f"duration {text!r}: use e.g. 90m, 12h, 7d, 2w")
    return float(sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(t)))


def _is_duration(text: str) -> bool:
    t = text.lower()
    parts = _DURATION.findall(t)
    return bool(parts) and "".join(n + u for n, u in parts) == t


def parse_expiry(value: object, now: float, zone: ZoneInfo) -> float | None:
    """A duration from now (``7d``), an ISO date/time (local zone if naive), epoch seconds, or
    empty for never.

    Raises:
        ValueError: unreadable, or already in the past.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        at = float(value) if abs(value) < MAX_EXPIRY else math.inf  # a huge int: OverflowError
    elif isinstance(value, str):
        text = value.strip()
        if _is_duration(text):
            at = now + parse_duration(text)
        else:
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"expires {text!r}: a duration (7d), an ISO date (2026-12-31T18:00) or nothing"
                ) from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=zone)
            at = when.timestamp()
    else:
        raise ValueError("expires must be a string or a number")
    if not math.isfinite(at):
        raise ValueError("expires must be a finite time")
    if at >= MAX_EXPIRY:
        raise ValueError("expires is after the year 9998: leave it empty for a rule that stays")
    if at <= now:
        raise ValueError("expires is in the past")
    return at


def clean_text(value: object, what: str, limit: int = MAX_REASON) -> str:
    """Admin free text (a reason): printable, one line, bounded.

    Raises:
        ValueError: not a string, a control character, or too long.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    text = value.strip()
    if _CONTROL.search(text):
        raise ValueError(f"{what} must be one line of printable text")
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return text


def _names(value: object, what: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value.split(";") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"{what} must be a list or a ;-separated string")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{what} must hold strings")
        out.append(item.strip())
    return tuple(i for i in out if i)


def _enum(cls: type[Any], value: object, default: Any, what: str) -> Any:
    if value is None or value == "":
        return default
    try:
        return cls(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(str(m) for m in cls)
        raise ValueError(f"{what} {str(value)[:20]!r}: one of {choices}") from None


def _action_problems(
    rule_list: RuleList | None, action: Verdict | None, treatment: Treatment | None
) -> list[str]:
    problems = []
    if rule_list is RuleList.ALLOW and action not in (None, Verdict.ALLOW):
        problems.append("allowlist rules have action allow")
    if rule_list is RuleList.BLOCK and action is Verdict.ALLOW:
        problems.append("blocklist rules have action block, challenge or analysis")
    if treatment is not None and action is not Verdict.BLOCK:
        problems.append("a treatment goes with action block only")
    return problems


def _hotline_problems(hotlines: tuple[str, ...], configured: frozenset[str]) -> list[str]:
    problems = []
    for name in hotlines:
        if not _HOTLINE.fullmatch(name):
            problems.append(f"hotline {name[:20]!r}: 1-64 of A-Z a-z 0-9 _ -")
        elif configured and name not in configured:
            known = ", ".join(sorted(configured))
            problems.append(f"hotline {name!r} is not configured ({known})")
    return problems


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What parsing needs besides the fields: the number region, the zone, the clock, the actor,
    and the configured hotline names (a scope must name one)."""

    region: str
    zone: ZoneInfo
    now: float
    actor: str
    hotlines: frozenset[str] = frozenset()
    origin: Origin = Origin.ADMIN


def parse_rule(fields: Mapping[str, object], ctx: RuleContext) -> Rule:
    """Check and normalise one rule from an admin (CLI options, API JSON, an import row).

    The id is left empty: the store assigns it.

    Raises:
        ValueError: every problem found, joined with ``; ``.
    """
    problems: list[str] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ValueError as e:
            problems.append(str(e))
            return None

    unknown = sorted(set(fields) - set(FIELDS) - {"expires_at"})
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)[:80]}")
    raw_value = fields.get("value")
    if not isinstance(raw_value, str) or not raw_value.strip():
        problems.append("value is required")
        raw_value = ""
    rule_list = attempt(_enum, RuleList, fields.get("list"), RuleList.BLOCK, "list")
    match = attempt(_enum, Match, fields.get("match"), infer_match(raw_value), "match")
    value = attempt(canonical_value, match, raw_value, ctx.region) if match and raw_value else None
    default_action = Verdict.ALLOW if rule_list is RuleList.ALLOW else Verdict.BLOCK
    action = attempt(_enum, Verdict, fields.get("action"), default_action, "action")
    treatment = attempt(_enum, Treatment, fields.get("treatment"), None, "treatment")
    problems += _action_problems(rule_list, action, treatment)
    hotlines = attempt(_names, fields.get("hotlines"), "hotlines") or ()
    problems += _hotline_problems(hotlines, ctx.hotlines)
    window_texts = attempt(_names, fields.get("windows"), "windows") or ()
    windows = tuple(w for w in (attempt(Window.parse, t) for t in window_texts) if w)
    expires = fields.get("expires", fields.get("expires_at"))
    expires_at = attempt(parse_expiry, expires, ctx.now, ctx.zone)
    mode = attempt(_enum, Mode, fields.get("mode"), Mode.ENFORCE, "mode")
    reason = attempt(clean_text, fields.get("reason", ""), "reason")
    if reason == "":
        problems.append("reason is required (say why, for the audit trail)")
    if problems or value is None:
        raise ValueError("; ".join(problems))
    return Rule(
        id="",
        list=rule_list,
        match=match,
        value=value,
        action=action,
        reason=reason,
        created_by=ctx.actor,
        created_at=ctx.now,
        treatment=treatment,
        hotlines=hotlines,
        windows=windows,
        expires_at=expires_at,
        mode=mode,
        origin=ctx.origin,
        index=index_values(match, value),
    )


def with_id(rule: Rule, rule_id: str) -> Rule:
    return replace(rule, id=rule_id)


# --- imports and exports ------------------------------------------------------------------------


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, object]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if reader.fieldnames is None:
        return
    if "value" not in reader.fieldnames:
        raise ImportFormatError([(1, "the header must name a 'value' column")])
    for row in reader:
        extra = row.pop(None, None)
        fields: dict[str, object] = {k: v for k, v in row.items() if v is not None}
        if extra:
            fields["__extra__"] = extra
        # strip the export's formula guard
        fields = {
            k: v[1:] if isinstance(v, str) and v.startswith("'") and len(v) > 1 else v
            for k, v in fields.items()
        }
        yield reader.line_num, fields


def _unreadable(e: Exception) -> str:
    """What json.loads refused besides a syntax error: nesting deeper than the recursion limit,
    or an integer longer than Python's 4300-digit limit."""
    if isinstance(e, RecursionError):
        return "not JSON we accept: nested too deeply"
    return "not JSON we accept: a number with more than 4300 digits"


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, object]]]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportFormatError([(e.lineno, f"not JSON: {e.msg}")]) from None
        except (RecursionError, ValueError) as e:
            raise ImportFormatError([(1, _unreadable(e))]) from None
        for n, item in enumerate(items, 1):
            yield n, item
        return
    for n, line in enumerate(text.splitlines(), 1):  # JSON lines, as `export --format json`
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row = {"__error__": f"not JSON: {e.msg}"}
        except (RecursionError, ValueError) as e:
            row = {"__error__": _unreadable(e)}
        yield n, row


def parse_import(text: str, fmt: str, ctx: RuleContext) -> list[Rule]:
    """Every rule of an import file (``csv``, or ``json``: an array or JSON lines).

    Ids, creators and creation times in the file are ignored (an export round-trips as new rules
    by the importing admin); ``origin`` becomes ``import``.

    Raises:
        ImportFormatError: any line is bad; ``problems`` names each (line, message).
    """
    if fmt not in ("csv", "json"):
        raise ImportFormatError([(0, f"unknown format {fmt!r}: csv or json")])
    import_ctx = replace(ctx, origin=Origin.IMPORT)
    rows = _csv_rows(text) if fmt == "csv" else _json_rows(text)
    rules: list[Rule] = []
    problems: list[tuple[int, str]] = []
    try:
        for line, row in rows:
            if len(rules) + len(problems) >= MAX_IMPORT_ROWS:
                problems.append((line, f"more than {MAX_IMPORT_ROWS} rows; split the file"))
                break
            if not isinstance(row, dict):
                problems.append((line, "each entry must be an object"))
                continue
            if "__error__" in row:
                problems.append((line, str(row["__error__"])))
                continue
            if "__extra__" in row:
                problems.append((line, "more cells than header columns"))
                continue
            fields = {k: v for k, v in row.items() if k not in ("id", "created_by", "created_at")}
            fields.pop("origin", None)
            try:
                rules.append(parse_rule(fields, import_ctx))
            except ValueError as e:
                problems.append((line, str(e)))
    except csv.Error as e:
        problems.append((0, f"not CSV: {e}"))
    if problems:
        raise ImportFormatError(problems)
    if not rules:
        raise ImportFormatError([(0, "no rules in the file")])
    return rules


def csv_safe(value: object) -> str:
    """Spreadsheets run a cell that starts with = + - @ (or tab/CR) as a formula: quote it.
    A cell that starts with ``'`` is quoted too, so the import's unquoting gives it back.
    Every CSV screener writes (rule exports, reports, bill matches) goes through this."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", "'") else text


def export_rows(rule: Rule) -> dict[str, str]:
    d = rule.to_dict()
    return {
        "id": rule.id,
        "list": d["list"],
        "match": d["match"],
        "value": rule.value,
        "action": d["action"],
        "treatment": d.get("treatment", ""),
        "hotlines": ";".join(rule.hotlines),
        "windows": ";".join(str(w) for w in rule.windows),
        "expires": (
            datetime.fromtimestamp(rule.expires_at).astimezone().isoformat(timespec="seconds")
            if rule.expires_at is not None
            else ""
        ),
        "mode": d["mode"],
        "reason": rule.reason,
        "created_by": rule.created_by,
        "created_at": datetime.fromtimestamp(rule.created_at)
        .astimezone()
        .isoformat(timespec="seconds"),
        "origin": d["origin"],
    }


def export_csv(rules: Iterable[Rule]) -> str:
    """CSV with :data:`FIELDS` as header; every cell formula-safe (``'`` before = + - @).

    Numbers keep their ``+`` behind the guard (``'+8613812341234``); :func:`parse_import` strips
    it again, so an export imports back as it was.
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for rule in rules:
        writer.writerow({k: csv_safe(v) for k, v in export_rows(rule).items()})
    return out.getvalue()


def export_json(rules: Iterable[Rule]) -> str:
    """JSON lines, one rule per line (``to_dict``)."""
    return "".join(rule.to_json() + "\n" for rule in rules)


def describe(rule: Rule) -> str:
    """One line for logs and audit: id, list, what it matches and does (numbers masked)."""
    from screener.number import mask

    value = rule.value
    if rule.match is Match.NUMBER:
        value = mask(value)
    elif rule.match is Match.RANGE:
        value = "..".join(mask(v) for v in value.split(".."))
    what = str(rule.action) + (f"/{rule.treatment}" if rule.treatment else "")
    extra = f" {rule.mode}" if rule.mode is Mode.SHADOW else ""
    return f"{rule.id} {rule.list} {rule.match} {value} {what}{extra}"


def check_ids(ids: Sequence[str]) -> list[str]:
    """Rule ids as given on a command line or in a URL.

    Raises:
        ValueError: one is not ``r<digits>``.
    """
    for rule_id in ids:
        if not RULE_ID.fullmatch(rule_id):
            raise ValueError(f"rule id {rule_id[:20]!r}: expected r<digits> (see `list`)")
    return list(ids)
