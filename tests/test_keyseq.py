"""Tests for screener.keyseq: the flag key in a stream of DTMF digits."""

from __future__ import annotations

import sys

import pytest

from screener.keyseq import KeySequenceDetector

A = "PJSIP/agent1-00000001"
B = "PJSIP/agent2-00000002"


def feed_all(d: KeySequenceDetector, events: list[tuple[str, str, float]]) -> list[bool]:
    return [d.feed(channel, digit, t) for channel, digit, t in events]


def test_detects_the_sequence() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    assert feed_all(d, [(A, "*", 10.0), (A, "9", 10.4)]) == [False, True]


def test_detection_resets_the_channel() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    feed_all(d, [(A, "*", 10.0), (A, "9", 10.4)])
    assert len(d) == 0
    assert d.feed(A, "9", 10.5) is False  # a second 9 alone is not a second flag


def test_sequence_found_after_noise() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    digits = [(A, c, 10.0 + i * 0.1) for i, c in enumerate("1234**9")]
    assert feed_all(d, digits) == [False] * 6 + [True]


def test_longer_key() -> None:
    d = KeySequenceDetector("#*91", timeout=1.0)
    results = feed_all(d, [(A, c, 1.0 + i * 0.5) for i, c in enumerate("##*91")])
    assert results == [False, False, False, False, True]


def test_single_digit_key() -> None:
    d = KeySequenceDetector("#", timeout=1.0)
    assert d.feed(A, "1", 1.0) is False
    assert d.feed(A, "#", 1.1) is True


def test_timeout_resets_the_sequence() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    assert d.feed(A, "*", 10.0) is False
    assert d.feed(A, "9", 11.6) is False  # 1.6 s later: a new sequence
    assert d.feed(A, "*", 12.0) is False
    assert d.feed(A, "9", 13.5) is True  # exactly the timeout still counts


def test_channels_are_independent_when_interleaved() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    events = [(A, "*", 1.0), (B, "*", 1.1), (B, "1", 1.2), (A, "9", 1.3), (B, "9", 1.4)]
    assert feed_all(d, events) == [False, False, False, True, False]
    assert len(d) == 1  # B is still in progress


def test_one_channels_digits_never_complete_anothers_sequence() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    assert feed_all(d, [(A, "*", 1.0), (B, "9", 1.1)]) == [False, False]


def test_partial_then_complete() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    assert d.feed(A, "*", 1.0) is False
    assert len(d) == 1
    assert d.feed(A, "*", 1.2) is False  # still partial
    assert d.feed(A, "9", 1.4) is True


def test_only_the_first_character_of_a_digit_counts() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    assert d.feed(A, "*9", 1.0) is False  # one event cannot carry a whole sequence
    assert d.feed(A, "", 1.1) is False


@pytest.mark.timeout(30)
def test_memory_is_bounded_when_fed_20k_channels() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    peak = 0
    for i in range(20_000):
        d.feed(f"PJSIP/spam-{i:08x}", "*", 100.0 + i * 1e-6)  # all fresh: none stale
        peak = max(peak, len(d))
    assert peak <= 10_000
    assert 0 < len(d) <= 10_000
    assert sys.getsizeof(d._channels) < 2_000_000


def test_eviction_prefers_stale_channels() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    d.feed(A, "*", 0.0)  # will be stale
    for i in range(9_999):
        d.feed(f"PJSIP/spam-{i:08x}", "*", 10.0)
    assert len(d) == 10_000
    # B arrives at 10.5: A (10.5 s old) is evicted, the fresh ones are kept
    assert d.feed(B, "*", 10.5) is False
    assert len(d) == 10_000
    assert d.feed(A, "9", 10.6) is False  # A's "*" was forgotten
    assert d.feed(B, "9", 10.7) is True


def test_a_live_sequence_survives_a_flood_when_it_is_not_evicted() -> None:
    d = KeySequenceDetector("*9", timeout=1.5)
    for i in range(5_000):
        d.feed(f"PJSIP/spam-{i:08x}", "*", 10.0)
    d.feed(A, "*", 10.1)
    for i in range(5_000, 12_000):
        d.feed(f"PJSIP/spam-{i:08x}", "*", 10.2)
    # A was inserted after the first half, so the half-eviction kept it
    assert d.feed(A, "9", 10.3) is True
