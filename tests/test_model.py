"""Tests for screener.model: presentation mapping and the flag's JSON form."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from screener.model import CallerId, Flag, FlagSource, Presentation
from screener.number import normalise


@pytest.mark.parametrize(
    ("pres", "number", "expected"),
    [
        ("allowed_not_screened", "13812341234", Presentation.ALLOWED),
        ("allowed_passed_screen", "13812341234", Presentation.ALLOWED),
        ("allowed_failed_screen", "13812341234", Presentation.ALLOWED),
        ("allowed", "13812341234", Presentation.ALLOWED),
        ("ALLOWED_NOT_SCREENED ", "13812341234", Presentation.ALLOWED),
        ("", "13812341234", Presentation.ALLOWED),
        ("prohib_not_screened", "13812341234", Presentation.WITHHELD),
        ("prohib_passed_screen", "13812341234", Presentation.WITHHELD),
        ("prohib", "13812341234", Presentation.WITHHELD),
        ("prohib", "", Presentation.WITHHELD),  # withheld wins over a missing number
        (" Prohib ", "anonymous", Presentation.WITHHELD),
        ("unavailable", "13812341234", Presentation.UNAVAILABLE),
        ("allowed_not_screened", "anonymous", Presentation.UNAVAILABLE),
        ("allowed_not_screened", "Anonymous", Presentation.UNAVAILABLE),
        ("allowed_not_screened", "unknown", Presentation.UNAVAILABLE),
        ("allowed_not_screened", "", Presentation.UNAVAILABLE),
        ("allowed_not_screened", "  ", Presentation.UNAVAILABLE),
    ],
)
def test_presentation_from_asterisk(pres: str, number: str, expected: Presentation) -> None:
    assert Presentation.from_asterisk(pres, number) is expected


def make_flag(raw: str = "13812341234", raw_name: str = "Zhang San", **changes: object) -> Flag:
    flag = Flag(
        flag_id="1700000000.1",
        caller=CallerId(
            raw=raw,
            raw_name=raw_name,
            presentation=Presentation.ALLOWED,
            info=normalise(raw, "CN"),
        ),
        called="4008001234",
        hotline="service",
        queue="hotline",
        agent="PJSIP/agent1",
        agent_channel="PJSIP/agent1-00000002",
        caller_channel="PJSIP/trunk-00000001",
        uniqueid="1700000000.1",
        linkedid="1700000000.1",
        source=FlagSource.FEATURE,
        at=datetime(2024, 3, 6, 14, 30, 5, 123456, tzinfo=ZoneInfo("Asia/Shanghai")),
        tz="Asia/Shanghai",
    )
    return dataclasses.replace(flag, **changes)  # type: ignore[arg-type]


def test_flag_json_round_trip() -> None:
    flag = make_flag()
    back = Flag.from_json(flag.to_json())
    assert back == flag
    assert back.at.utcoffset() == timedelta(hours=8)
    assert back.caller.presentation is Presentation.ALLOWED
    assert back.source is FlagSource.FEATURE


def test_flag_json_is_ascii_sorted_and_compact() -> None:
    text = make_flag(raw_name="张三 \U0001f600").to_json()
    assert text.isascii()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert ": " not in text
    assert data["hour"] == 14
    assert data["weekday"] == 3
    assert data["caller"]["presentation"] == "allowed"
    assert data["source"] == "feature"
    assert data["at"] == "2024-03-06T14:30:05.123456+08:00"


HOSTILE = [
    "123\r\nAction: Originate\r\nChannel: Local/1@default\r\n\r\n",
    "\x00\x00\x00",
    "\U0001f4a9\U00010348 non-BMP",
    "\ud800 lone surrogate",
    '"}, "flag_id": "forged',
    "\\u0000\\n",
    "x" * 10_240,
    "%s%n{0}",
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_flag_round_trip_keeps_hostile_caller_id_intact(hostile: str) -> None:
    flag = make_flag(raw=hostile, raw_name=hostile)
    text = flag.to_json()
    assert "\r" not in text
    assert "\n" not in text
    assert "\x00" not in text
    back = Flag.from_json(text.encode("ascii"))
    assert back == flag
    assert back.caller.raw == hostile
    assert back.caller.raw_name == hostile
    assert back.flag_id == "1700000000.1"


@pytest.mark.parametrize(
    ("at", "hour", "weekday"),
    [
        (datetime(2024, 3, 4, 0, 0, tzinfo=UTC), 0, 1),  # a Monday
        (datetime(2024, 3, 10, 23, 59, tzinfo=UTC), 23, 7),  # a Sunday
        # 23:30 UTC on Sunday is already 07:30 on Monday in Shanghai: local time counts
        (datetime(2024, 3, 10, 23, 30, tzinfo=UTC).astimezone(ZoneInfo("Asia/Shanghai")), 7, 1),
        (datetime(2024, 3, 9, 1, 0, tzinfo=timezone(timedelta(hours=-5))), 1, 6),
    ],
)
def test_hour_and_weekday_come_from_the_aware_datetime(
    at: datetime, hour: int, weekday: int
) -> None:
    flag = make_flag(at=at)
    assert (flag.hour, flag.weekday) == (hour, weekday)
    data = flag.to_dict()
    assert (data["hour"], data["weekday"]) == (hour, weekday)


def test_from_dict_defaults_tz_to_utc() -> None:
    data = make_flag().to_dict()
    del data["tz"]
    assert Flag.from_dict(data).tz == "UTC"


def test_caller_id_exposes_only_safe_forms() -> None:
    flag = make_flag(raw="123\r\nAction: Originate")
    assert flag.caller.key.startswith("h")
    assert flag.caller.masked == flag.caller.key[:9]
    genuine = make_flag()
    assert genuine.caller.key == "+8613812341234"
    assert genuine.caller.masked == "+86138****1234"


@pytest.mark.parametrize(
    "text",
    ["", "null", "[]", '"x"', "{}", '{"caller": {}}', b"\xff\xfe"],
)
def test_from_json_rejects_garbage_with_value_key_or_type_error(text: str | bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        Flag.from_json(text)


def test_value_types_are_frozen() -> None:
    flag = make_flag()
    with pytest.raises(dataclasses.FrozenInstanceError):
        flag.agent = "PJSIP/agent2"  # type: ignore[misc]
