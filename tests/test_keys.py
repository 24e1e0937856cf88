"""Tests for screener.keys: the one place Redis keys are built."""

from __future__ import annotations

import pytest

from screener.keys import DAY, DEFAULT_RETENTION_DAYS, KeySpace, safe_part

CALLER = "+8613812341234"


def every_key(ks: KeySpace) -> list[str]:
    return [
        ks.flag("1700000000.1"),
        ks.flags,
        ks.caller(CALLER),
        ks.caller_agents(CALLER),
        ks.caller_hours(CALLER),
        ks.caller_weekdays(CALLER),
        ks.callers,
        ks.hours,
        ks.weekdays,
        ks.week,
        ks.hotlines,
    ]


@pytest.mark.parametrize("prefix", ["screener", "centre-2", "a"])
def test_every_key_starts_with_the_hash_tag(prefix: str) -> None:
    ks = KeySpace(prefix)
    keys = every_key(ks)
    for key in keys:
        assert key.startswith("{" + prefix + "}:")
        # one hash tag only: Redis Cluster hashes the first {...}
        assert key.count("{") == key.count("}") == 1
    assert len(set(keys)) == len(keys)


def test_default_prefix_and_key_shapes() -> None:
    ks = KeySpace()
    assert ks.root == "{screener}"
    assert ks.flag("1700000000.1") == "{screener}:flag:1700000000.1"
    assert ks.caller(CALLER) == "{screener}:caller:+8613812341234"
    assert ks.caller_agents(CALLER) == "{screener}:caller:+8613812341234:agents"
    assert ks.week == "{screener}:pattern:week"


def test_deployments_do_not_share_keys() -> None:
    assert set(every_key(KeySpace("a"))).isdisjoint(every_key(KeySpace("b")))


@pytest.mark.parametrize(
    "value",
    ["+8613812341234", "anonymous", "h0123456789abcdef01234567", "1700000000.1", "a/b@c-d_e", "x"],
)
def test_safe_part_accepts(value: str) -> None:
    assert safe_part(value) == value


def test_safe_part_accepts_128_characters() -> None:
    assert safe_part("a" * 128) == "a" * 128


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 129,
        "a\r",
        "a\nb",
        "\r\n",
        "a b",
        " ",
        "{screener}",
        "a{b",
        "a}b",
        "a:b",  # would let one component look like two
        "a*",
        "a\x00",
        "é",
        "1\u2028",
    ],
)
def test_safe_part_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="unsafe key component"):
        safe_part(value)


def test_unsafe_ids_never_reach_a_key() -> None:
    ks = KeySpace()
    with pytest.raises(ValueError):
        ks.flag("1\r\nFLUSHALL")
    with pytest.raises(ValueError):
        ks.caller("+86 138")
    with pytest.raises(ValueError):
        _ = KeySpace("bad prefix").flags


def test_unsafe_component_error_is_bounded() -> None:
    with pytest.raises(ValueError) as info:
        safe_part("x" * 10_000)
    assert len(str(info.value)) < 100


def test_ttl_constants() -> None:
    assert DAY == 86_400
    assert DEFAULT_RETENTION_DAYS == 400
