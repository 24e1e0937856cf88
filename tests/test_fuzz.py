"""The fuzzing properties of ``bench/fuzz.py``, driven by hypothesis, bounded for CI.

``python -m bench.fuzz`` runs the same check functions over millions of mutated inputs; here
hypothesis drives them with a few thousand examples in all (structured generators fed a
hypothesis-controlled ``Random``, plus free-form bytes built from each format's tokens, which
hypothesis shrinks to a minimal failing input). The second half holds the regressions the fuzzer
found, each as a plain test.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bench import fuzz
from screener.ami import AmiClient
from screener.errors import ImportFormatError
from screener.metrics import Metrics
from screener.model import AmiConnected, AmiDisconnected, FlagRequested
from screener.rules import MAX_EXPIRY, export_csv, parse_import, parse_rule
from tests.ami_fake import FakeAmi, event
from tests.test_ami import next_event
from tests.test_ami import settings as ami_settings

pytestmark = pytest.mark.timeout(60)

BOUNDED = settings(
    max_examples=250,
    deadline=timedelta(seconds=2),  # the fuzzer's per-input time bound
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # CI runs the same examples every time; the fuzzer explores
)
RANDOMS = st.randoms(use_true_random=False)


def tokens(vocabulary: list[bytes], max_size: int = 30) -> st.SearchStrategy[bytes]:
    """Bytes made of a format's tokens and short random runs (hypothesis shrinks these well)."""
    piece = st.one_of(st.sampled_from(vocabulary), st.binary(max_size=8))
    return st.lists(piece, max_size=max_size).map(b"".join)


# --- the properties, as CI runs them ------------------------------------------------------------


@BOUNDED
@given(
    data=st.one_of(
        st.builds(fuzz.gen_agi, RANDOMS),
        st.tuples(st.sampled_from(fuzz._agi_transcripts()), tokens(fuzz.AGI_TOKENS)).map(b"".join),
        tokens(fuzz.AGI_TOKENS),
    )
)
def test_agi_codec_raises_only_protocol_errors_and_ignores_chunking(data: bytes) -> None:
    fuzz.check_agi(data)


@pytest.fixture(scope="module")
def ami_harness() -> Iterator[fuzz.AmiHarness]:
    harness = fuzz.AmiHarness()
    yield harness
    harness.close()


AMI_INPUTS = st.one_of(
    st.builds(fuzz.gen_ami, RANDOMS),
    st.builds(fuzz.Mutator(fuzz._ami_seeds(), fuzz.AMI_TOKENS), RANDOMS),
    tokens(fuzz.AMI_TOKENS),
)


@BOUNDED
@given(data=AMI_INPUTS)
def test_ami_stream_never_breaks_the_connection(ami_harness: fuzz.AmiHarness, data: bytes) -> None:
    ami_harness.errors.components.clear()
    ami_harness.check(data)


@BOUNDED
@given(data=AMI_INPUTS)
def test_ami_event_translation_keeps_repeated_headers_unusable(data: bytes) -> None:
    fuzz.check_ami_event(data)


@BOUNDED
@given(
    data=st.one_of(
        st.builds(fuzz.gen_rules_csv, RANDOMS),
        st.builds(fuzz.Mutator(fuzz._rule_seeds()[0], fuzz.RULE_TOKENS), RANDOMS),
        tokens(fuzz.RULE_TOKENS),
    )
)
def test_csv_import_raises_only_import_errors_and_round_trips(data: bytes) -> None:
    fuzz.check_rules(data, "csv")


@BOUNDED
@given(
    data=st.one_of(
        st.builds(fuzz.gen_rules_json, RANDOMS),
        st.builds(fuzz.Mutator(fuzz._rule_seeds()[1], fuzz.RULE_TOKENS), RANDOMS),
        tokens(fuzz.RULE_TOKENS),
    )
)
def test_json_import_raises_only_import_errors_and_round_trips(data: bytes) -> None:
    fuzz.check_rules(data, "json")


@pytest.mark.skipif(fuzz.billing_parser() is None, reason="screener.billing not there yet")
@BOUNDED
@given(
    data=st.one_of(
        st.builds(fuzz.gen_billing, RANDOMS),
        st.builds(fuzz.Mutator([fuzz.gen_billing(random.Random(0))], fuzz.RULE_TOKENS), RANDOMS),
        tokens(fuzz.RULE_TOKENS),
    )
)
def test_carrier_bill_parser_raises_only_documented_errors(data: bytes) -> None:
    fuzz.check_billing(data)


def test_the_bench_harness_runs_every_target(tmp_path: Path) -> None:
    """The mutator loop itself (what ``python -m bench.fuzz`` runs), 150 inputs a target."""
    targets = fuzz.build_targets()
    try:
        for number, name in enumerate(fuzz.TARGET_NAMES):
            if name not in targets:
                continue
            stats = fuzz.run_range(
                targets[name], number, 0, 150, seed=3, bound=2.0, out_dir=tmp_path
            )
            assert stats.inputs == 150
            assert stats.failures == 0, sorted(p.name for p in tmp_path.iterdir())
    finally:
        for target in targets.values():
            target.close()


def _flaky_target() -> fuzz.Target:
    """Input 3 hangs, input 5 kills its process, the rest pass."""

    def check(data: bytes) -> str:
        index = int(data)
        if index == 3:
            time.sleep(3600)
        if index == 5:
            os._exit(7)
        return "ok"

    return fuzz.Target("agi", check, fuzz.gen_agi, fuzz.Mutator([b"0"], [b"0"]))


@pytest.mark.timeout(30)
def test_the_pool_records_hangs_and_crashes_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What stands behind "no hang": a worker stuck on an input is killed after
    ``hang_seconds`` and the input written out; a worker that dies likewise; the rest run."""
    # input i of this target is the number i (the generator ignores the rng)
    monkeypatch.setattr(fuzz, "input_for", lambda seed, no, index, target, rng: str(index).encode())
    pool = fuzz._Pool(
        "agi", 0, seed=1, bound=2.0, hang_seconds=1.0, out_dir=tmp_path, factory=_flaky_target
    )
    stats, failures = pool.run(8, jobs=2)
    assert sorted((f.index, f.kind) for f in failures) == [(3, "hang"), (5, "crash")]
    assert stats.inputs == 8
    assert (tmp_path / "agi-000000003.bin").read_bytes() == b"3"
    assert (tmp_path / "agi-000000005.txt").read_text().startswith("target agi input 5: crash")


def test_a_failure_writes_a_reproducer_that_replays(tmp_path: Path) -> None:
    def broken(data: bytes) -> str:
        raise KeyError("boom")

    target = fuzz.Target("agi", broken, fuzz.gen_agi, fuzz.Mutator([b"x"], [b"y"]))
    stats = fuzz.run_range(target, 0, 0, 2, seed=1, bound=2.0, out_dir=tmp_path)
    assert stats.failures == 2
    reproducer = tmp_path / "agi-000000001.bin"
    assert reproducer.read_bytes() == fuzz.input_for(1, 0, 1, target, random.Random())
    assert "KeyError: 'boom'" in reproducer.with_suffix(".txt").read_text()
    assert fuzz.replay(reproducer, "agi") in (0, 1)  # the real target: the input is replayable


def test_inputs_depend_only_on_seed_target_and_index() -> None:
    target = fuzz.build_targets(["rules_json"])["rules_json"]
    rng = random.Random()
    first = [fuzz.input_for(5, 4, i, target, rng) for i in range(20)]
    assert [fuzz.input_for(5, 4, i, target, random.Random()) for i in range(20)] == first


# --- regressions the fuzzer found ---------------------------------------------------------------

CTX = fuzz.RULE_CONTEXT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('[{"value": ' + "[" * 100_000 + "}]", "nested too deeply"),
        ('{"value": ' * 100_000, "nested too deeply"),  # JSON lines
        ('[{"value": "+8613812341234", "reason": "x", "expires": ' + "9" * 5000 + "}]", "4300"),
        ('{"value": "+8613812341234", "reason": "x", "expires": ' + "9" * 5000 + "}", "4300"),
    ],
)
def test_json_import_that_python_cannot_load_is_an_import_error(text: str, message: str) -> None:
    with pytest.raises(ImportFormatError) as caught:
        parse_import(text, "json", CTX)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "expires",
    [10**400, 1e300, MAX_EXPIRY, "9999-12-31T23:59:59", "999999w"],
)
def test_an_expiry_no_date_can_hold_is_refused(expires: object) -> None:
    """1e300 used to be accepted, then broke every export (OverflowError: a 500 on the API);
    10**400 raised OverflowError straight away."""
    with pytest.raises(ValueError, match="expires"):
        parse_rule({"value": "+8613812341234", "reason": "x", "expires": expires}, CTX)


def test_the_latest_accepted_expiry_still_exports() -> None:
    rule = parse_rule(
        {"value": "+8613812341234", "reason": "x", "expires": "9998-12-31T00:00:00"}, CTX
    )
    again = parse_import(export_csv([rule]), "csv", CTX)
    assert abs((again[0].expires_at or 0) - (rule.expires_at or 0)) < 1


async def test_a_repeated_event_header_costs_one_message_not_the_connection() -> None:
    """A caller ID holding CR LF can add ``Event:`` or ``ActionID:`` lines to an event;
    panoramisk raised on the repeated header inside data_received, which dropped the AMI
    connection (and the genuine flag in the same read). Now that message alone is dropped."""
    fake = FakeAmi()
    await fake.start()
    registry = CollectorRegistry()
    queue: asyncio.Queue[object] = asyncio.Queue(100)
    client = AmiClient(ami_settings(fake.port), queue, Metrics(registry), dtmf=True)  # type: ignore[arg-type]
    try:
        await client.connect()
        assert isinstance(await asyncio.wait_for(queue.get(), 1), AmiConnected)
        forged_event = (
            b"Event: DTMFEnd\r\nConnectedLineNum: 1\r\nEvent: UserEvent\r\n"
            b"Direction: Received\r\nDigit: 9\r\n\r\n"
        )
        forged_id = b"Event: UserEvent\r\nActionID: a\r\nActionID: b\r\nUserEvent: X\r\n\r\n"
        genuine = event(
            Event="UserEvent",
            UserEvent="ScreenerFlag",
            AgentChannel="PJSIP/agent1-00000002",
            Token="t" * 40,
        )
        await fake.push(forged_event + forged_id + genuine)
        flag = await next_event(queue, FlagRequested)
        assert flag.agent_channel == "PJSIP/agent1-00000002"
        await asyncio.sleep(0.2)
        assert client.connected
        assert client.connections == 1
        assert not any(isinstance(e, AmiDisconnected) for e in list(queue._queue))  # type: ignore[attr-defined]
        assert registry.get_sample_value("screener_attacks_total", {"kind": "ami_malformed"}) == 2
        assert (await client.action({"Action": "Ping"}))["Response"] == "Success"
    finally:
        await client.close()
        await fake.close()


def test_reproducers_from_the_first_runs_stay_fixed() -> None:
    """One input of each kind the first fuzzing runs failed on."""
    deep = b"[" * 50_000
    fuzz.check_rules(deep, "json")
    fuzz.check_rules(
        json.dumps({"value": "+8613812341234", "reason": "x"}).encode() + b"\n" + deep, "json"
    )
    fuzz.check_rules(b'[{"value": "+8613812341234", "reason": "x", "expires": 1e300}]', "json")
    harness = fuzz.AmiHarness()
    try:
        harness.check(b"Event: DTMFEnd\r\nEvent: X\r\n\r\n")
        harness.check(b"Response: Success\r\nActionID: scr-fuzz\r\nActionID: x\r\n\r\n")
    finally:
        harness.close()
