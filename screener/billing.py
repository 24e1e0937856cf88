"""Carrier-bill matching: who made the flagged calls whose caller ID was withheld. No I/O.

Theory of operation. A caller who withholds their number is still on the carrier's bill for the
hotline (a 400/800 number is billed to the called party, call by call, with the real calling
number). An agent's flag records the time of the call on screener's clock, so:

1. :func:`parse_carrier_csv` reads the carrier's call-detail export (liberal about column names,
   strict about every line: one bad line and nothing is returned);
2. :func:`match_calls` lists, for each withheld or unavailable flagged call, the calls on the bill
   to the same hotline number whose time lies within ``tolerance`` seconds of the flag (the
   *candidates*): the flag falls inside the call when the bill gives durations; otherwise it is
   compared with the start of the call;
3. :func:`propose` attributes every flag to one of its candidates and proposes the numbers that
   most likely made at least ``min_flags`` flagged calls, with the evidence.

Why not just count coincidences: a number that calls the hotline all day (a partner's
switchboard, a reseller, a test probe) is a candidate for many flags by chance alone, and would
top a plain count. So each flag is shared among its candidates in proportion to each number's
*flag rate*, the share of its calls that get flagged, estimated from the whole bill (an EM fit:
share the flags, re-estimate the rates, repeat until nothing changes). A number is either an
ordinary caller, flagged at the centre-wide rate (the withheld flags over the calls to the
flagged hotlines in the period), or a repeat caller with a rate of its own; which one is weighed
from its shares of the flags and all its calls, with one number in a hundred
(:data:`REPEAT_PRIOR`) a repeat caller before any evidence. One coincidence does not make a
repeat caller, nor do forty among four thousand calls; ten flags among twelve calls do. Each
flag also keeps a share for "none of these" (:data:`ABSENT_WEIGHT` times the centre-wide rate:
the call was outside the tolerance, or billed elsewhere): an ordinary number alone near a flag
gets about half of it, a repeat caller nearly all. A flag shared between a harasser and a
switchboard goes to the harasser; a flag shared by two ordinary callers goes to neither.

A number is credited with a flag when it carries more than half of it (its *certainty*), and
each call on the bill explains at most one flag. Every proposal says how many of the number's
calls were *not* flagged, so a reviewer sees at once a number that merely calls often. The fit
needs the whole bill of the period, not only the calls around the flags: the other calls are
what tells a harasser from a number that calls all the time.

The output is evidence for a human: :func:`proposals_to_rules_csv` writes a file that
``screener rules import`` accepts, and nothing here blocks anyone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from zoneinfo import ZoneInfo

from screener.errors import ImportFormatError
from screener.model import Flag, Presentation
from screener.number import ANONYMOUS_WORDS, identity
from screener.rules import MAX_REASON, csv_safe

MAX_ROWS: Final = 5_000_000
"""Calls one carrier file may hold (split larger exports by month)."""
MAX_PROBLEMS: Final = 1000
"""Bad lines reported one by one; the rest are counted in one last entry."""
HEADER_SEARCH: Final = 20
"""The header may follow a few title lines: it is looked for in this many first lines."""
MAX_DURATION: Final = 2 * 86400.0
LONG_CALL: Final = 1800.0  # calls longer than this are checked apart, so the index stays narrow
REPEAT_PRIOR: Final = 0.01
"""How many numbers, before any evidence, are repeat callers with a flag rate of their own."""
MAX_BASE_RATE: Final = 0.5
"""A cap on the centre-wide flag rate (more flags than half the calls: not the whole bill)."""
ABSENT_WEIGHT: Final = 1.0
"""The weight, in centre-wide flag rates, of "the flagged call is not among the candidates"
(a clock further off than the tolerance, a call billed elsewhere)."""
MIN_CERTAINTY: Final = 0.5
"""A number is credited with a flag when it carries more than this share of it."""
_EM_ROUNDS: Final = 200
_EM_EPSILON: Final = 1e-9

# Header names after _header_key (lower case, runs of other characters -> "_"), best first.
TIME_COLUMNS: Final = (
    "start_time", "starttime", "start", "call_start", "call_start_time", "start_datetime",
    "start_date_time", "call_time", "calltime", "calldate", "datetime", "date_time",
    "timestamp", "time",
    "开始时间", "起始时间", "呼叫时间", "通话开始时间", "通话时间", "时间",
)  # fmt: skip
DATE_COLUMNS: Final = ("date", "call_date", "start_date", "日期", "通话日期")
CALLING_COLUMNS: Final = (
    "calling_number", "calling", "calling_party", "caller_number", "caller", "caller_id",
    "callerid", "a_number", "anumber", "a_party", "from", "from_number", "src", "ani", "cli",
    "clid", "主叫号码", "主叫",
)  # fmt: skip
CALLED_COLUMNS: Final = (
    "called_number", "called", "called_party", "callee", "b_number", "bnumber", "b_party", "to",
    "to_number", "dst", "destination", "dnis", "dialled_number", "dialed_number", "dialled",
    "dialed", "被叫号码", "被叫",
)  # fmt: skip
DURATION_COLUMNS: Final = (
    "duration", "billsec", "bill_sec", "billed_seconds", "call_duration", "duration_s",
    "duration_sec", "seconds", "通话时长", "时长",
)  # fmt: skip
_DELIMITERS: Final = (",", ";", "\t", "|")

TIME_FORMATS: Final = (
    "YYYY-MM-DD HH:MM[:SS[.ffffff]] (or ISO 8601 with T, Z or an offset such as +08:00), "
    "YYYY/MM/DD HH:MM[:SS], DD/MM/YYYY HH:MM[:SS] (day first), DD.MM.YYYY HH:MM[:SS], "
    "YYYYMMDDHHMMSS, Unix seconds (10 digits) or milliseconds (13 digits)"
)
"""What :func:`parse_time` reads; a time without an offset is in the given zone."""

_DATES = (
    r"(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})",
    r"(?P<d>\d{1,2})[/.](?P<m>\d{1,2})[/.](?P<y>\d{4})",
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})",
)
_TIMES = (
    r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<F>\d{1,9}))?)?",
    r"(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})",
)
_OFFSET = r"\s*(?P<Z>Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
_DATETIME_RES = tuple(
    re.compile(date + sep + time + _OFFSET, re.IGNORECASE)
    for date in _DATES
    for time in _TIMES
    for sep in (r"(?:T|\s+)", "")
    if sep or (date == _DATES[2] and time == _TIMES[1])  # run together: YYYYMMDDHHMMSS only
)
_TIME_ONLY_RES = tuple(re.compile(time + _OFFSET, re.IGNORECASE) for time in _TIMES)
_EPOCH = re.compile(r"(?P<s>\d{10})(?:\.(?P<f>\d{1,6}))?|(?P<ms>\d{13})")
_CLOCK = re.compile(r"(?:(\d{1,3}):)?(\d{1,2}):(\d{2})")
_SECONDS = re.compile(r"\d{1,9}(?:\.\d{1,6})?")
_SEPARATORS = re.compile(r"[ \t().-]")
_ANGLE = re.compile(r"<([^<>]*)>")  # an Asterisk clid: "Name" <number>


# --- the bill -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarrierCall:
    """One call on the carrier's bill: E.164 numbers and the cells as written (``*_raw``).

    ``at`` is when the call started by the carrier's clock (time-zone aware); ``duration`` is in
    seconds, ``None`` when the bill has no duration column.
    """

    line: int
    at: datetime
    calling: str
    called: str
    calling_raw: str
    called_raw: str
    duration: float | None = None

    @property
    def end(self) -> datetime:
        return self.at + timedelta(seconds=self.duration or 0.0)


@dataclass(frozen=True, slots=True)
class _Columns:
    width: int
    time: int
    calling: int
    called: int
    date: int | None = None
    duration: int | None = None


def _header_key(cell: str) -> str:
    return re.sub(r"\W+", "_", cell.strip().strip("\ufeff").lower()).strip("_")


def _columns(cells: list[str]) -> _Columns | None:
    names = [_header_key(c) for c in cells]

    def find(aliases: tuple[str, ...]) -> int | None:
        return next((names.index(a) for a in aliases if a in names), None)

    time, date = find(TIME_COLUMNS), find(DATE_COLUMNS)
    calling, called = find(CALLING_COLUMNS), find(CALLED_COLUMNS)
    if time is None:
        time, date = date, None  # a lone date column holding whole date-times
    if time is None or calling is None or called is None or calling == called:
        return None
    return _Columns(len(cells), time, calling, called, date, find(DURATION_COLUMNS))


def _find_header(text: str) -> tuple[int, str, _Columns]:
    lines = re.split(r"\r\n|\r|\n", text, maxsplit=HEADER_SEARCH)[:HEADER_SEARCH]  # as csv counts
    for number, line in enumerate(lines, 1):
        for delimiter in _DELIMITERS:
            if delimiter not in line:
                continue
            try:
                cells = next(csv.reader([line], delimiter=delimiter, strict=True))
            except csv.Error:
                continue
            found = _columns(cells)
            if found is not None:
                return number, delimiter, found
    first = (lines[0] if lines else "")[:80]
    raise ImportFormatError(
        [
            (
                1,
                f"no header naming a time (start_time, time...), a calling number (calling, "
                f"caller, from, a_number, src, ani...) and a called number (called, to, "
                f"b_number, dst, dnis...) in the first {HEADER_SEARCH} lines; "
                f"line 1 is {first!r}",
            )
        ]
    )


def _offset(text: str | None, zone: ZoneInfo) -> timezone | ZoneInfo:
    if not text:
        return zone
    if text.upper() in ("Z", "UTC", "GMT"):
        return UTC
    digits = text[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return timezone(-delta if text[0] == "-" else delta)


def parse_time(text: str, zone: ZoneInfo) -> datetime:
    """A date and time of day in one of :data:`TIME_FORMATS`; without an offset it is in ``zone``.

    >>> parse_time("2024/03/06 14:30", ZoneInfo("Asia/Shanghai")).isoformat()
    '2024-03-06T14:30:00+08:00'

    Raises:
        ValueError: another format, or no such date or time.
    """
    t = text.strip()
    if len(t) <= 40:
        epoch = _EPOCH.fullmatch(t)
        if epoch:
            seconds = int(epoch["ms"]) / 1000 if epoch["ms"] else float(t)
            return datetime.fromtimestamp(seconds, UTC)
        for pattern in _DATETIME_RES:
            m = pattern.fullmatch(t)
            if m is None:
                continue
            g = m.groupdict()
            try:
                return datetime(
                    int(g["y"]),
                    int(g["m"]),
                    int(g["d"]),
                    int(g["H"]),
                    int(g["M"]),
                    int(g["S"] or 0),
                    int((g.get("F") or "")[:6].ljust(6, "0")),
                    tzinfo=_offset(g["Z"], zone),
                )
            except ValueError as e:
                raise ValueError(f"time {t!r}: {e}") from None
    raise ValueError(f"time {t[:40]!r}: use {TIME_FORMATS}")


def _number(cell: str, what: str, region: str) -> tuple[str, str]:
    raw = cell.strip()
    angle = _ANGLE.search(raw)
    if angle:
        raw = angle.group(1).strip()
    if not raw:
        raise ValueError(f"the {what} number is missing")
    if raw.lower() in ANONYMOUS_WORDS:
        raise ValueError(f"the {what} number is {raw[:12]!r}: the bill must show the number")
    e164 = identity(_SEPARATORS.sub("", raw), region)[1]
    if not e164:
        raise ValueError(f"the {what} number {raw[:24]!r} is not a phone number")
    return e164, raw


def _duration(cell: str) -> float | None:
    t = cell.strip()
    if not t:
        return None
    clock = _CLOCK.fullmatch(t)
    seconds = math.nan
    if clock:
        seconds = float(int(clock[1] or 0) * 3600 + int(clock[2]) * 60 + int(clock[3]))
    elif _SECONDS.fullmatch(t):
        seconds = float(t)
    if not 0 <= seconds <= MAX_DURATION:  # NaN fails too
        raise ValueError(f"duration {t[:20]!r}: seconds (0-{MAX_DURATION:.0f}) or H:MM:SS")
    return seconds


def _call(row: list[str], line: int, cols: _Columns, zone: ZoneInfo, region: str) -> CarrierCall:
    if len(row) < cols.width or any(c.strip() for c in row[cols.width :]):
        raise ValueError(f"{len(row)} cells where the header has {cols.width}")
    problems: list[str] = []
    when = row[cols.time].strip()
    if cols.date is not None and any(p.fullmatch(when) for p in _TIME_ONLY_RES):
        when = f"{row[cols.date].strip()} {when}"
    at = calling = called = duration = None
    try:
        at = parse_time(when, zone)
    except ValueError as e:
        problems.append(str(e))
    try:
        calling = _number(row[cols.calling], "calling", region)
    except ValueError as e:
        problems.append(str(e))
    try:
        called = _number(row[cols.called], "called", region)
    except ValueError as e:
        problems.append(str(e))
    try:
        duration = _duration(row[cols.duration]) if cols.duration is not None else None
    except ValueError as e:
        problems.append(str(e))
    if problems or at is None or calling is None or called is None:
        raise ValueError("; ".join(problems))
    # a bill names few called numbers but millions of calls: share their strings
    called_e164, called_raw = sys.intern(called[0]), sys.intern(called[1])
    return CarrierCall(line, at, calling[0], called_e164, calling[1], called_raw, duration)


def parse_carrier_csv(text: str, *, zone: ZoneInfo, region: str) -> list[CarrierCall]:
    """Every call of a carrier's call-detail export (CSV; ``,`` ``;`` tab or ``|`` separated).

    The header (found in the first :data:`HEADER_SEARCH` lines, after any title lines) names
    the columns, in any case and spelling from :data:`TIME_COLUMNS` (or a date column and a
    time column), :data:`CALLING_COLUMNS`, :data:`CALLED_COLUMNS` and, optionally,
    :data:`DURATION_COLUMNS`; other columns are ignored. Times are read by :func:`parse_time`
    (naive ones in ``zone``), numbers normalised to E.164 in ``region`` as
    :func:`screener.number.normalise` does. Blank lines are skipped; a UTF-8 BOM is dropped.

    Raises:
        ImportFormatError: any line is bad (each named, with its line number, up to
            :data:`MAX_PROBLEMS`), the file is empty, has no recognisable header, or holds
            more than :data:`MAX_ROWS` calls; nothing is returned then.
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ImportFormatError([(0, "the file is empty")])
    header_line, delimiter, cols = _find_header(text)
    problems: list[tuple[int, str]] = []
    bad = 0

    def problem(line: int, message: str) -> None:
        nonlocal bad
        bad += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append((line, message))

    calls: list[CarrierCall] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    end = 0  # the last line read: a row (quoted line breaks and all) starts after it
    try:
        for row in reader:
            line, end = end + 1, reader.line_num
            if end <= header_line or not any(c.strip() for c in row):
                continue
            if len(calls) + bad >= MAX_ROWS:
                problem(line, f"more than {MAX_ROWS} calls: split the file")
                break
            try:
                calls.append(_call(row, line, cols, zone, region))
            except ValueError as e:
                problem(line, str(e))
    except csv.Error as e:
        problem(end + 1, f"not CSV: {e}")
    if bad > len(problems):
        problems.append((problems[-1][0], f"... and {bad - len(problems)} more bad lines"))
    if problems:
        raise ImportFormatError(problems)
    if not calls:
        raise ImportFormatError([(header_line, "no calls after the header")])
    return calls


# --- matching flags with calls ------------------------------------------------------------------


def is_anonymous(flag: Flag) -> bool:
    """Whether the flagged caller's number is unknown (the store's ``anonymous`` index)."""
    return flag.caller.presentation is not Presentation.ALLOWED or not flag.caller.info.e164


def _timestamp(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()  # naive: UTC


@dataclass(frozen=True, slots=True)
class Candidate:
    """A call on the bill near a flag: ``offset`` is the flag's time minus the call's start
    (seconds into the call by the two clocks), ``distance`` how far the flag lies outside the
    call (0 inside it)."""

    call: CarrierCall
    offset: float
    distance: float


@dataclass(frozen=True, slots=True)
class FlagMatch:
    """One withheld or unavailable flagged call and its candidates on the bill, nearest first.

    ``called`` is the hotline number the caller dialled, in E.164 (``""`` if it is not a number:
    then there are no candidates).
    """

    flag: Flag
    called: str
    tolerance: float
    candidates: tuple[Candidate, ...]


class _CallIndex:
    """The bill's calls by called number, sorted by start; long calls kept apart."""

    def __init__(self, calls: Iterable[CarrierCall]) -> None:
        short: dict[str, list[tuple[float, float, int, CarrierCall]]] = defaultdict(list)
        self.long: dict[str, list[tuple[float, float, CarrierCall]]] = defaultdict(list)
        for call in calls:
            start = call.at.timestamp()
            end = start + (call.duration or 0.0)
            if end - start > LONG_CALL:
                self.long[call.called].append((start, end, call))
            else:
                short[call.called].append((start, end, call.line, call))
        self.starts: dict[str, list[float]] = {}
        self.calls: dict[str, list[tuple[float, float, CarrierCall]]] = {}
        for called, items in short.items():
            items.sort(key=lambda item: (item[0], item[2]))
            self.starts[called] = [item[0] for item in items]
            self.calls[called] = [(s, e, c) for s, e, _, c in items]

    def near(self, called: str, at: float, tolerance: float) -> list[Candidate]:
        starts = self.starts.get(called, [])
        lo = bisect_left(starts, at - tolerance - LONG_CALL)
        hi = bisect_right(starts, at + tolerance)
        found = []
        for start, end, call in [*self.calls.get(called, [])[lo:hi], *self.long.get(called, [])]:
            distance = max(start - at, at - end, 0.0)
            if distance <= tolerance:
                found.append(Candidate(call, at - start, distance))
        found.sort(key=lambda c: (c.distance, abs(c.offset), c.call.line))
        return found


def match_calls(
    flags: Iterable[Flag], calls: Iterable[CarrierCall], *, tolerance: float, region: str
) -> list[FlagMatch]:
    """For each withheld or unavailable flag (others are skipped), the calls on the bill to the
    same hotline number (compared in E.164, so ``4008001234``, ``04008001234`` and
    ``+864008001234`` are one number in CN) within ``tolerance`` seconds of the flag.

    With durations on the bill, the flag must fall inside the call, give or take ``tolerance``
    (the two clocks' skew). Without them only start times are known, and the flag comes after
    the caller's queue wait and some talk: ``tolerance`` must cover that too.

    Raises:
        ValueError: a negative or infinite tolerance.
    """
    if not 0 <= tolerance < math.inf:
        raise ValueError("the tolerance is a finite number of seconds, 0 or more")
    index = _CallIndex(calls)
    out = []
    for flag in flags:
        if not is_anonymous(flag):
            continue
        called = identity(_SEPARATORS.sub("", flag.called), region)[1] if flag.called else ""
        near = index.near(called, _timestamp(flag.at), tolerance) if called else []
        out.append(FlagMatch(flag, called, tolerance, tuple(near)))
    return out


# --- proposals ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """One flag credited to a number: the flagged call, the call on the bill that explains it,
    the time offset (see :class:`Candidate`), the number's share of the flag, and how many
    numbers were candidates for it."""

    flag: Flag
    call: CarrierCall
    offset: float
    certainty: float
    candidates: int


@dataclass(frozen=True, slots=True)
class Proposal:
    """A calling number that most likely made ``flags`` of the flagged withheld calls.

    ``calls`` counts its calls to the flagged hotlines in the period (``unflagged`` of them
    explain no flag); ``share`` is the sum of its shares of all flags (``flags`` counts only
    those where it carries more than half); ``rate`` is its estimated flag rate per call.
    """

    number: str
    raw: str
    evidence: tuple[Evidence, ...]
    calls: int
    share: float
    rate: float

    @property
    def flags(self) -> int:
        return len(self.evidence)

    @property
    def unflagged(self) -> int:
        return max(self.calls - self.flags, 0)

    @property
    def mean_offset(self) -> float:
        return sum(e.offset for e in self.evidence) / len(self.evidence) if self.evidence else 0.0


def _calls_in_scope(
    matches: Sequence[FlagMatch],
    calls: Iterable[CarrierCall],
    period: tuple[datetime, datetime] | None,
) -> Counter[str]:
    """Calls per calling number to the flagged hotlines in the period (widened by the
    tolerance), or on the whole bill without a period."""
    hotlines = {m.called for m in matches if m.called}
    if not hotlines:
        return Counter()
    if period is None:
        return Counter(c.calling for c in calls if c.called in hotlines)
    slack = max(m.tolerance for m in matches)
    lo, hi = period[0].timestamp() - slack, period[1].timestamp() + slack
    return Counter(c.calling for c in calls if c.called in hotlines and lo <= c.at.timestamp() < hi)


def _rate(flags: float, calls: int, base: float) -> float:
    """A number's expected flag rate per call, having made ``flags`` (a sum of shares) of its
    ``calls``: an ordinary caller's (``base``) or a repeat caller's (a rate of its own, uniform
    prior), weighted by how likely each makes what was seen (a two-class mixture)."""
    x = min(flags, calls)
    repeat = math.lgamma(1 + x) + math.lgamma(1 + calls - x) - math.lgamma(2 + calls)
    ordinary = x * math.log(base) + (calls - x) * math.log1p(-base)
    log_odds = math.log(REPEAT_PRIOR / (1 - REPEAT_PRIOR)) + repeat - ordinary
    p = 1 / (1 + math.exp(-log_odds)) if log_odds > -700 else 0.0
    return (1 - p) * base + p * (1 + x) / (2 + calls)


def _fit_rates(
    groups: list[dict[str, list[Candidate]]], calls_of: Counter[str], base: float, absent: float
) -> dict[str, float]:
    """Each number's flag rate per call: every flag is shared among its candidates in proportion
    to their rates, each rate is re-estimated from its shares (EM), until they settle."""
    numbers = sorted({n for group in groups for n in group})
    rate = dict.fromkeys(numbers, base)
    for _ in range(_EM_ROUNDS):
        share: dict[str, float] = defaultdict(float)
        for group in groups:
            total = absent + sum(rate[n] for n in group)
            for n in group:
                share[n] += rate[n] / total
        new = {n: _rate(share[n], calls_of[n], base) for n in numbers}
        settled = max(abs(new[n] - rate[n]) for n in numbers) < _EM_EPSILON
        rate = new
        if settled:
            break
    return rate


def _by_number(candidates: Iterable[Candidate]) -> dict[str, list[Candidate]]:
    group: dict[str, list[Candidate]] = {}
    for c in candidates:
        group.setdefault(c.call.calling, []).append(c)
    return group


def _credit(
    found: Sequence[FlagMatch],
    groups: list[dict[str, list[Candidate]]],
    rate: dict[str, float],
    absent: float,
) -> tuple[dict[str, float], dict[str, list[Evidence]]]:
    """Each number's total share of the flags, and the flags credited to it: those it carries
    more than half of, each explained by a call of its own (the most certain first)."""
    share: dict[str, float] = defaultdict(float)
    credited: list[tuple[float, int, str]] = []
    for i, group in enumerate(groups):
        total = absent + sum(rate[n] for n in group)
        for n in group:
            share[n] += rate[n] / total
            if rate[n] / total > MIN_CERTAINTY:
                credited.append((rate[n] / total, i, n))
    credited.sort(key=lambda item: (-item[0], item[1], item[2]))
    used: set[CarrierCall] = set()
    evidence: dict[str, list[Evidence]] = defaultdict(list)
    for certainty, i, n in credited:
        near = next((c for c in groups[i][n] if c.call not in used), None)
        if near is None:  # its only call near this flag already explains another one
            continue
        used.add(near.call)
        evidence[n].append(
            Evidence(found[i].flag, near.call, near.offset, certainty, len(groups[i]))
        )
    return share, evidence


def propose(
    matches: Sequence[FlagMatch],
    calls: Iterable[CarrierCall],
    *,
    min_flags: int = 1,
    period: tuple[datetime, datetime] | None = None,
) -> list[Proposal]:
    """The calling numbers that most likely made at least ``min_flags`` of the flagged calls,
    most flags first (then the larger share, then the smaller mean offset).

    ``calls`` is the whole bill and ``period`` the time the flags were read for (default: the
    whole bill): a number's calls to the flagged hotlines in it set its flag rate, so a number
    that calls all the time gets little of each flag it happens to be near (see the module
    docstring).

    Raises:
        ValueError: ``min_flags`` below 1.
    """
    if min_flags < 1:
        raise ValueError("min_flags is 1 or more")
    found = [m for m in matches if m.candidates]
    groups = [_by_number(m.candidates) for m in found]
    calls_of = _calls_in_scope(matches, calls, period)
    for group in groups:  # a candidate just outside the period still counts as a call
        for n, near in group.items():
            calls_of[n] = max(calls_of[n], len(near))
    # the centre-wide rate; above one in two, the file is not the whole bill of the period
    base = min(MAX_BASE_RATE, len(found) / max(sum(calls_of.values()), 1))
    absent = ABSENT_WEIGHT * base
    rate = _fit_rates(groups, calls_of, base, absent) if groups else {}
    share, evidence = _credit(found, groups, rate, absent)
    proposals = []
    for n, items in evidence.items():
        if len(items) < min_flags:
            continue
        items.sort(key=lambda e: (_timestamp(e.flag.at), e.flag.flag_id))
        raw = items[0].call.calling_raw
        proposals.append(Proposal(n, raw, tuple(items), calls_of[n], share[n], rate[n]))
    proposals.sort(key=lambda p: (-p.flags, -p.share, abs(p.mean_offset), p.number))
    return proposals


@dataclass(frozen=True, slots=True)
class Summary:
    """What a match run looked at: the flags, how many found a call, the bill, the period."""

    flags: int
    matched: int
    calls: int
    callers: int
    tolerance: float
    since: datetime | None = None
    until: datetime | None = None


def summarise(
    matches: Sequence[FlagMatch],
    calls: Sequence[CarrierCall],
    *,
    tolerance: float,
    period: tuple[datetime, datetime] | None = None,
) -> Summary:
    """Counts for the report: ``callers`` is how many numbers called the flagged hotlines."""
    return Summary(
        flags=len(matches),
        matched=sum(1 for m in matches if m.candidates),
        calls=len(calls),
        callers=len(_calls_in_scope(matches, calls, period)),
        tolerance=tolerance,
        since=period[0] if period else None,
        until=period[1] if period else None,
    )


# --- renderers ----------------------------------------------------------------------------------


def _safe(text: str, limit: int = 40) -> str:
    """Text from Asterisk or the bill made safe for one line of a report (escaped, bounded)."""
    return ascii(text[:limit])[1:-1]


def _local(at: datetime, zone: ZoneInfo | None) -> datetime:
    return at.astimezone(zone) if zone is not None and at.tzinfo is not None else at


def _seconds(value: float) -> str:
    return f"{value:+.0f} s"


def _evidence_dict(e: Evidence, zone: ZoneInfo | None) -> dict[str, Any]:
    return {
        "flag_id": _safe(e.flag.flag_id, 64),
        "flag_at": _local(e.flag.at, zone).isoformat(),
        "hotline": _safe(e.flag.hotline, 64),
        "called": e.call.called,
        "agent": _safe(e.flag.agent, 64),
        "call_at": _local(e.call.at, zone).isoformat(),
        "call_duration": e.call.duration,
        "bill_line": e.call.line,
        "offset": round(e.offset, 3),
        "certainty": round(e.certainty, 4),
        "candidates": e.candidates,
    }


def _proposal_dict(rank: int, p: Proposal, zone: ZoneInfo | None) -> dict[str, Any]:
    return {
        "rank": rank,
        "number": p.number,
        "raw": p.raw,
        "flags": p.flags,
        "share": round(p.share, 3),
        "calls": p.calls,
        "unflagged": p.unflagged,
        "rate": round(p.rate, 4),
        "mean_offset": round(p.mean_offset, 1),
        "evidence": [_evidence_dict(e, zone) for e in p.evidence],
    }


def render_json(summary: Summary, proposals: Sequence[Proposal], *, zone: ZoneInfo | None) -> str:
    """One JSON document: ``summary`` and ``proposals`` (ranked, each with its evidence)."""
    body = {
        "summary": {
            "flags": summary.flags,
            "matched": summary.matched,
            "calls": summary.calls,
            "callers": summary.callers,
            "tolerance": summary.tolerance,
            "since": _local(summary.since, zone).isoformat() if summary.since else None,
            "until": _local(summary.until, zone).isoformat() if summary.until else None,
        },
        "proposals": [_proposal_dict(n, p, zone) for n, p in enumerate(proposals, 1)],
    }
    return json.dumps(body, ensure_ascii=True, indent=2) + "\n"


CSV_FIELDS: Final = (
    "rank", "number", "flags", "share", "calls", "unflagged", "mean_offset", "flag_id",
    "flag_at", "hotline", "call_at", "call_duration", "bill_line", "offset", "certainty",
    "candidates",
)  # fmt: skip
"""Columns of :func:`render_csv`: one row per credited flag, the proposal repeated on each."""


def render_csv(proposals: Sequence[Proposal], *, zone: ZoneInfo | None) -> str:
    """CSV, one row per credited flag; every cell formula-safe (``'`` before = + - @)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rank, p in enumerate(proposals, 1):
        head = _proposal_dict(rank, p, zone)
        for e in head.pop("evidence"):
            row = {**head, **e}
            writer.writerow({k: csv_safe("" if v is None else str(v)) for k, v in row.items()})
    return out.getvalue()


def _columns_text(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_table(
    summary: Summary,
    proposals: Sequence[Proposal],
    *,
    zone: ZoneInfo | None,
    evidence_limit: int = 10,
) -> str:
    """A readable report: what was matched, then the proposals with (some of) their evidence."""
    when = ""
    if summary.since and summary.until:
        since, until = _local(summary.since, zone), _local(summary.until, zone)
        when = f" from {since:%Y-%m-%d %H:%M:%S} to {until:%Y-%m-%d %H:%M:%S}"
    lines = [
        f"withheld or unavailable flags{when}: {summary.flags}, "
        f"{summary.matched} with a call on the bill within {summary.tolerance:g} s",
        f"carrier bill: {summary.calls} calls, {summary.callers} numbers "
        f"called the flagged hotlines",
    ]
    if not proposals:
        return "\n".join([*lines, "no proposals"]) + "\n"
    lines += [f"proposals: {len(proposals)} (review before blocking)", ""]
    rows = [["rank", "number", "flags", "share", "calls", "unflagged", "mean offset"]]
    rows += [
        [
            str(n),
            p.number,
            str(p.flags),
            f"{p.share:.1f}",
            str(p.calls),
            str(p.unflagged),
            _seconds(p.mean_offset),
        ]
        for n, p in enumerate(proposals, 1)
    ]
    table = _columns_text(rows)
    lines.append(table[0])
    for p, row in zip(proposals, table[1:], strict=True):
        lines.append(row)
        ev = [
            [
                "   ",
                f"{_local(e.flag.at, zone):%Y-%m-%d %H:%M:%S}",
                f"flag {_safe(e.flag.flag_id)}",
                _safe(e.flag.hotline),
                f"bill line {e.call.line}",
                f"{_local(e.call.at, zone):%H:%M:%S}",
                _seconds(e.offset),
                f"certainty {e.certainty:.2f}",
                f"{e.candidates} candidate{'s' if e.candidates != 1 else ''}",
            ]
            for e in p.evidence[:evidence_limit]
        ]
        lines += _columns_text(ev)
        if p.flags > evidence_limit:
            lines.append(f"    ... {p.flags - evidence_limit} more flags (--format csv or json)")
    return "\n".join(lines) + "\n"


def rule_reason(proposal: Proposal, prefix: str) -> str:
    """A rule's reason naming the matched flags, within the rules' :data:`MAX_REASON`."""
    head = f"{prefix}: on the bill at {proposal.flags} flagged withheld call(s), flags "
    ids = [_safe(e.flag.flag_id, 32) for e in proposal.evidence]
    for shown in range(len(ids), 0, -1):
        more = f" +{len(ids) - shown} more" if shown < len(ids) else ""
        text = head + ", ".join(ids[:shown]) + more
        if len(text) <= MAX_REASON:
            return text
    return head[: MAX_REASON - 3].rstrip() + "..."


RULES_CSV_FIELDS: Final = ("list", "match", "value", "action", "reason")


def proposals_to_rules_csv(proposals: Iterable[Proposal], reason_prefix: str) -> str:
    """Block rules for the proposed numbers, as ``screener rules import`` reads them (formula
    safe: the import strips the ``'`` guard again). Review, edit or delete lines, then import."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RULES_CSV_FIELDS)
    for p in proposals:
        row = ("block", "number", p.number, "block", rule_reason(p, reason_prefix))
        writer.writerow([csv_safe(cell) for cell in row])
    return out.getvalue()
