"""The managers' report: frequency by day and hour, sources, clusters, repeat offenders, hotlines
and the anonymous flagged calls of a period. Pure: built from what ``store.py`` reads, rendered
as text, CSV or JSON (``charts.py`` draws the heatmap as a PNG).

Numbers are masked (``+86138****1234``) unless the report is asked for unmasked; the CSV is safe
to open in a spreadsheet (no cell starts with ``= + - @``); the anonymous calls carry their exact
time and called number, which is what a carrier's bill is searched by (``screener bills``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from screener.model import Flag
from screener.number import mask
from screener.rules import csv_safe

_SHADES = " .:-=+*#%@"


@dataclass(frozen=True, slots=True)
class Source:
    """A caller in the report (``number`` masked unless the report is unmasked)."""

    number: str
    flags: int  # in the period
    total_flags: int  # within retention
    agents: int
    kind: str
    region: str
    area: str
    carrier: str


@dataclass(frozen=True, slots=True)
class Cluster:
    """Several flagged numbers in one 100-number block: a bank of public or office phones."""

    block: str
    numbers: tuple[str, ...]
    suggested_rule: str


@dataclass(frozen=True, slots=True)
class AnonymousCall:
    at: str  # ISO 8601 with offset, to the second
    called: str
    hotline: str
    presentation: str
    agent: str


@dataclass(frozen=True, slots=True)
class Report:
    since: str  # first day, ISO date
    until: str  # last day, ISO date
    timezone: str
    total_flags: int
    distinct_callers: int
    by_day: dict[str, int]
    by_hour: dict[int, int]
    by_weekday: dict[int, int]
    heatmap: dict[str, list[int]]  # day -> 24 hourly counts
    hotlines: dict[str, int]
    top_sources: list[Source]
    repeat_offenders: list[Source]
    clusters: list[Cluster]
    anonymous_calls: list[AnonymousCall]
    anonymous_truncated: bool = False
    masked: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive.

    Raises:
        ValueError: ``last`` before ``first``, or more than 3660 days.
    """
    if last < first:
        raise ValueError("the period ends before it starts")
    n = (last - first).days + 1
    if n > 3660:
        raise ValueError("a report covers at most 3660 days")
    return [first + timedelta(days=i) for i in range(n)]


def day_key(day: date) -> str:
    return day.strftime("%Y%m%d")


def _show(e164: str, fallback: str, masked: bool) -> str:
    if not e164:
        return fallback
    return mask(e164) if masked else e164


def source(caller: Mapping[str, Any], flags: int, masked: bool) -> Source:
    """A source from a caller's stored details (``store.CallerStats`` as a mapping)."""
    return Source(
        number=_show(caller.get("e164", ""), caller.get("masked", "") or "unknown", masked),
        flags=flags,
        total_flags=int(caller.get("count", 0)),
        agents=int(caller.get("agents", 0)),
        kind=caller.get("kind", ""),
        region=caller.get("region", ""),
        area=caller.get("area", ""),
        carrier=caller.get("carrier", ""),
    )


def cluster(block: str, numbers: Sequence[str], masked: bool) -> Cluster:
    shown = tuple(_show(n, n, masked) for n in numbers)
    rule = (
        f"screener rules add '{block}*' --reason 'prefix cluster: {len(numbers)} flagged "
        "numbers in one block'"
        if not masked
        else "a prefix rule for this block (see the report with --unmasked)"
    )
    # masked, the block is shown as its numbers are (``+86138****12`` for ``+86138****1234``):
    # mask(block) would show other digits, and together they would give the number away
    shown_block = mask(block + "00")[:-2] if masked else block
    return Cluster(block=shown_block, numbers=shown, suggested_rule=rule)


def build(
    *,
    days: Sequence[date],
    zone: ZoneInfo,
    day_hours: Mapping[str, Mapping[int, int]],
    day_hotlines: Mapping[str, Mapping[str, int]],
    distinct_callers: int,
    top_sources: Sequence[Source],
    repeat_offenders: Sequence[Source],
    clusters: Sequence[Cluster],
    anonymous: Iterable[Flag],
    anonymous_limit: int,
    masked: bool = True,
) -> Report:
    """Assemble a report from the per-day aggregates and the lists read for the period."""
    heatmap: dict[str, list[int]] = {}
    by_hour = dict.fromkeys(range(24), 0)
    by_weekday = dict.fromkeys(range(1, 8), 0)
    hotlines: dict[str, int] = {}
    for day in days:
        hours = day_hours.get(day_key(day), {})
        row = [int(hours.get(h, 0)) for h in range(24)]
        heatmap[day.isoformat()] = row
        for h, n in enumerate(row):
            by_hour[h] += n
        by_weekday[day.isoweekday()] += sum(row)
        for name, n in day_hotlines.get(day_key(day), {}).items():
            hotlines[name] = hotlines.get(name, 0) + n
    calls = [
        AnonymousCall(
            at=f.at.astimezone(zone).isoformat(timespec="seconds"),
            called=f.called,
            hotline=f.hotline,
            presentation=str(f.caller.presentation),
            agent=f.agent,
        )
        for f in anonymous
    ]
    by_day = {d: sum(row) for d, row in heatmap.items()}
    truncated = len(calls) > anonymous_limit
    return Report(
        since=days[0].isoformat(),
        until=days[-1].isoformat(),
        timezone=str(zone),
        total_flags=sum(by_day.values()),
        distinct_callers=distinct_callers,
        by_day=by_day,
        by_hour=by_hour,
        by_weekday=by_weekday,
        heatmap=heatmap,
        hotlines=dict(sorted(hotlines.items(), key=lambda kv: -kv[1])),
        top_sources=list(top_sources),
        repeat_offenders=list(repeat_offenders),
        clusters=list(clusters),
        anonymous_calls=calls[:anonymous_limit],
        anonymous_truncated=truncated,
        masked=masked,
    )


# --- rendering ----------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def heatmap_text(heatmap: Mapping[str, Sequence[int]]) -> str:
    """One line per day, one character per hour, darker = more flags (scaled to the maximum)."""
    peak = max((max(row) for row in heatmap.values()), default=0)
    pad = " " * len("2024-03-04 Mo ")  # the day and weekday in front of each row
    lines = [pad + "".join(str(h // 10) for h in range(24))]
    lines.append(pad + "".join(str(h % 10) for h in range(24)) + "   flags")
    for day, row in heatmap.items():
        shades = "".join(
            _SHADES[0] if n == 0 else _SHADES[max(1, round(n / peak * (len(_SHADES) - 1)))]
            for n in row
        )
        weekday = datetime.fromisoformat(day).strftime("%a")
        lines.append(f"{day} {weekday[:2]} {shades}   {sum(row)}")
    lines.append(f"scale: '{_SHADES[1]}' few ... '{_SHADES[-1]}' {peak} flags in an hour")
    return "\n".join(lines)


def _source_rows(sources: Sequence[Source]) -> list[list[object]]:
    return [
        [
            s.number,
            s.flags,
            s.total_flags,
            s.agents,
            s.kind,
            s.region,
            s.area or "-",
            s.carrier or "-",
        ]
        for s in sources
    ]


_SOURCE_HEADERS = ["caller", "flags", "all time", "agents", "kind", "region", "area", "carrier"]


def render_text(r: Report) -> str:
    out = [
        f"screener report {r.since} .. {r.until} ({r.timezone})",
        f"{r.total_flags} flags from {r.distinct_callers} distinct callers"
        + ("" if r.masked else " (numbers unmasked)"),
        "",
        "Flags by day and hour",
        heatmap_text(r.heatmap),
        "",
        "By hour of day",
        _table(["hour", "flags"], [[f"{h:02d}", n] for h, n in r.by_hour.items()]),
        "",
        "By weekday",
        _table(
            ["weekday", "flags"],
            [
                [("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[d - 1], n]
                for d, n in r.by_weekday.items()
            ],
        ),
        "",
        "Hotlines",
        _table(["hotline", "flags"], list(r.hotlines.items())) if r.hotlines else "(none)",
        "",
        "Top sources",
        _table(_SOURCE_HEADERS, _source_rows(r.top_sources)) if r.top_sources else "(none)",
        "",
        "Repeat offenders (2+ flags in the period)",
        _table(_SOURCE_HEADERS, _source_rows(r.repeat_offenders))
        if r.repeat_offenders
        else "(none)",
        "",
        "Prefix clusters (3+ flagged numbers in one 100-number block)",
    ]
    if r.clusters:
        for c in r.clusters:
            out.append(f"  {c.block}xx: {len(c.numbers)} numbers: {', '.join(c.numbers[:8])}")
            out.append(f"    suggested: {c.suggested_rule}")
    else:
        out.append("(none)")
    out += ["", "Anonymous flagged calls (search the carrier's bill by time and called number)"]
    if r.anonymous_calls:
        out.append(
            _table(
                ["time", "called", "hotline", "presentation", "agent"],
                [[a.at, a.called, a.hotline, a.presentation, a.agent] for a in r.anonymous_calls],
            )
        )
        if r.anonymous_truncated:
            out.append("(more not shown: use --format csv, or narrow the period)")
    else:
        out.append("(none)")
    return "\n".join(out) + "\n"


def _time_rows(r: Report) -> Iterator[tuple[object, ...]]:
    yield ("period", r.since, r.until, r.timezone, r.total_flags, r.distinct_callers)
    for day, hours in r.heatmap.items():
        yield ("day", day, sum(hours))
    for day, hours in r.heatmap.items():
        yield from (("day_hour", day, h, n) for h, n in enumerate(hours) if n)
    yield from (("hour", h, n) for h, n in r.by_hour.items())
    yield from (("weekday", d, n) for d, n in r.by_weekday.items())
    yield from (("hotline", name, n) for name, n in r.hotlines.items())


def _source_csv_rows(r: Report) -> Iterator[tuple[object, ...]]:
    yield from (("top_source", *row) for row in _source_rows(r.top_sources))
    yield from (("repeat_offender", *row) for row in _source_rows(r.repeat_offenders))
    for c in r.clusters:
        yield ("cluster", c.block, len(c.numbers), " ".join(c.numbers), c.suggested_rule)
    for a in r.anonymous_calls:
        yield ("anonymous_call", a.at, a.called, a.hotline, a.presentation, a.agent)


def render_csv(r: Report) -> str:
    """One table: ``section`` then up to eight value columns (formula-safe)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "a", "b", "c", "d", "e", "f", "g", "h"])
    for section, *values in (*_time_rows(r), *_source_csv_rows(r)):
        w.writerow([section, *(csv_safe(v) for v in values)])
    return buf.getvalue()


def render_json(r: Report) -> str:
    return json.dumps(r.to_dict(), ensure_ascii=True, indent=2) + "\n"
