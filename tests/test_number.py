"""Tests for screener.number: caller numbers are attacker-controlled text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screener.keys import safe_part
from screener.number import ANONYMOUS, is_dialable, mask, normalise

KEY_CHARS = re.compile(r"[A-Za-z0-9+._/@-]+")
HASHED = re.compile(r"h[0-9a-f]{24}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- genuine numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164", "kind"),
    [
        ("13812341234", "+8613812341234", "mobile"),  # CN mobile, national
        ("+8613812341234", "+8613812341234", "mobile"),  # CN mobile, E.164
        ("008613812341234", "+8613812341234", "mobile"),  # CN international prefix
        (" 13812341234 ", "+8613812341234", "mobile"),  # padding is not identity
        ("01088886666", "+861088886666", "fixed_line"),  # Beijing fixed, national
        ("+861088886666", "+861088886666", "fixed_line"),
        ("02025550123", "+862025550123", "fixed_line"),  # Guangzhou
        ("+12025550123", "+12025550123", "fixed_or_mobile"),  # US in E.164
    ],
)
def test_normalise_cn_default_region(raw: str, e164: str, kind: str) -> None:
    info = normalise(raw, "CN")
    assert info.key == info.e164 == e164
    assert info.valid
    assert info.kind == kind
    assert info.masked == mask(e164)
    assert info.masked != e164


def test_normalise_keeps_the_library_metadata() -> None:
    info = normalise("13812341234", "CN")
    assert info.region == "CN"
    assert info.carrier == "China Mobile"
    assert info.area  # a city and province, in English
    fixed = normalise("01088886666", "CN")
    assert fixed.area == "Beijing"
    assert fixed.carrier == ""


def test_normalise_national_number_follows_the_default_region() -> None:
    us = normalise("2025550123", "US")
    assert us.e164 == "+12025550123"
    assert us.region == "US"
    assert normalise("2025550123", "CN").e164 == "+862025550123"
    assert normalise("2025550123", "us") == us  # region case does not matter


def test_same_number_in_two_spellings_shares_one_key() -> None:
    spellings = ["13812341234", "+8613812341234", "008613812341234"]
    assert len({normalise(s, "CN").key for s in spellings}) == 1


def test_a_short_service_number_parses_but_is_invalid() -> None:
    info = normalise("110", "CN")
    assert not info.valid
    assert info.kind == "invalid"
    assert info.region == info.area == info.carrier == ""
    assert "110" not in info.masked
    safe_part(info.key)


@pytest.mark.parametrize(
    "raw", ["", " ", "anonymous", "Anonymous", "UNKNOWN", "unavailable", "private", "Restricted"]
)
def test_anonymous_words(raw: str) -> None:
    info = normalise(raw, "CN")
    assert info.key == info.kind == info.masked == ANONYMOUS
    assert info.e164 == ""
    assert not info.valid


# --- hostile strings --------------------------------------------------------------------------

HOSTILE = [
    "123\r\nAction: Originate\r\nChannel: Local/1@default\r\n\r\n",
    "Event: UserEvent\r\nUserEvent: ScreenerFlag",
    "sip:13812341234@evil.example",
    "{screener}:caller:+8613812341234",
    "*9",
    "*",
    "+",
    "13812341234*",
    "010-8888-6666",
    "1" * 41,
    "9" * 10_240,  # 10 kB
    "\ud800\udfff\ud83d",  # lone surrogates (invalid UTF-8 when encoded)
    "%s%n{0}",
    "%s%s%s%s%n",
    "{0.__class__}",
    "\x00",
    "13812341234\x00",
    "١٢٣٤٥٦٧٨٩٠",  # Arabic-Indic digits are digits to str.isdigit but not dialable
    "\u202e4321",  # right-to-left override
    "'; DROP TABLE flags; --",
    "../../etc/passwd",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_string_gets_a_hashed_key(raw: str) -> None:
    info = normalise(raw, "CN")
    assert HASHED.fullmatch(info.key), info.key
    assert KEY_CHARS.fullmatch(info.key)
    assert safe_part(info.key) == info.key
    assert info.kind == "invalid"
    assert not info.valid
    assert info.e164 == info.region == info.area == info.carrier == ""
    assert info.masked == info.key[:9]


def test_two_different_hostile_strings_never_share_a_key() -> None:
    keys = {normalise(raw, "CN").key for raw in HOSTILE}
    assert len(keys) == len(HOSTILE)


def test_hostile_strings_that_differ_only_in_padding_or_control_chars_differ() -> None:
    # The hash is over the raw value, so a lookalike cannot take over a genuine caller's record.
    variants = ["*9", " *9", "*9 ", "*9\r", "*9\n", "*9\x00"]
    assert len({normalise(v, "CN").key for v in variants}) == len(variants)


def test_hostile_key_never_equals_a_genuine_key() -> None:
    genuine = normalise("13812341234", "CN").key
    assert normalise("13812341234\r\nAction: Logoff", "CN").key != genuine
    assert normalise("sip:13812341234", "CN").key != genuine
    assert normalise("13812341234\x00", "CN").key != genuine


# str.strip() also removes CR, LF, VT, FF and the \x1c-\x1f separators, so a caller ID that
# carries an injection attempt around a genuine number is filed as that (valid) number, and a
# lone CR as "anonymous": the attack disappears from the statistics and the docstring's promise
# ("anything that is not a dialable number becomes kind=invalid with a hashed key") is broken.
CONTROL_WRAPPED = [
    "13812341234\n",
    "13812341234\r\n",
    "\r\n13812341234",
    "13812341234\x0b",
    "\x1c13812341234",
    "\r",
    "\n",
    "anonymous\r\n",
]


@pytest.mark.parametrize("raw", CONTROL_WRAPPED, ids=range(len(CONTROL_WRAPPED)))
def test_control_characters_around_a_number_are_hostile(raw: str) -> None:
    info = normalise(raw, "CN")
    assert HASHED.fullmatch(info.key)
    assert info.kind == "invalid"


def test_normalise_is_deterministic() -> None:
    assert normalise("%s%n{0}", "CN") == normalise("%s%n{0}", "CN")
    normalise.cache_clear()
    assert normalise("%s%n{0}", "CN").key == normalise("%s%n{0}", "CN").key


# --- mask -------------------------------------------------------------------------------------


def test_mask_spec_example() -> None:
    assert mask("+8613812341234") == "+86138****1234"


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+8613812341234", "+86138****1234"),
        ("+861088886666", "+86108***6666"),
        ("+12025550123", "+1202***0123"),
        ("+8695555", "+86***55"),
        ("1234567", "12***67"),
        ("", ""),
    ],
)
def test_mask_examples(number: str, masked: str) -> None:
    assert mask(number) == masked
    assert len(mask(number)) == len(number)


@pytest.mark.parametrize("n", range(1, 20))
def test_mask_never_shows_a_number_whole(n: int) -> None:
    number = "+" + "123456789012345678"[: n - 1] if n > 1 else "1"
    masked = mask(number)
    assert len(masked) == len(number)
    assert masked.count("*") >= min(3, n)
    assert masked != number


@given(st.text(alphabet="+0123456789", max_size=40))
def test_mask_hides_at_least_three_characters(number: str) -> None:
    masked = mask(number)
    assert len(masked) == len(number)
    hidden = sum(1 for a, b in zip(number, masked, strict=True) if a != b)
    assert masked.count("*") >= min(3, len(number))
    assert hidden == masked.count("*")


# --- properties over any text -----------------------------------------------------------------


@given(st.text(max_size=200))
def test_any_text_gives_a_safe_key_and_a_printable_mask(text: str) -> None:
    info = normalise(text, "CN")
    assert safe_part(info.key) == info.key
    assert not CONTROL.search(info.masked)
    assert info.masked.isascii()


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60), st.sampled_from(["CN", "US"]))
def test_any_text_never_raises_in_any_region(text: str, region: str) -> None:
    info = normalise(text, region)
    assert safe_part(info.key) == info.key
    assert len(info.key) <= 128


@given(st.text(alphabet="0123456789+", min_size=1, max_size=40))
def test_digit_strings_are_e164_or_hashed(text: str) -> None:
    info = normalise(text, "CN")
    assert re.fullmatch(r"\+[0-9]{1,40}", info.key) or HASHED.fullmatch(info.key)


@given(st.text(max_size=50), st.text(max_size=50))
def test_distinct_invalid_strings_have_distinct_keys(a: str, b: str) -> None:
    ka, kb = normalise(a, "CN"), normalise(b, "CN")
    if a != b and ka.kind == kb.kind == "invalid" and HASHED.fullmatch(ka.key):
        assert ka.key != kb.key


# --- is_dialable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dialable"),
    [
        ("4008001234", True),
        ("+86*9#", True),
        ("1" * 32, True),
        ("1" * 33, False),
        ("", False),
        ("12 34", False),
        ("1\r\n", False),
    ],
)
def test_is_dialable(text: str, dialable: bool) -> None:
    assert is_dialable(text) is dialable
