"""Tests for screener.rules: the rule model, its text forms and the import/export codecs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener import rules as rules_module
from screener.errors import ImportFormatError
from screener.number import mask
from screener.rules import (
    FIELDS,
    MAX_REASON,
    Match,
    Mode,
    Origin,
    Rule,
    RuleContext,
    RuleList,
    Treatment,
    Verdict,
    Window,
    canonical_value,
    check_ids,
    clean_text,
    describe,
    export_csv,
    export_json,
    index_values,
    infer_match,
    number_prefixes,
    parse_duration,
    parse_expiry,
    parse_import,
    parse_rule,
    range_prefixes,
    with_id,
)
from tests.factories import AT

ZONE = ZoneInfo("Asia/Shanghai")  # UTC+8, no DST
NOW = AT.timestamp()  # Wednesday 2024-03-06 14:30:05 UTC = 22:30:05 in Shanghai
CTX = RuleContext(
    region="CN",
    zone=ZONE,
    now=NOW,
    actor="alice",
    hotlines=frozenset({"service", "complaints"}),
)
MOBILE = "+8613812341234"
ALL_DAYS = frozenset(range(1, 8))


def make_rule(**changes: Any) -> Rule:
    """A stored-looking block rule for one number; ``changes`` replaces any field."""
    rule = Rule(
        id="r1",
        list=RuleList.BLOCK,
        match=Match.NUMBER,
        value=MOBILE,
        action=Verdict.BLOCK,
        reason="threatened an agent",
        created_by="alice",
        created_at=NOW,
    )
    rule = dataclasses.replace(rule, **changes)
    return dataclasses.replace(rule, index=index_values(rule.match, rule.value))


def parse(**fields: object) -> Rule:
    fields.setdefault("reason", "abuse")
    return parse_rule(fields, CTX)


def problems_of(**fields: object) -> str:
    with pytest.raises(ValueError) as info:
        parse_rule(fields, CTX)
    return str(info.value)


# --- Window -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("learned", Window(learned=True)),
        (" LEARNED ", Window(learned=True)),
        ("*", Window()),
        ("22:00-06:00", Window(start=22 * 60, end=6 * 60)),
        ("sat,sun", Window(days=frozenset({6, 7}))),
        ("mon-fri 09:00-18:00", Window(frozenset({1, 2, 3, 4, 5}), 9 * 60, 18 * 60)),
        ("09:00-18:00 mon-fri", Window(frozenset({1, 2, 3, 4, 5}), 9 * 60, 18 * 60)),
        ("Mon-Fri 9:00-18:30", Window(frozenset({1, 2, 3, 4, 5}), 9 * 60, 18 * 60 + 30)),
        ("fri-mon", Window(days=frozenset({5, 6, 7, 1}))),  # wraps over the week end
        ("mon,wed-thu,sun", Window(days=frozenset({1, 3, 4, 7}))),
        ("00:00-24:00", Window()),
        ("23:59-00:00", Window(start=23 * 60 + 59, end=0)),
        ("* 12:00-13:00", Window(start=720, end=780)),
    ],
)
def test_window_parse(text: str, window: Window) -> None:
    assert Window.parse(text) == window


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "mon 09:00-18:00 x",
        "learned 22:00-06:00",
        "monday",
        "mon,",
        "-fri",
        "mon-funday",
        "25:00-06:00",
        "24:00-06:00",
        "10:60-11:00",
        "10:00-24:30",
        "10:00-10:00",
        "10-11",
        "10:00",
        "1000:00-11:00",
        "sat sun",  # two day words: one of them would be dropped silently
        "09:00-10:00 11:00-12:00",  # two time ranges: likewise
    ],
)
def test_window_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"window|days|time range"):
        Window.parse(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("learned", "learned"),
        ("*", "*"),
        ("mon-fri 09:00-18:00", "mon,tue,wed,thu,fri 09:00-18:00"),
        ("fri 22:00-06:00", "fri 22:00-06:00"),
        ("sun,sat", "sat,sun"),
        ("0:05-24:00", "00:05-24:00"),
    ],
)
def test_window_str(text: str, shown: str) -> None:
    assert str(Window.parse(text)) == shown


WINDOWS = st.builds(
    Window,
    days=st.frozensets(st.integers(1, 7), min_size=1),
    start=st.integers(0, 1439),
    end=st.integers(1, 1440),
).filter(lambda w: w.start != w.end)


@given(WINDOWS)
def test_window_str_parses_back(window: Window) -> None:
    assert Window.parse(str(window)) == window


FRI = datetime(2024, 3, 8)  # a Friday
SAT, SUN, MON = FRI + timedelta(days=1), FRI + timedelta(days=2), FRI + timedelta(days=3)


def at(day: datetime, hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return day.replace(hour=int(hours), minute=int(minutes))


@pytest.mark.parametrize(
    ("text", "local", "expected"),
    [
        ("fri 22:00-06:00", at(FRI, "22:00"), True),
        ("fri 22:00-06:00", at(FRI, "21:59"), False),
        ("fri 22:00-06:00", at(FRI, "23:59"), True),
        ("fri 22:00-06:00", at(SAT, "00:00"), True),  # after midnight: the window started Fri
        ("fri 22:00-06:00", at(SAT, "05:59"), True),
        ("fri 22:00-06:00", at(SAT, "06:00"), False),  # the end is exclusive
        ("fri 22:00-06:00", at(FRI, "05:00"), False),  # Thursday's night is not Friday's
        ("fri 22:00-06:00", at(SAT, "22:30"), False),
        ("sun 22:00-06:00", at(MON, "03:00"), True),  # across midnight and the week end
        ("sun 22:00-06:00", at(SUN, "03:00"), False),
        ("22:00-06:00", at(MON, "03:00"), True),
        ("22:00-06:00", at(MON, "12:00"), False),
        ("22:00-00:00", at(FRI, "23:59"), True),
        ("22:00-00:00", at(SAT, "00:00"), False),
        ("mon-fri 09:00-18:00", at(FRI, "09:00"), True),
        ("mon-fri 09:00-18:00", at(FRI, "17:59"), True),
        ("mon-fri 09:00-18:00", at(FRI, "18:00"), False),
        ("mon-fri 09:00-18:00", at(FRI, "08:59"), False),
        ("mon-fri 09:00-18:00", at(SAT, "10:00"), False),
        ("sat,sun", at(SAT, "00:00"), True),
        ("sat,sun", at(SUN, "23:59"), True),
        ("sat,sun", at(FRI, "23:59"), False),
        ("*", at(MON, "00:00"), True),
    ],
)
def test_window_matches(text: str, local: datetime, expected: bool) -> None:
    assert Window.parse(text).matches(local, frozenset()) is expected


def test_window_matches_an_aware_local_time_by_its_own_wall_clock() -> None:
    window = Window.parse("fri 22:00-06:00")
    assert window.matches(at(SAT, "01:00").replace(tzinfo=ZONE), frozenset())
    assert not window.matches(at(SAT, "07:00").replace(tzinfo=ZONE), frozenset())


@pytest.mark.parametrize(
    ("hour", "high_risk", "expected"),
    [(22, {22, 23}, True), (23, {22, 23}, True), (21, {22, 23}, False), (22, set(), False)],
)
def test_learned_window_follows_the_high_risk_hours(
    hour: int, high_risk: set[int], expected: bool
) -> None:
    local = FRI.replace(hour=hour, minute=30)
    assert Window.parse("learned").matches(local, frozenset(high_risk)) is expected


def test_only_learned_windows_read_the_high_risk_hours() -> None:
    window = Window.parse("09:00-10:00")
    assert not window.matches(at(FRI, "22:00"), frozenset({22}))
    assert window.matches(at(FRI, "09:30"), frozenset())


def _in_window_by_brute_force(window: Window, local: datetime) -> bool:
    """Whether ``local`` falls in a span that starts on one of the window's days."""
    length = (window.end - window.start) % 1440 or 1440
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for back in (0, 1):
        begins = midnight - timedelta(days=back) + timedelta(minutes=window.start)
        if begins.isoweekday() in window.days and begins <= local < begins + timedelta(
            minutes=length
        ):
            return True
    return False


@given(
    WINDOWS,
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31)),
)
def test_window_matches_like_spans_from_its_days(window: Window, local: datetime) -> None:
    local = local.replace(second=0, microsecond=0)
    assert window.matches(local, frozenset()) is _in_window_by_brute_force(window, local)


# --- range_prefixes, number_prefixes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "prefixes"),
    [
        ("1200", "1299", ["12"]),
        ("1250", "1320", ["125", "126", "127", "128", "129", "130", "131", "1320"]),
        ("1234", "1234", ["1234"]),
        ("1000", "2999", ["1", "2"]),
        ("0000", "9999", [""]),  # every number of that length
        ("1299", "1300", ["1299", "1300"]),
        ("0", "9", [""]),
        ("3", "7", ["3", "4", "5", "6", "7"]),
        ("10", "19", ["1"]),
        ("19", "20", ["19", "20"]),
    ],
)
def test_range_prefixes_examples(lo: str, hi: str, prefixes: list[str]) -> None:
    assert range_prefixes(lo, hi) == prefixes


@pytest.mark.parametrize(
    ("lo", "hi"), [("123", "1234"), ("", ""), ("12a", "129"), ("130", "129"), ("+12", "+13")]
)
def test_range_prefixes_rejects(lo: str, hi: str) -> None:
    with pytest.raises(ValueError, match="same length, low first"):
        range_prefixes(lo, hi)


def _times_covered(number: str, prefixes: set[str]) -> int:
    return sum(number[:k] in prefixes for k in range(len(number) + 1))


@st.composite
def digit_ranges(draw: st.DrawFn, max_len: int) -> tuple[str, str]:
    n = draw(st.integers(1, max_len))
    a, b = draw(st.integers(0, 10**n - 1)), draw(st.integers(0, 10**n - 1))
    return f"{min(a, b):0{n}d}", f"{max(a, b):0{n}d}"


@given(digit_ranges(max_len=4))
def test_range_prefixes_cover_exactly_the_range_brute_force(bounds: tuple[str, str]) -> None:
    lo, hi = bounds
    prefixes = set(range_prefixes(lo, hi))
    n = len(lo)
    for x in range(10**n):
        number = f"{x:0{n}d}"
        assert _times_covered(number, prefixes) == (1 if lo <= number <= hi else 0), number


@given(digit_ranges(max_len=6), st.randoms(use_true_random=False))
def test_range_prefixes_cover_exactly_the_range_up_to_six_digits(
    bounds: tuple[str, str], rnd: random.Random
) -> None:
    lo, hi = bounds
    found = range_prefixes(lo, hi)
    prefixes = set(found)
    n, low, high = len(lo), int(lo), int(hi)
    assert len(prefixes) == len(found)
    # no prefix is a prefix of another: the blocks never overlap
    for p in found:
        assert not any(q != p and q.startswith(p) for q in found)
    # every block lies in the range and together they are exactly its size
    assert sum(10 ** (n - len(p)) for p in found) == high - low + 1
    for p in found:
        assert low <= int(p.ljust(n, "0")) and int(p.ljust(n, "9")) <= high
    # brute force on the edges, around every block boundary, and at random
    probes = {*range(low - 30, low + 30), *range(high - 30, high + 30)}
    for p in found:
        probes |= {int(p.ljust(n, "0")) - 1, int(p.ljust(n, "9")) + 1}
    probes |= {rnd.randrange(10**n) for _ in range(300)}
    for x in probes:
        if 0 <= x < 10**n:
            number = f"{x:0{n}d}"
            assert _times_covered(number, prefixes) == (1 if low <= x <= high else 0), number


@given(digit_ranges(max_len=6))
def test_range_prefixes_are_the_fewest(bounds: tuple[str, str]) -> None:
    # a decimal prefix cover is minimal when no prefix's parent block would also fit the range
    lo, hi = bounds
    n = len(lo)
    for p in range_prefixes(lo, hi):
        if p:
            parent = p[:-1]
            assert not (
                int(lo) <= int(parent.ljust(n, "0")) and int(parent.ljust(n, "9")) <= int(hi)
            ), p


def test_number_prefixes() -> None:
    assert number_prefixes("+8610") == ["+8", "+86", "+861", "+8610"]
    assert number_prefixes("+8") == ["+8"]
    assert number_prefixes("8610") == []
    assert number_prefixes("anonymous") == []
    assert number_prefixes("") == []


@given(st.text(alphabet="0123456789", min_size=1, max_size=15))
def test_number_prefixes_name_every_prefix_rule_that_could_match(digits: str) -> None:
    e164 = "+" + digits
    prefixes = number_prefixes(e164)
    assert len(prefixes) == len(digits)
    assert all(e164.startswith(p) for p in prefixes)
    assert prefixes[-1] == e164


def test_index_values() -> None:
    assert index_values(Match.NUMBER, MOBILE) == (MOBILE,)
    assert index_values(Match.PREFIX, "+86105") == ("+86105",)
    assert index_values(Match.ANONYMOUS, "withheld") == ("withheld",)
    assert index_values(Match.RANGE, "+861012345600..+861012345699") == ("+8610123456",)
    assert index_values(Match.RANGE, "+8610123456..+8610123465") == tuple(
        f"+86101234{n}" for n in range(56, 66)
    )


# --- canonical_value, infer_match -------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "text", "region", "value"),
    [
        (Match.NUMBER, "13812341234", "CN", MOBILE),
        (Match.NUMBER, " +8613812341234 ", "CN", MOBILE),
        (Match.NUMBER, "008613812341234", "CN", MOBILE),
        (Match.NUMBER, "01088886666", "CN", "+861088886666"),
        (Match.NUMBER, "2025550123", "US", "+12025550123"),
        (Match.PREFIX, "+86105*", "CN", "+86105"),
        (Match.PREFIX, "+86105", "CN", "+86105"),
        (Match.PREFIX, "+86 (10) 5-*", "CN", "+86105"),
        (Match.PREFIX, "010*", "CN", "+8610"),  # the trunk prefix becomes the country code
        (Match.PREFIX, "010", "CN", "+8610"),
        (Match.PREFIX, "0755 8*", "CN", "+867558"),
        (Match.PREFIX, "1202*", "US", "+1202"),
        (Match.PREFIX, "+86", "CN", "+86"),
        (Match.PREFIX, "+" + "1" * 15 + "*", "CN", "+" + "1" * 15),
        (
            Match.RANGE,
            "+861012345600..+861012345699",
            "CN",
            "+861012345600..+861012345699",
        ),
        (
            Match.RANGE,
            "01012345600 .. 01012345699",
            "CN",
            "+861012345600..+861012345699",
        ),
        (Match.RANGE, "13812341234..13812341234", "CN", f"{MOBILE}..{MOBILE}"),
        (Match.ANONYMOUS, "", "CN", "any"),
        (Match.ANONYMOUS, "Any", "CN", "any"),
        (Match.ANONYMOUS, " WITHHELD ", "CN", "withheld"),
        (Match.ANONYMOUS, "unavailable", "CN", "unavailable"),
        # the caller-ID words screener itself knows as anonymous
        (Match.ANONYMOUS, "Anonymous", "CN", "any"),
        (Match.ANONYMOUS, "private", "CN", "withheld"),
        (Match.ANONYMOUS, "RESTRICTED", "CN", "withheld"),
        (Match.ANONYMOUS, "unknown", "CN", "unavailable"),
    ],
)
def test_canonical_value(match: Match, text: str, region: str, value: str) -> None:
    assert canonical_value(match, text, region) == value


@pytest.mark.parametrize("text", ["138 1234 1234", "+86 138-1234-1234", "(0)138.1234.1234"])
def test_numbers_may_be_written_with_separators(text: str) -> None:
    assert canonical_value(Match.NUMBER, text, "CN") == "+8613812341234"


@pytest.mark.parametrize(
    ("match", "text", "region", "message"),
    [
        (Match.NUMBER, "anonymous", "CN", "not a phone number"),
        (Match.NUMBER, "abc", "CN", "not a phone number"),
        (Match.NUMBER, "138\n12341234", "CN", "not a phone number"),
        (Match.NUMBER, "13812341234\r\nAction: Logoff", "CN", "not a phone number"),
        (Match.PREFIX, "105*", "CN", r"trunk prefix of CN \(0\)"),
        (Match.PREFIX, "06*", "IT", r"trunk prefix of IT \(none\)"),
        (Match.PREFIX, "+8*", "CN", "2 to 15 digits"),
        (Match.PREFIX, "+" + "1" * 16, "CN", "2 to 15 digits"),
        (Match.PREFIX, "+", "CN", "not a number prefix"),
        (Match.PREFIX, "*", "CN", "trunk prefix"),
        (Match.PREFIX, "+86x*", "CN", "not a number prefix"),
        (Match.PREFIX, "+86*10", "CN", "not a number prefix"),
        (Match.PREFIX, "+0861*", "CN", "not a number prefix"),  # no country code starts with 0
        (Match.PREFIX, "0086105*", "CN", "international"),  # would be +86086105: never matches
        (Match.RANGE, "+861012345600", "CN", "LOW..HIGH"),
        (Match.RANGE, "+861012345699..+861012345600", "CN", "low first"),
        (Match.RANGE, "+86101234560..+861012345699", "CN", "same length"),
        (Match.RANGE, "+861012345600..nope", "CN", "not a phone number"),
        (Match.RANGE, "1..2..3", "CN", "not a phone number"),
        (Match.ANONYMOUS, "maybe", "CN", "any, withheld, unavailable"),
        (Match.ANONYMOUS, "unknown caller", "CN", "any, withheld, unavailable"),
    ],
)
def test_canonical_value_rejects(match: Match, text: str, region: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonical_value(match, text, region)


def test_canonical_value_refuses_a_range_with_too_many_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 15 digits need at most a few hundred prefixes, so the real limit is a safety net
    monkeypatch.setattr(rules_module, "MAX_RANGE_PREFIXES", 8)
    value = "+861012345600..+861012345699"
    assert canonical_value(Match.RANGE, value, "CN") == value  # one prefix
    with pytest.raises(ValueError, match="too fragmented"):
        canonical_value(Match.RANGE, "+861012345601..+861012345698", "CN")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("13812341234", Match.NUMBER),
        ("+8613812341234", Match.NUMBER),
        ("+86105*", Match.PREFIX),
        ("010*", Match.PREFIX),
        ("+861012345600..+861012345699", Match.RANGE),
        ("1*..2*", Match.RANGE),
        ("withheld", Match.ANONYMOUS),
        (" Any ", Match.ANONYMOUS),
        ("unavailable", Match.ANONYMOUS),
        ("Anonymous", Match.ANONYMOUS),
        ("private", Match.ANONYMOUS),
        ("", Match.ANONYMOUS),
        ("abc", Match.NUMBER),
    ],
)
def test_infer_match(text: str, match: Match) -> None:
    assert infer_match(text) is match


# --- durations, expiry, text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("90m", 5400),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        (" 1D ", 86400),
        ("1w1d1h1m1s", 694861),
        ("0m", 0),
        ("999999s", 999999),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "7", "d", "7x", "7d 12h", "1.5h", "-1d", "1234567d", "7dd", "d7", "7d!"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7d", NOW + 7 * 86400),
        (" 1h30m ", NOW + 5400),
        (NOW + 60, NOW + 60),
        (int(NOW) + 60, float(int(NOW) + 60)),
        # naive ISO is the configured zone: 23:00 in Shanghai is 15:00 UTC
        ("2024-03-06T23:00", datetime(2024, 3, 6, 15, 0, tzinfo=ZoneInfo("UTC")).timestamp()),
        ("2024-03-07", datetime(2024, 3, 6, 16, 0, tzinfo=ZoneInfo("UTC")).timestamp()),
        (
            "2024-03-06T14:31:00+00:00",
            datetime(2024, 3, 6, 14, 31, tzinfo=ZoneInfo("UTC")).timestamp(),
        ),
        (
            "2026-12-31T18:00:00-05:00",
            datetime(2026, 12, 31, 23, 0, tzinfo=ZoneInfo("UTC")).timestamp(),
        ),
    ],
)
def test_parse_expiry(value: object, expected: float | None) -> None:
    assert parse_expiry(value, NOW, ZONE) == expected


def test_parse_expiry_reads_naive_times_in_the_given_zone() -> None:
    # 20:00 on the day is already past in Shanghai (22:30 now) but still ahead in UTC (14:30)
    with pytest.raises(ValueError, match="past"):
        parse_expiry("2024-03-06T20:00", NOW, ZONE)
    assert parse_expiry("2024-03-06T20:00", NOW, ZoneInfo("UTC")) == NOW + 5 * 3600 + 29 * 60 + 55


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0s", "past"),
        (NOW, "past"),
        (NOW - 1, "past"),
        (0, "past"),
        ("2024-03-06T22:00", "past"),
        ("2020-01-01", "past"),
        ("2024-03-06T14:30:05+00:00", "past"),
        ("tomorrow", "a duration"),
        ("7 days", "a duration"),
        ("1700000000", "a duration"),  # epoch seconds as text are not a date
        (True, "string or a number"),
        (["7d"], "string or a number"),
        (math.nan, "expires"),  # JSON's NaN would make a rule that is never active
        (math.inf, "expires"),
    ],
)
def test_parse_expiry_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_expiry(value, NOW, ZONE)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("spam calls", "spam calls"),
        ("  padded  ", "padded"),
        (
            "骚扰电话 — «quotes», 'apostrophes' & emoji 📞",
            "骚扰电话 — «quotes», 'apostrophes' & emoji 📞",
        ),
        ("trailing newline\n", "trailing newline"),  # stripped, not rejected
        ("", ""),
        ("x" * MAX_REASON, "x" * MAX_REASON),
    ],
)
def test_clean_text(value: str, text: str) -> None:
    assert clean_text(value, "reason") == text


@pytest.mark.parametrize(
    "char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
)
def test_clean_text_rejects_control_characters(char: str) -> None:
    with pytest.raises(ValueError, match="reason must be one line of printable text"):
        clean_text(f"line one{char}line two", "reason")


def test_clean_text_rejects_non_text_and_long_text() -> None:
    with pytest.raises(ValueError, match="reason must be text"):
        clean_text(42, "reason")
    with pytest.raises(ValueError, match="reason must be text"):
        clean_text(None, "reason")
    with pytest.raises(ValueError, match=f"longer than {MAX_REASON}"):
        clean_text("x" * (MAX_REASON + 1), "reason")
    with pytest.raises(ValueError, match="note is longer than 5"):
        clean_text("abcdef", "note", limit=5)


# --- parse_rule -------------------------------------------------------------------------------


def test_parse_rule_minimal_number_block() -> None:
    rule = parse_rule({"value": "13812341234", "reason": " threatened an agent "}, CTX)
    assert rule == Rule(
        id="",
        list=RuleList.BLOCK,
        match=Match.NUMBER,
        value=MOBILE,
        action=Verdict.BLOCK,
        reason="threatened an agent",
        created_by="alice",
        created_at=NOW,
    )
    assert rule.index == (MOBILE,)
    assert rule.origin is Origin.ADMIN
    assert rule.mode is Mode.ENFORCE
    assert rule.treatment is None
    assert rule.expires_at is None


def test_parse_rule_every_field() -> None:
    rule = parse(
        list="BLOCK",
        match="range",
        value="01012345600..01012345699",
        action="block",
        treatment="Busy",
        hotlines="service; complaints",
        windows=["mon-fri 22:00-06:00", "learned"],
        expires="7d",
        mode="shadow",
        reason="a bank of phones",
    )
    assert rule.match is Match.RANGE
    assert rule.value == "+861012345600..+861012345699"
    assert rule.index == ("+8610123456",)
    assert rule.treatment is Treatment.BUSY
    assert rule.hotlines == ("service", "complaints")
    assert rule.windows == (Window.parse("mon-fri 22:00-06:00"), Window(learned=True))
    assert rule.expires_at == NOW + 7 * 86400
    assert rule.mode is Mode.SHADOW


def test_parse_rule_keeps_the_context_origin() -> None:
    rule = parse_rule(
        {"value": "+86105*", "reason": "x"}, dataclasses.replace(CTX, origin=Origin.AUTO)
    )
    assert rule.origin is Origin.AUTO
    assert rule.match is Match.PREFIX


@pytest.mark.parametrize(
    ("fields", "list_", "action", "treatment"),
    [
        ({}, RuleList.BLOCK, Verdict.BLOCK, None),
        ({"list": "allow"}, RuleList.ALLOW, Verdict.ALLOW, None),
        ({"list": "allow", "action": "allow"}, RuleList.ALLOW, Verdict.ALLOW, None),
        ({"action": "challenge"}, RuleList.BLOCK, Verdict.CHALLENGE, None),
        ({"action": "analysis"}, RuleList.BLOCK, Verdict.ANALYSIS, None),
        ({"treatment": "linefault"}, RuleList.BLOCK, Verdict.BLOCK, Treatment.LINEFAULT),
        (
            {"action": "block", "treatment": "reject"},
            RuleList.BLOCK,
            Verdict.BLOCK,
            Treatment.REJECT,
        ),
    ],
)
def test_parse_rule_list_and_action(
    fields: dict[str, str], list_: RuleList, action: Verdict, treatment: Treatment | None
) -> None:
    rule = parse(value="13812341234", **fields)
    assert (rule.list, rule.action, rule.treatment) == (list_, action, treatment)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"list": "allow", "action": "block"}, "allowlist rules have action allow"),
        ({"list": "allow", "action": "challenge"}, "allowlist rules have action allow"),
        ({"action": "allow"}, "blocklist rules have action block, challenge or analysis"),
        ({"list": "allow", "treatment": "busy"}, "a treatment goes with action block only"),
        ({"action": "challenge", "treatment": "busy"}, "treatment goes with action block only"),
        ({"action": "analysis", "treatment": "busy"}, "treatment goes with action block only"),
        ({"list": "deny"}, "list 'deny': one of block, allow"),
        ({"action": "drop"}, "action 'drop': one of allow, block, challenge, analysis"),
        ({"treatment": "music"}, "treatment 'music': one of analysis, linefault, busy, reject"),
        ({"mode": "dry-run"}, "mode 'dry-run': one of enforce, shadow"),
        ({"match": "regex"}, "match 'regex': one of number, prefix, range, anonymous"),
        ({"match": "prefix"}, "trunk prefix"),  # 13812341234 is no prefix form
        ({"hotlines": "sales"}, r"hotline 'sales' is not configured \(complaints, service\)"),
        ({"hotlines": ["service", "bad name"]}, "hotline 'bad name': 1-64 of"),
        ({"hotlines": 7}, "hotlines must be a list"),
        ({"hotlines": ["service", 7]}, "hotlines must hold strings"),
        ({"windows": "mon 25:00-26:00"}, "time range '25:00-26:00'"),
        ({"windows": "learned;someday"}, "days 'someday'"),
        ({"expires": "2020-01-01"}, "expires is in the past"),
        ({"expires_at": NOW - 5}, "expires is in the past"),
        ({"expires": "soon"}, "expires 'soon'"),
        ({"reason": ""}, "reason is required"),
        ({"reason": "   "}, "reason is required"),
        ({"reason": "two\nlines"}, "reason must be one line"),
        ({"reason": 5}, "reason must be text"),
        ({"colour": "red", "size": 1}, "unknown field.*colour, size"),
    ],
)
def test_parse_rule_names_the_problem(fields: dict[str, object], message: str) -> None:
    fields = {"value": "13812341234", "reason": "abuse", **fields}
    with pytest.raises(ValueError, match=message):
        parse_rule(fields, CTX)


def test_parse_rule_without_a_reason_field() -> None:
    assert "reason is required" in problems_of(value="13812341234")


@pytest.mark.parametrize("value", [None, "", "   ", 8613812341234, ["13812341234"]])
def test_parse_rule_needs_a_value(value: object) -> None:
    assert "value is required" in problems_of(value=value, reason="x")


def test_parse_rule_reports_every_problem_at_once() -> None:
    message = problems_of(
        value="+86x*",
        list="block",
        action="allow",
        treatment="music",
        hotlines="sales",
        windows="someday",
        expires="2020-01-01",
        mode="loud",
        reason="a\tb",
        colour="red",
    )
    for part in [
        "unknown field(s): colour",
        "'+86x' is not a number prefix",
        "blocklist rules have action block, challenge or analysis",
        "treatment 'music'",
        "hotline 'sales' is not configured",
        "days 'someday'",
        "expires is in the past",
        "mode 'loud'",
        "reason must be one line",
    ]:
        assert part in message, part
    assert message.count("; ") == 8


def test_parse_rule_without_a_value_still_reports_the_other_problems() -> None:
    message = problems_of(action="drop", colour="red")
    for part in ["unknown field(s): colour", "value is required", "action 'drop'", "reason is"]:
        assert part in message, part


def test_parse_rule_accepts_any_hotline_name_when_none_are_configured() -> None:
    rule = parse_rule(
        {"value": "13812341234", "reason": "x", "hotlines": ["sales"]},
        dataclasses.replace(CTX, hotlines=frozenset()),
    )
    assert rule.hotlines == ("sales",)


def test_parse_rule_hotline_and_window_lists_drop_empty_items() -> None:
    rule = parse(value="13812341234", hotlines=" ;service;; ", windows="sat,sun;")
    assert rule.hotlines == ("service",)
    assert rule.windows == (Window(days=frozenset({6, 7})),)


@pytest.mark.parametrize(
    ("value", "match", "stored"),
    [
        ("withheld", Match.ANONYMOUS, "withheld"),
        ("any", Match.ANONYMOUS, "any"),
        ("anonymous", Match.ANONYMOUS, "any"),
        ("Private", Match.ANONYMOUS, "withheld"),
        ("010*", Match.PREFIX, "+8610"),
        ("13812341234..13812341299", Match.RANGE, "+8613812341234..+8613812341299"),
    ],
)
def test_parse_rule_infers_the_match(value: str, match: Match, stored: str) -> None:
    rule = parse(value=value)
    assert (rule.match, rule.value) == (match, stored)
    assert rule.index == index_values(match, stored)


def test_with_id_and_check_ids() -> None:
    assert with_id(make_rule(id=""), "r42").id == "r42"
    assert check_ids(["r1", "r123456789012345678"]) == ["r1", "r123456789012345678"]
    for bad in ["1", "r", "rx", "r1 ", "R1", "r1234567890123456789", "r1;r2"]:
        with pytest.raises(ValueError, match="expected r<digits>"):
            check_ids(["r1", bad])


# --- Rule -------------------------------------------------------------------------------------

RULES = [
    make_rule(),
    make_rule(
        id="r2",
        match=Match.RANGE,
        value="+861012345600..+861012345699",
        treatment=Treatment.LINEFAULT,
        hotlines=("service", "complaints"),
        windows=(Window.parse("fri 22:00-06:00"), Window(learned=True)),
        expires_at=NOW + 86400,
        mode=Mode.SHADOW,
        origin=Origin.AUTO,
    ),
    make_rule(id="r3", match=Match.PREFIX, value="+86105", action=Verdict.CHALLENGE),
    make_rule(id="r4", match=Match.ANONYMOUS, value="withheld", action=Verdict.ANALYSIS),
    make_rule(id="r5", list=RuleList.ALLOW, action=Verdict.ALLOW, origin=Origin.IMPORT),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_dict_and_json_round_trip(rule: Rule) -> None:
    assert Rule.from_dict(rule.to_dict()) == rule
    assert Rule.from_dict(rule.to_dict()).index == rule.index
    assert Rule.from_json(rule.to_json()) == rule
    assert Rule.from_json(rule.to_json().encode()) == rule
    assert json.loads(rule.to_json()) == rule.to_dict()


def test_rule_to_dict_leaves_defaults_out() -> None:
    data = make_rule().to_dict()
    assert data == {
        "id": "r1",
        "list": "block",
        "match": "number",
        "value": MOBILE,
        "action": "block",
        "reason": "threatened an agent",
        "created_by": "alice",
        "created_at": NOW,
        "origin": "admin",
        "mode": "enforce",
    }
    full = RULES[1].to_dict()
    assert full["treatment"] == "linefault"
    assert full["hotlines"] == ["service", "complaints"]
    assert full["windows"] == ["fri 22:00-06:00", "learned"]
    assert full["expires_at"] == NOW + 86400


def test_rule_active_scope_and_windows() -> None:
    rule = make_rule(expires_at=NOW + 10, hotlines=("service",), windows=(Window.parse("sat"),))
    assert rule.active(NOW + 9.9) and not rule.active(NOW + 10)
    assert make_rule().active(1e12)
    assert rule.applies_to("service") and not rule.applies_to("complaints")
    assert make_rule().applies_to("anything")
    assert rule.in_window(SAT, frozenset()) and not rule.in_window(FRI, frozenset())
    assert make_rule().in_window(FRI, frozenset())


def test_rule_covers() -> None:
    rule = make_rule(match=Match.RANGE, value="+861012345600..+861012345699")
    assert rule.covers("+861012345600") and rule.covers("+861012345699")
    assert not rule.covers("+861012345700")
    assert not rule.covers("+8610123456001")  # the index prefix covers it, the range does not
    assert not rule.covers("+86101234560")
    assert make_rule(match=Match.PREFIX, value="+86").covers("+1")  # only ranges check


def test_describe_masks_numbers() -> None:
    number = describe(make_rule())
    assert number == f"r1 block number {mask(MOBILE)} block"
    assert MOBILE not in number
    ranged = describe(RULES[1])
    assert (
        ranged
        == f"r2 block range {mask('+861012345600')}..{mask('+861012345699')} block/linefault shadow"
    )
    assert "+861012345600" not in ranged and "+861012345699" not in ranged
    assert describe(RULES[2]) == "r3 block prefix +86105 challenge"
    assert describe(RULES[3]) == "r4 block anonymous withheld analysis"
    assert describe(RULES[4]) == f"r5 allow number {mask(MOBILE)} allow"


# --- parse_import -----------------------------------------------------------------------------


def test_import_csv() -> None:
    text = (
        "id,value,reason,list,hotlines,windows,created_by,created_at,origin\n"
        "r9,13812341234,spam,,service,,mallory,2020-01-01,admin\n"
        'r10,+86105*,"a bank, of phones",allow,,"mon-fri 09:00-18:00;learned",,,\n'
    )
    first, second = parse_import(text, "csv", CTX)
    assert first.value == MOBILE
    assert first.hotlines == ("service",)
    assert (first.id, first.created_by, first.created_at) == ("", "alice", NOW)  # file's ignored
    assert first.origin is Origin.IMPORT
    assert second.list is RuleList.ALLOW
    assert second.match is Match.PREFIX
    assert second.reason == "a bank, of phones"
    assert second.windows == (Window.parse("mon-fri 09:00-18:00"), Window(learned=True))


def test_import_csv_short_rows_and_crlf() -> None:
    text = "value,reason,mode\r\n13812341234,spam\r\n+86105*,bank,shadow\r\n"
    first, second = parse_import(text, "csv", CTX)
    assert first.mode is Mode.ENFORCE
    assert second.mode is Mode.SHADOW


def test_import_csv_with_bad_lines_names_each_and_imports_nothing() -> None:
    text = (
        "value,reason,action\n"
        "13812341234,spam,\n"  # line 2: fine
        "13812341235,,\n"  # line 3: no reason
        "+86105*,bank,block\n"  # line 4: fine
        "not-a-number,x,\n"  # line 5
        "13812341236,x,drop\n"  # line 6
        "13812341237,x,block,extra\n"  # line 7: a cell too many
    )
    with pytest.raises(ImportFormatError) as info:
        parse_import(text, "csv", CTX)
    problems = info.value.problems
    assert [n for n, _ in problems] == [3, 5, 6, 7]
    messages = dict(problems)
    assert "reason is required" in messages[3]
    assert "not a phone number" in messages[5]
    assert "action 'drop'" in messages[6]
    assert messages[7] == "more cells than header columns"
    assert "4 bad line(s), nothing imported: line 3:" in str(info.value)


def test_import_csv_line_numbers_count_quoted_line_breaks() -> None:
    text = 'value,reason\n13812341234,"two\nlines"\n13812341235,\n'
    with pytest.raises(ImportFormatError) as info:
        parse_import(text, "csv", CTX)
    assert [n for n, _ in info.value.problems] == [3, 4]
    assert "reason must be one line" in info.value.problems[0][1]


def test_import_stops_at_the_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_module, "MAX_IMPORT_ROWS", 2)
    assert len(parse_import("value,reason\n13812341234,a\n13812341235,b\n", "csv", CTX)) == 2
    text = "value,reason\n13812341234,a\n13812341235,\n13812341236,c\n13812341237,\n"
    with pytest.raises(ImportFormatError) as info:
        parse_import(text, "csv", CTX)
    assert [n for n, _ in info.value.problems] == [3, 4]
    assert info.value.problems[1][1] == "more than 2 rows; split the file"


def test_import_csv_needs_a_value_column() -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_import("number,reason\n13812341234,spam\n", "csv", CTX)
    assert info.value.problems == [(1, "the header must name a 'value' column")]


def test_import_csv_unknown_column() -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_import("value,reason,colour\n13812341234,spam,red\n", "csv", CTX)
    assert info.value.problems == [(2, "unknown field(s): colour")]


def test_import_csv_bad_quoting() -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_import('value,reason\n13812341234,"spam"x\n', "csv", CTX)
    assert info.value.problems[-1][0] == 0
    assert info.value.problems[-1][1].startswith("not CSV")


@pytest.mark.parametrize(
    ("text", "fmt"),
    [("", "csv"), ("value,reason\n", "csv"), ("", "json"), ("[]", "json"), ("\n\n", "json")],
)
def test_import_without_rules(text: str, fmt: str) -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_import(text, fmt, CTX)
    assert info.value.problems == [(0, "no rules in the file")]


def test_import_unknown_format() -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_import("value,reason\n13812341234,spam\n", "xlsx", CTX)
    assert info.value.problems == [(0, "unknown format 'xlsx': csv or json")]


def test_import_json_array() -> None:
    text = json.dumps(
        [
            {"value": "13812341234", "reason": "spam", "hotlines": ["service"]},
            {"value": "withheld", "reason": "no caller id", "action": "challenge", "id": "r7"},
        ],
        indent=2,
    )
    first, second = parse_import(text, "json", CTX)
    assert first.hotlines == ("service",)
    assert (second.match, second.action, second.id) == (Match.ANONYMOUS, Verdict.CHALLENGE, "")
    assert {first.origin, second.origin} == {Origin.IMPORT}


def test_import_json_array_with_bad_entries() -> None:
    text = json.dumps(
        [
            {"value": "13812341234", "reason": "spam"},
            ["13812341234", "spam"],
            {"value": "13812341234"},
            {"value": "13812341234", "reason": "spam", "expires_at": "yesterday"},
        ]
    )
    with pytest.raises(ImportFormatError) as info:
        parse_import(text, "json", CTX)
    problems = info.value.problems
    assert [n for n, _ in problems] == [2, 3, 4]  # entries, counted from 1
    assert problems[0][1] == "each entry must be an object"
    assert "reason is required" in problems[1][1]
    assert "expires 'yesterday'" in problems[2][1]


def test_import_json_array_that_is_not_json() -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_import('[\n{"value": "13812341234",\n "reason": }\n]', "json", CTX)
    ((line, message),) = info.value.problems
    assert line == 3
    assert message.startswith("not JSON")


def test_import_json_lines() -> None:
    text = (
        '{"value": "13812341234", "reason": "spam"}\n'
        "\n"
        '{"value": "+86105*", "reason": "bank", "mode": "shadow"}\n'
    )
    first, second = parse_import(text, "json", CTX)
    assert first.value == MOBILE
    assert second.mode is Mode.SHADOW


def test_import_json_lines_with_bad_lines_names_each() -> None:
    text = (
        '{"value": "13812341234", "reason": "spam"}\n'  # 1
        '{"value": "13812341234", "reason": \n'  # 2: not JSON
        "\n"  # 3: blank, skipped
        '"13812341234"\n'  # 4: not an object
        '{"value": "13812341234", "reason": "spam", "list": "grey"}\n'  # 5
        '{"value": "13812341234", "reason": "spam"}\n'  # 6
    )
    with pytest.raises(ImportFormatError) as info:
        parse_import(text, "json", CTX)
    problems = info.value.problems
    assert [n for n, _ in problems] == [2, 4, 5]
    assert problems[0][1].startswith("not JSON")
    assert problems[1][1] == "each entry must be an object"
    assert "list 'grey'" in problems[2][1]


# --- exports ----------------------------------------------------------------------------------

HOSTILE_RULES = [
    make_rule(id="r1", reason='=HYPERLINK("http://evil.example","click")'),
    make_rule(id="r2", reason="+1 for blocking"),
    make_rule(id="r3", reason="-2+3 cmd|' /C calc'!A0"),
    make_rule(id="r4", reason="@SUM(A1:A2)", hotlines=("-x",)),
    make_rule(id="r5", reason="'quoted' in the original"),
    make_rule(id="r6", reason="'=already guarded"),
    make_rule(id="r7", reason="'"),
]


def _cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_export_csv_header_and_cells() -> None:
    text = export_csv([RULES[1]])
    assert text.splitlines()[0] == ",".join(FIELDS)
    (row,) = _cells(text)
    assert row["id"] == "r2"
    assert row["value"] == "'+861012345600..+861012345699"
    assert row["hotlines"] == "service;complaints"
    assert row["windows"] == "fri 22:00-06:00;learned"
    assert row["treatment"] == "linefault"
    assert row["mode"] == "shadow"
    assert row["origin"] == "auto"
    assert datetime.fromisoformat(row["expires"]).timestamp() == NOW + 86400
    assert datetime.fromisoformat(row["created_at"]).timestamp() == NOW


def test_export_csv_is_formula_safe() -> None:
    rows = _cells(export_csv([*RULES, *HOSTILE_RULES]))
    assert len(rows) == len(RULES) + len(HOSTILE_RULES)
    for row in rows:
        for column, cell in row.items():
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), (column, cell)
    by_id = {row["id"]: row for row in rows}
    assert by_id["r1"]["reason"].startswith("'=HYPERLINK")
    assert by_id["r1"]["value"] == "'" + MOBILE
    assert by_id["r4"]["reason"] == "'@SUM(A1:A2)"
    assert by_id["r4"]["hotlines"] == "'-x"


def _essence(rule: Rule) -> tuple[object, ...]:
    """What an import keeps of an exported rule (ids, creators and origin are the importer's)."""
    return (
        rule.list,
        rule.match,
        rule.value,
        rule.action,
        rule.treatment,
        rule.hotlines,
        rule.windows,
        rule.expires_at,
        rule.mode,
        rule.reason,
        rule.index,
    )


def test_export_csv_imports_back() -> None:
    ctx = dataclasses.replace(CTX, hotlines=frozenset({"service", "complaints", "-x"}))
    rules = [*RULES, *HOSTILE_RULES]
    imported = parse_import(export_csv(rules), "csv", ctx)
    assert [_essence(r) for r in imported] == [_essence(r) for r in rules]
    assert all(r.origin is Origin.IMPORT and r.id == "" for r in imported)


def test_export_json_imports_back() -> None:
    ctx = dataclasses.replace(CTX, hotlines=frozenset({"service", "complaints", "-x"}))
    rules = [*RULES, *HOSTILE_RULES, make_rule(id="r8", expires_at=NOW + 0.25)]
    text = export_json(rules)
    assert len(text.splitlines()) == len(rules)
    assert [Rule.from_json(line) for line in text.splitlines()] == rules
    imported = parse_import(text, "json", ctx)
    assert [_essence(r) for r in imported] == [_essence(r) for r in rules]


def test_export_of_nothing() -> None:
    assert export_csv([]) == ",".join(FIELDS) + "\n"
    assert export_json([]) == ""


REASONS = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
GUARDED_REASONS = st.builds(
    str.__add__, st.sampled_from(["", "'", "''", "=", "+", "-", "@", "'="]), REASONS
)


@settings(max_examples=60)
@given(st.lists(GUARDED_REASONS, min_size=1, max_size=4))
def test_any_reason_survives_a_csv_round_trip(reasons: list[str]) -> None:
    rules = [make_rule(id=f"r{n}", reason=reason) for n, reason in enumerate(reasons, 1)]
    text = export_csv(rules)
    for row in _cells(text):
        assert row["reason"][:1] not in ("=", "+", "-", "@")
    assert [r.reason for r in parse_import(text, "csv", CTX)] == reasons


@settings(max_examples=60)
@given(st.lists(GUARDED_REASONS, min_size=1, max_size=4))
def test_any_reason_survives_a_json_round_trip(reasons: list[str]) -> None:
    rules = [make_rule(id=f"r{n}", reason=reason) for n, reason in enumerate(reasons, 1)]
    assert [r.reason for r in parse_import(export_json(rules), "json", CTX)] == reasons
