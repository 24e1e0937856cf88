"""Tests for screener.policy: the pure screening decision and learning from flags."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screener.model import Presentation
from screener.policy import (
    Call,
    Decision,
    Quorum,
    Treatments,
    applicable,
    auto_block_duration,
    decide,
    fail_open,
    high_risk_hours,
    human_duration,
    quorum,
)
from screener.rules import (
    Match,
    Mode,
    Rule,
    RuleList,
    Treatment,
    Verdict,
    Window,
    index_values,
    parse_duration,
)

NOW = 1_709_735_405.0  # 2024-03-06 14:30:05 UTC
LOCAL = datetime(2024, 3, 6, 14, 30)  # a Wednesday afternoon, the centre's wall clock
MOBILE = "+8613812341234"


def rule(
    value: str = MOBILE,
    *,
    id: str = "r1",
    match: Match | None = None,
    list: RuleList = RuleList.BLOCK,
    action: Verdict | None = None,
    created_at: float = NOW - 3600,
    **changes: Any,
) -> Rule:
    """A stored rule; the match kind is guessed from ``value`` (``..`` range, ``+`` number)."""
    if match is None:
        if ".." in value:
            match = Match.RANGE
        elif value.startswith("+"):
            match = Match.NUMBER
        else:
            match = Match.ANONYMOUS
    if action is None:
        action = Verdict.ALLOW if list is RuleList.ALLOW else Verdict.BLOCK
    return Rule(
        id=id,
        list=list,
        match=match,
        value=value,
        action=action,
        reason="test",
        created_by="alice",
        created_at=created_at,
        index=index_values(match, value),
        **changes,
    )


def prefix(value: str, **changes: Any) -> Rule:
    return rule(value, match=Match.PREFIX, **changes)


def call(
    e164: str = MOBILE,
    *,
    presentation: Presentation = Presentation.ALLOWED,
    hotline: str = "service",
    local: datetime = LOCAL,
    key: str | None = None,
) -> Call:
    return Call(
        key=key if key is not None else (e164 or "anonymous"),
        e164=e164,
        presentation=presentation,
        hotline=hotline,
        local=local,
    )


def verdict_of(rules: list[Rule], the_call: Call | None = None, **kwargs: Any) -> Decision:
    return decide(the_call or call(), rules, now=NOW, **kwargs)


def test_no_rule_allows() -> None:
    decision = verdict_of([])
    assert decision == Decision(Verdict.ALLOW, "no rule")
    assert decision.label == "no_rule"
    assert decision.treatment is None


def test_rules_for_other_numbers_do_not_match() -> None:
    rules = [
        rule("+8613812341235"),
        prefix("+86139"),
        rule("+8613812341200..+8613812341233", id="r3"),
        rule("withheld"),
        rule("any"),
    ]
    assert verdict_of(rules).verdict is Verdict.ALLOW
    assert verdict_of(rules).rule is None


def test_a_number_rule_blocks() -> None:
    decision = verdict_of([rule(id="r7")])
    assert decision.verdict is Verdict.BLOCK
    assert decision.rule is not None and decision.rule.id == "r7"
    assert decision.reason == "number rule r7"
    assert decision.label == "number"
    assert decision.treatment is Treatment.ANALYSIS
    assert decision.shadow == ()


# --- the allowlist always wins ----------------------------------------------------------------

BLOCKS = [
    rule(MOBILE, id="b1"),
    rule("+8613812341200..+8613812341299", id="b2"),
    prefix("+86138123412", id="b3"),
    rule(MOBILE, id="b4", action=Verdict.CHALLENGE),
]


@pytest.mark.parametrize(
    "allow",
    [
        prefix("+86", list=RuleList.ALLOW, id="a1"),
        rule(MOBILE, list=RuleList.ALLOW, id="a1", created_at=NOW - 10**6),
        rule("+8613800000000..+8613899999999", list=RuleList.ALLOW, id="a1"),
    ],
    ids=["short-prefix", "older-number", "wide-range"],
)
def test_allowlist_wins_over_every_block(allow: Rule) -> None:
    for order in itertools.permutations([*BLOCKS, allow]):
        decision = verdict_of(list(order))
        assert decision.verdict is Verdict.ALLOW
        assert decision.rule == allow
        assert decision.reason == "allowlisted by a1"
        assert decision.label == "allowlist"
        assert decision.treatment is None


def test_the_most_specific_allow_rule_is_named() -> None:
    allows = [
        prefix("+86", list=RuleList.ALLOW, id="a1"),
        rule(MOBILE, list=RuleList.ALLOW, id="a2", created_at=NOW - 10**6),
        prefix("+86138", list=RuleList.ALLOW, id="a3"),
    ]
    for order in itertools.permutations(allows):
        assert verdict_of(list(order)).reason == "allowlisted by a2"


def test_an_allow_rule_that_does_not_apply_does_not_win() -> None:
    allows = [
        prefix("+86", list=RuleList.ALLOW, id="a1", expires_at=NOW),
        prefix("+86", list=RuleList.ALLOW, id="a2", hotlines=("complaints",)),
        prefix("+86", list=RuleList.ALLOW, id="a3", windows=(Window.parse("sat,sun"),)),
        prefix("+86", list=RuleList.ALLOW, id="a4", mode=Mode.SHADOW),
        prefix("+1", list=RuleList.ALLOW, id="a5"),
    ]
    decision = verdict_of([*allows, rule(id="b1")])
    assert decision.verdict is Verdict.BLOCK
    assert decision.reason == "number rule b1"


# --- specificity ------------------------------------------------------------------------------

# from most to least specific, each one as harsh or harsher and newer than the one before it
LADDER = [
    rule(MOBILE, id="number", action=Verdict.CHALLENGE, created_at=NOW - 600),
    rule(
        "+8613812341230..+8613812341239",
        id="narrow-range",
        action=Verdict.CHALLENGE,
        created_at=NOW - 500,
    ),
    rule(
        "+8613812341200..+8613812341299",
        id="wide-range",
        action=Verdict.ANALYSIS,
        created_at=NOW - 400,
    ),
    prefix("+86138123", id="long-prefix", action=Verdict.ANALYSIS, created_at=NOW - 300),
    prefix("+8613", id="short-prefix", action=Verdict.BLOCK, created_at=NOW - 200),
    rule("withheld", id="anonymous", action=Verdict.BLOCK, created_at=NOW - 100),
]
WITHHELD_NUMBER = call(presentation=Presentation.WITHHELD)  # the network still passed the number


@pytest.mark.parametrize("top", range(len(LADDER)))
def test_the_most_specific_block_decides(top: int) -> None:
    rules = LADDER[top:]
    expected = rules[0]
    for order in itertools.permutations(rules[:4]):
        decision = verdict_of([*order, *rules[4:]], WITHHELD_NUMBER)
        assert decision.rule == expected, [r.id for r in order]
        assert decision.verdict is expected.action
        assert decision.label == str(expected.match)
    reversed_decision = verdict_of(rules[::-1], WITHHELD_NUMBER)
    assert reversed_decision.rule == expected


@pytest.mark.parametrize(
    ("actions", "winner"),
    [
        ((Verdict.BLOCK, Verdict.ANALYSIS, Verdict.CHALLENGE), Verdict.BLOCK),
        ((Verdict.CHALLENGE, Verdict.ANALYSIS), Verdict.ANALYSIS),
        ((Verdict.CHALLENGE, Verdict.BLOCK), Verdict.BLOCK),
    ],
)
def test_between_equals_the_harsher_action_decides(
    actions: tuple[Verdict, ...], winner: Verdict
) -> None:
    # the harsher rule is the oldest, so the newest-first tie-break cannot be what picks it
    rules = [
        prefix("+86138", id=f"r{n}", action=a, created_at=NOW - (1000 if a is winner else n))
        for n, a in enumerate(actions)
    ]
    for order in itertools.permutations(rules):
        assert verdict_of(list(order)).verdict is winner


def test_between_equal_rules_of_equal_severity_the_newest_decides() -> None:
    rules = [
        prefix("+86138", id="old", created_at=NOW - 100, treatment=Treatment.BUSY),
        prefix("+86138", id="new", created_at=NOW - 10, treatment=Treatment.REJECT),
        prefix("+86138", id="mid", created_at=NOW - 50, treatment=Treatment.LINEFAULT),
    ]
    for order in itertools.permutations(rules):
        decision = verdict_of(list(order))
        assert decision.reason == "prefix rule new"
        assert decision.treatment is Treatment.REJECT


def test_a_range_is_checked_against_the_whole_number() -> None:
    # the index prefix of this range (+8613812341) also starts longer numbers
    ranged = rule("+8613812341200..+8613812341299")
    assert verdict_of([ranged], call("+86138123412345")).verdict is Verdict.ALLOW
    assert verdict_of([ranged], call("+8613812341299")).verdict is Verdict.BLOCK
    assert verdict_of([ranged], call("+8613812341300")).verdict is Verdict.ALLOW


# --- anonymous callers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_call", "kind"),
    [
        (call(), ""),
        (call(presentation=Presentation.WITHHELD), "withheld"),
        (call("", presentation=Presentation.WITHHELD), "withheld"),
        (call("", presentation=Presentation.UNAVAILABLE), "unavailable"),
        (call(""), "unavailable"),  # key "anonymous": no caller ID at all
        (call("", key="h0123456789abcdef01234567"), ""),  # a hostile, hashed caller ID
    ],
)
def test_anonymous_kind(the_call: Call, kind: str) -> None:
    assert the_call.anonymous_kind == kind


@pytest.mark.parametrize(
    ("value", "the_call", "blocked"),
    [
        ("any", call("", presentation=Presentation.WITHHELD), True),
        ("any", call("", presentation=Presentation.UNAVAILABLE), True),
        ("any", call(""), True),
        ("withheld", call("", presentation=Presentation.WITHHELD), True),
        ("withheld", call("", presentation=Presentation.UNAVAILABLE), False),
        ("unavailable", call("", presentation=Presentation.UNAVAILABLE), True),
        ("unavailable", call("", presentation=Presentation.WITHHELD), False),
        ("any", call(), False),
        ("any", call("", key="h0123456789abcdef01234567"), False),
    ],
)
def test_anonymous_rules(value: str, the_call: Call, blocked: bool) -> None:
    decision = verdict_of([rule(value)], the_call)
    assert (decision.verdict is Verdict.BLOCK) is blocked
    if blocked:
        assert decision.label == "anonymous"


def test_number_rules_never_match_a_call_without_a_number() -> None:
    rules = [
        rule("", match=Match.NUMBER),
        prefix("+"),
        prefix("+86"),
        rule("+8613800000000..+8613899999999"),
    ]
    anonymous = call("", presentation=Presentation.WITHHELD)
    assert verdict_of(rules, anonymous).verdict is Verdict.ALLOW


# --- expiry, scope, windows -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "blocked"),
    [(None, True), (NOW + 0.001, True), (NOW, False), (NOW - 60, False)],
)
def test_expired_rules_are_ignored(expires_at: float | None, blocked: bool) -> None:
    decision = verdict_of([rule(expires_at=expires_at)])
    assert (decision.verdict is Verdict.BLOCK) is blocked


def test_an_expired_specific_rule_leaves_the_general_one() -> None:
    rules = [rule(id="gone", expires_at=NOW - 1), prefix("+86138", id="stays")]
    assert verdict_of(rules).reason == "prefix rule stays"


@pytest.mark.parametrize(
    ("hotlines", "hotline", "blocked"),
    [
        ((), "service", True),
        (("service",), "service", True),
        (("complaints", "service"), "service", True),
        (("complaints",), "service", False),
        (("service",), "other", False),
    ],
)
def test_hotline_scope(hotlines: tuple[str, ...], hotline: str, blocked: bool) -> None:
    decision = verdict_of([rule(hotlines=hotlines)], call(hotline=hotline))
    assert (decision.verdict is Verdict.BLOCK) is blocked


@pytest.mark.parametrize(
    ("windows", "local", "blocked"),
    [
        (("mon-fri 09:00-18:00",), datetime(2024, 3, 6, 14, 30), True),
        (("mon-fri 09:00-18:00",), datetime(2024, 3, 9, 14, 30), False),  # Saturday
        (("22:00-06:00",), datetime(2024, 3, 6, 14, 30), False),
        (("22:00-06:00",), datetime(2024, 3, 7, 2, 0), True),  # after midnight
        (("sat", "mon-fri 14:00-15:00"), datetime(2024, 3, 6, 14, 30), True),  # any window
        (("sat", "sun"), datetime(2024, 3, 6, 14, 30), False),
    ],
)
def test_time_windows(windows: tuple[str, ...], local: datetime, blocked: bool) -> None:
    windowed = rule(windows=tuple(Window.parse(w) for w in windows))
    decision = verdict_of([windowed], call(local=local))
    assert (decision.verdict is Verdict.BLOCK) is blocked


def test_outside_its_window_a_specific_rule_leaves_the_general_one() -> None:
    rules = [
        rule(id="nights", windows=(Window.parse("22:00-06:00"),)),
        prefix("+86138", id="always", action=Verdict.CHALLENGE),
    ]
    assert verdict_of(rules).reason == "prefix rule always"
    night = verdict_of(rules, call(local=datetime(2024, 3, 6, 23, 0)))
    assert night.reason == "number rule nights"


@pytest.mark.parametrize(
    ("high_risk", "blocked"),
    [(frozenset({14}), True), (frozenset({0, 1, 14, 23}), True), (frozenset({15}), False)],
)
def test_learned_windows_follow_the_high_risk_hours(
    high_risk: frozenset[int], blocked: bool
) -> None:
    learned = rule(windows=(Window(learned=True),))
    decision = verdict_of([learned], high_risk=high_risk)
    assert (decision.verdict is Verdict.BLOCK) is blocked


def test_learned_windows_are_closed_until_something_is_learned() -> None:
    assert verdict_of([rule(windows=(Window(learned=True),))]).verdict is Verdict.ALLOW


def test_applicable() -> None:
    rules = [
        rule(id="yes"),
        rule(id="expired", expires_at=NOW),
        rule(id="scoped", hotlines=("complaints",)),
        rule(id="windowed", windows=(Window.parse("sat"),)),
        rule("+8613812341235", id="other-number"),
        rule(id="shadow", mode=Mode.SHADOW),
        rule(id="learned", windows=(Window(learned=True),)),
    ]
    found = applicable(rules, call(), NOW, frozenset({14}))
    assert [r.id for r in found] == ["yes", "shadow", "learned"]


# --- shadow rules -----------------------------------------------------------------------------


def test_a_shadow_rule_never_decides_but_is_reported() -> None:
    shadow = rule(id="s1", mode=Mode.SHADOW)
    decision = verdict_of([shadow])
    assert decision.verdict is Verdict.ALLOW
    assert decision.rule is None
    assert decision.label == "no_rule"
    assert decision.shadow == (shadow,)


def test_shadow_rules_are_reported_beside_the_deciding_rule() -> None:
    shadows = [
        rule(id="s1", mode=Mode.SHADOW, treatment=Treatment.REJECT),
        rule("any", id="s2", mode=Mode.SHADOW),
        prefix("+86", id="s3", list=RuleList.ALLOW, mode=Mode.SHADOW),
    ]
    enforced = prefix("+86138", id="e1", action=Verdict.CHALLENGE)
    decision = verdict_of([shadows[0], enforced, *shadows[1:]], WITHHELD_NUMBER)
    assert decision.verdict is Verdict.CHALLENGE  # neither the shadow block nor the shadow allow
    assert decision.rule == enforced
    assert decision.shadow == tuple(shadows)


def test_shadow_rules_are_reported_when_the_allowlist_wins() -> None:
    shadow = rule(id="s1", mode=Mode.SHADOW)
    allow = prefix("+86", id="a1", list=RuleList.ALLOW)
    decision = verdict_of([shadow, allow])
    assert decision.label == "allowlist"
    assert decision.shadow == (shadow,)


def test_shadow_rules_that_do_not_apply_are_not_reported() -> None:
    shadows = [
        rule(id="expired", mode=Mode.SHADOW, expires_at=NOW - 1),
        rule(id="scoped", mode=Mode.SHADOW, hotlines=("complaints",)),
        rule(id="windowed", mode=Mode.SHADOW, windows=(Window.parse("sat"),)),
        rule("+8613812341235", id="other", mode=Mode.SHADOW),
    ]
    assert verdict_of(shadows).shadow == ()


# --- treatments -------------------------------------------------------------------------------

PER_HOTLINE = Treatments(default=Treatment.LINEFAULT, per_hotline={"complaints": Treatment.BUSY})


@pytest.mark.parametrize(
    ("own", "hotline", "treatments", "expected"),
    [
        (Treatment.REJECT, "complaints", PER_HOTLINE, Treatment.REJECT),  # the rule's own
        (None, "complaints", PER_HOTLINE, Treatment.BUSY),  # then the hotline's
        (None, "service", PER_HOTLINE, Treatment.LINEFAULT),  # then the default
        (None, "service", Treatments(), Treatment.ANALYSIS),
        (None, "complaints", Treatments(per_hotline={}), Treatment.ANALYSIS),
        (Treatment.BUSY, "service", Treatments(), Treatment.BUSY),
    ],
)
def test_treatment_precedence(
    own: Treatment | None, hotline: str, treatments: Treatments, expected: Treatment
) -> None:
    decision = verdict_of([rule(treatment=own)], call(hotline=hotline), treatments=treatments)
    assert decision.treatment is expected
    assert treatments.for_rule(rule(treatment=own), hotline) is expected


@pytest.mark.parametrize("action", [Verdict.CHALLENGE, Verdict.ANALYSIS])
def test_only_a_block_has_a_treatment(action: Verdict) -> None:
    decision = verdict_of([rule(action=action)], call(hotline="complaints"), treatments=PER_HOTLINE)
    assert decision.verdict is action
    assert decision.treatment is None


# --- labels and failing open ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "label"),
    [
        (Decision(Verdict.ALLOW, "no rule"), "no_rule"),
        (Decision(Verdict.ALLOW, "allowlisted by r1", rule(list=RuleList.ALLOW)), "allowlist"),
        (Decision(Verdict.BLOCK, "x", rule()), "number"),
        (Decision(Verdict.BLOCK, "x", prefix("+86")), "prefix"),
        (Decision(Verdict.BLOCK, "x", rule("+861..+862")), "range"),
        (Decision(Verdict.CHALLENGE, "x", rule("any")), "anonymous"),
        (Decision(Verdict.ALLOW, "failopen_timeout"), "failopen_timeout"),
        (Decision(Verdict.BLOCK, "failopen_x", rule()), "number"),  # a rule names the label
    ],
)
def test_decision_label(decision: Decision, label: str) -> None:
    assert decision.label == label


@pytest.mark.parametrize("reason", ["timeout", "store_error"])
def test_fail_open(reason: str) -> None:
    decision = fail_open(reason)
    assert decision.verdict is Verdict.ALLOW
    assert decision.reason == f"failopen_{reason}"
    assert decision.label == f"failopen_{reason}"
    assert decision.rule is None and decision.treatment is None and decision.shadow == ()


def test_decisions_are_values() -> None:
    decision = verdict_of([rule()])
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.verdict = Verdict.ALLOW  # type: ignore[misc]
    assert decision == verdict_of([rule()])


# --- learning from flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "kwargs", "expected"),
    [
        ({0: 30, 1: 25, 12: 20, 15: 2}, {"factor": 2, "min_flags": 5}, {0, 1, 12}),
        ({}, {}, set()),
        ({h: 0 for h in range(24)}, {}, set()),
        ({h: 10 for h in range(24)}, {}, set()),  # flat: nothing stands out
        ({h: 10 for h in range(24)}, {"factor": 1.0}, set(range(24))),  # n == factor * mean
        ({3: 4}, {}, set()),  # stands out but below min_flags
        ({3: 5}, {}, {3}),  # exactly min_flags
        ({3: 5}, {"min_flags": 6}, set()),
        # mean = 48 / 24 = 2: 3 flags is exactly 1.5 times the mean, 2 is not
        ({**{h: 2 for h in range(21)}, 21: 3, 22: 2, 23: 1}, {"min_flags": 1}, {21}),
    ],
)
def test_high_risk_hours(hours: dict[int, int], kwargs: dict[str, Any], expected: set[int]) -> None:
    assert high_risk_hours(hours, **kwargs) == frozenset(expected)


def test_quorum() -> None:
    flags = {"agent3": NOW - 10, "agent1": NOW - 600, "agent2": NOW - 601, "agent4": NOW}
    assert quorum(flags, NOW, window=600, needed=3) == Quorum(("agent1", "agent3", "agent4"), 600)
    assert quorum(flags, NOW, window=600, needed=4) is None
    assert quorum(flags, NOW, window=601, needed=4) == Quorum(
        ("agent1", "agent2", "agent3", "agent4"), 601
    )
    assert quorum(flags, NOW, window=5, needed=1) == Quorum(("agent4",), 5)
    assert quorum({}, NOW, window=600, needed=1) is None


@pytest.mark.parametrize(
    ("previous", "expected"),
    [(0, 3600.0), (1, 86400.0), (2, 604800.0), (3, 604800.0), (50, 604800.0)],
)
def test_auto_block_duration_escalates_then_stays_at_the_last(
    previous: int, expected: float
) -> None:
    assert auto_block_duration(previous, [3600.0, 86400.0, 604800.0]) == expected


def test_auto_block_duration_with_one_duration() -> None:
    assert [auto_block_duration(n, (900.0,)) for n in range(3)] == [900.0, 900.0, 900.0]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3600, "1h"),
        (93600, "1d2h"),
        (0, "0s"),
        (0.9, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (604800, "1w"),
        (694861, "1w1d1h1m1s"),
        (1209600 + 30, "2w30s"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@given(st.integers(1, 10**9))
def test_human_duration_reads_back(seconds: int) -> None:
    assert parse_duration(human_duration(seconds)) == seconds
