"""Fuzzing: millions of hostile inputs through every parser that reads bytes from outside.

    python -m bench.fuzz --inputs 1000000            # all targets, the inputs split evenly
    python -m bench.fuzz --inputs 200000 --targets agi,rules_json --jobs 2 --seed 7
    python -m bench.fuzz --replay fuzz-failures/agi-000123456.bin

How. A seeded random mutator, not hypothesis, drives the volume: hypothesis spends most of its
time on its own bookkeeping (a few hundred examples/s per property here), so a million would take
hours, while the mutator checks 2,000-6,000 inputs/s per core (1,000,000 inputs in 164 s with
``--jobs 2`` on the 2-core reference machine, 2026-11-23). Input ``i`` of a target is a pure
function of ``(seed, target, i)``, so any input can be regenerated from its index; the input that
failed is also written to a reproducer file. Each input is either a structured one (a generator
that knows the format: an AGI environment with caller text holding CR/LF, AMI messages with
repeated or forged headers, import rows with every field type) or a seed (recorded transcripts,
exports) mutated 1-8 times (bit flips, format tokens, deleted/duplicated ranges and lines,
splices, truncation, a token repeated up to 20,000 times for oversized lines and deep nesting).
The same check functions run under hypothesis in ``tests/test_fuzz.py``, which CI runs and
which shrinks a failure to a minimal example.

Targets and the property each input must satisfy (anything else is a failure):

* ``agi``: ``AgiConnection`` fed the bytes whole, and again cut at points derived from the
  bytes, sending a command whenever it is our turn. Only ``AgiProtocolError`` subclasses may be
  raised (then the state is ERROR and the next call raises ``LocalAgiError``); the two runs give
  the same events; events follow the contract ``agi_server`` relies on (one ``AgiRequest`` first,
  replies only to a command, the CLOSED sentinel repeats); ``suspicious`` reasons come from the
  documented vocabulary (they become metric labels).
* ``ami_stream``: the bytes as Asterisk's side of the AMI socket, through panoramisk's protocol
  configured as screener configures it (``AmiClient._build``: its Manager, protocol factory and
  callbacks, DTMF detection on), cut at derived points, with one of screener's actions pending.
  ``data_received`` must never raise (an exception there drops the AMI connection), the
  callbacks must never count an ``ami_event`` error, and only model events reach the queue.
* ``ami_event``: ``ami.to_event`` on header mappings with hostile values (repeated headers as
  lists, ``None``, numbers, CR/LF) and on panoramisk ``Message``s parsed from the bytes. It
  returns ``None`` or a model event with ``str`` fields; a repeated header always yields a value
  holding LF (so ``check_value`` refuses to send it back to Asterisk).
* ``rules_csv`` / ``rules_json``: ``rules.parse_import`` raises only ``ImportFormatError``; rules
  it returns survive ``to_json``/``from_json``, and ``export_csv``/``export_json`` re-import to
  the same rules.
* ``billing_csv`` (only when ``screener.billing.parse_carrier_csv`` exists): raises only
  ``ImportFormatError`` or ``ValueError``.

Every input must finish within ``--time-bound`` seconds (default 2): a slower one is a failure,
and a worker that makes no progress for ``--hang-seconds`` is killed by the parent, which records
the input as a hang and restarts the worker after it.

Prints inputs/s per target, the totals, the failures (with reproducer paths), then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import inspect
import json
import logging
import multiprocessing as mp
import os
import queue
import random
import re
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from screener.agi_protocol import (
    CLOSED,
    NEED_DATA,
    AgiCommand,
    AgiConnection,
    AgiHangup,
    AgiReply,
    AgiRequest,
    AgiState,
    GetFullVariable,
    GetVariable,
    Noop,
    SetVariable,
    StreamFile,
)
from screener.errors import AgiProtocolError, ImportFormatError, LocalAgiError
from screener.model import AmiConnected, AmiDisconnected, DtmfReceived, FlagRequested
from screener.rules import Rule, RuleContext, export_csv, export_json, parse_import

REPO = Path(__file__).resolve().parents[1]
AGI_FIXTURES = REPO / "tests" / "fixtures" / "agi"
AMI_FIXTURES = REPO / "tests" / "fixtures" / "ami"
NONCE = "0123456789abcdef0123456789abcdef"
FENCE_REPLY = f"200 result=1 ({NONCE})\n".encode()
NOW = 1_790_000_000.0  # a fixed clock: inputs, and so failures, do not depend on the date
RULE_CONTEXT = RuleContext(
    region="CN",
    zone=ZoneInfo("Asia/Shanghai"),
    now=NOW,
    actor="fuzz",
    hotlines=frozenset({"service", "sales"}),
)


class PropertyFailure(AssertionError):
    """An input broke a property (not an exception the code under test raised by itself)."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise PropertyFailure(message)


# --- the mutator ------------------------------------------------------------------------------


class Mutator:
    """Seeds mutated 1-8 times with byte, token, range, line and splice operations."""

    def __init__(self, seeds: list[bytes], tokens: list[bytes], max_size: int = 256 * 1024) -> None:
        self.seeds = [s for s in seeds if s] or [b"\n"]
        self.tokens = tokens
        self.max_size = max_size

    def __call__(self, rng: random.Random) -> bytes:
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.randint(1, 8)):
            self._mutate(rng, data)
        return bytes(data[: self.max_size])

    def _mutate(self, rng: random.Random, data: bytearray) -> None:
        n = len(data)
        at = rng.randint(0, n)
        op = rng.randrange(12)
        if op == 0 and n:
            data[min(at, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            data[min(at, n - 1)] = rng.randrange(256)
        elif op in (2, 3):
            data[at:at] = rng.choice(self.tokens)
        elif op == 4 and n:
            del data[at : at + rng.randint(1, 64)]
        elif op == 5 and n:
            end = min(n, at + rng.randint(1, 256))
            data[at:at] = data[at:end] * rng.randint(1, 4)
        elif op == 6:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 7:
            other = rng.choice(self.seeds)
            data[at:] = other[rng.randint(0, len(other)) :]
        elif op == 8:
            del data[rng.randint(0, n) :]
        elif op == 9:
            token = rng.choice(self.tokens) or b"x"
            times = rng.choice((2, 10, 100, 1000, 9000, 20000))
            data[at:at] = token * min(times, self.max_size // len(token))
        elif op == 10 and n:
            end = min(n, at + rng.randint(1, 32))
            data[at:end] = rng.choice(self.tokens)
        else:
            self._line_op(rng, data)

    @staticmethod
    def _line_op(rng: random.Random, data: bytearray) -> None:
        lines = bytes(data).split(b"\n")
        if len(lines) < 2:
            return
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        kind = rng.randrange(3)
        if kind == 0:
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 1:
            lines.insert(j, lines[i])
        else:
            del lines[i]
        data[:] = b"\n".join(lines)


def cuts_for(data: bytes, limit: int = 12) -> list[int]:
    """Where to cut ``data`` into pieces: derived from the bytes, so a reproducer needs no more."""
    if len(data) < 2:
        return []
    rng = random.Random(zlib.crc32(data))
    if rng.random() < 0.2 and len(data) <= 4096:
        return list(range(1, len(data)))  # one byte at a time, h11's rule
    return sorted({rng.randrange(1, len(data)) for _ in range(rng.randint(1, limit))})


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --- AGI --------------------------------------------------------------------------------------

AGI_COMMANDS: tuple[AgiCommand, ...] = (
    Noop(),
    GetVariable("SCREENER_LIST"),
    SetVariable("SCREENER_SCREEN", "allow/analysis//"),
    StreamFile("screener/analysis", "#"),
    GetFullVariable("${CALLERID(num)}"),
)
SUSPICIOUS = frozenset(
    {
        "malformed-line",
        "blank-line",
        "duplicate",
        "out-of-order",
        "missing",
        "unknown-key",
        "misplaced-arg",
        "arg-numbering",
        "control-character",
        "stray-after-environment",
    }
)
_AGI_ENV_KEYS = (
    "agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language", "agi_type",
    "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname", "agi_callingpres",
    "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid", "agi_rdnis", "agi_context",
    "agi_extension", "agi_priority", "agi_enhanced", "agi_accountcode", "agi_threadid",
)  # fmt: skip


def _agi_event(event: object) -> tuple[Any, ...]:
    if isinstance(event, AgiRequest):
        expect(all(isinstance(v, str) for v in event.env.values()), "env value not str")
        expect(all(isinstance(a, str) for a in event.args), "arg not str")
        for reason in event.suspicious:
            expect(reason.partition(":")[0] in SUSPICIOUS, f"unknown reason {reason!r}")
        return ("request", event.script, dict(event.params), event.args, event.suspicious)
    if isinstance(event, AgiReply):
        expect(100 <= event.code <= 999, f"reply code {event.code}")
        expect(event.code == 200 or event.data is None, "data on a non-200 reply")
        expect(not re.search(r"\s", event.result), "whitespace in result")
        return ("reply", event.code, event.result, event.data, event.text)
    if isinstance(event, AgiHangup):
        return ("hangup",)
    raise PropertyFailure(f"unexpected event {event!r}")


def run_agi(data: bytes, cuts: list[int]) -> list[tuple[Any, ...]]:
    """Feed ``data`` cut at ``cuts`` (then EOF), sending a command whenever it is our turn.

    Returns the events (and the error class, if any); raises ``PropertyFailure`` when the codec
    breaks its contract, and lets any non-protocol exception through.
    """
    conn = AgiConnection(NONCE)
    conn.start()
    out: list[tuple[Any, ...]] = []
    sent = 0
    pending = False  # a command is waiting for its reply
    try:
        for piece in [*pieces(data, cuts), b""]:
            conn.receive_data(piece)
            while (event := conn.next_event()) is not NEED_DATA:
                if event is CLOSED:
                    expect(conn.next_event() is CLOSED, "CLOSED is not repeated")
                    out.append(("closed",))
                    return out
                summary = _agi_event(event)
                if not out:
                    expect(summary[0] == "request", f"first event is {summary[0]}")
                else:
                    expect(summary[0] != "request", "a second AgiRequest")
                if summary[0] == "reply":
                    expect(pending, "a reply with no command pending")
                    pending = False
                out.append(summary)
                if conn.state is AgiState.IDLE and not pending:
                    conn.send(AGI_COMMANDS[sent % len(AGI_COMMANDS)])
                    sent, pending = sent + 1, True
    except AgiProtocolError as e:
        expect(conn.state is AgiState.ERROR, f"{type(e).__name__} left state {conn.state}")
        try:
            conn.next_event()
        except LocalAgiError:
            pass
        else:
            raise PropertyFailure("next_event() after an error did not raise") from None
        out.append(("error", type(e).__name__))
    return out


def check_agi(data: bytes) -> str:
    whole = run_agi(data, [])
    split = run_agi(data, cuts_for(data))
    expect(whole == split, f"chunking changed the outcome:\n{whole[-3:]}\n{split[-3:]}")
    replies = sum(1 for e in whole if e[0] == "reply")
    depth = "no-request" if not whole or whole[0][0] != "request" else f"replies-{min(replies, 3)}"
    return f"{depth}/{whole[-1][0]}" if whole else "need-data"


def _agi_transcripts() -> list[bytes]:
    seeds = []
    for path in sorted(AGI_FIXTURES.glob("*.txt")):
        lines = []
        for text in path.read_text("utf-8").splitlines():
            if text.startswith("<<"):
                content = text[3:].replace("{nonce}", NONCE).encode()
                content = re.sub(
                    rb"\\(r|\\|x[0-9a-fA-F]{2})",
                    lambda m: {b"r": b"\r", b"\\": b"\\"}.get(m[1]) or bytes([int(m[1][1:], 16)]),
                    content,
                )
                lines.append(content + b"\n")
        seeds.append(b"".join(lines))
    return seeds


_CALLER_TEXT = '0123456789 +abc:_\r\n"\\()HANGUPagi_arg_1result=\x00\u00e9%?&'


def _caller_text(rng: random.Random) -> str:
    return "".join(rng.choice(_CALLER_TEXT) for _ in range(rng.randint(0, 30)))


_AGI_REPLIES = (
    b"200 result=1\n", b"200 result=0\n", b"200 result=1 (value)\n", b"200 result=1 (a (b) c)\n",
    b"200 result=1 ()\n", b"200 result=35 endpos=1234\n", b"200 result=-1 endpos=0\n",
    b"200 result= (timeout)\n", b"200 ok\n", b"HANGUP\n", b"\n",
    b"510 Invalid or unknown command\n",
    b"511 Command Not Permitted on a dead channel or intercept routine\n",
    b"520-Invalid command syntax.  Proper usage follows:\nUsage: GET DATA\n\nHANGUP\n"
    b"520 End of proper usage.\n", b"520-Invalid\n", b"520 End\n", b"100 result=0 Trying...\n",
    b"999 x\n", FENCE_REPLY, b"200 result=1 (" + NONCE.encode() + b")\r\n", b"200 result=1\r\n",
    b"\xff\xfe\n", b"x" * 8193 + b"\n",
)  # fmt: skip


def gen_agi(rng: random.Random) -> bytes:
    """A FastAGI peer's side: an environment with hostile caller text, then replies."""
    pairs = [(key, "") for key in _AGI_ENV_KEYS]
    for i, (key, _) in enumerate(pairs):
        value = {
            "agi_network": "yes",
            "agi_network_script": rng.choice(["screen", "screen?hotline=x&y", "%2e%2e/x", ""]),
            "agi_uniqueid": "1732368000.7",
        }.get(key, "")
        if key in ("agi_callerid", "agi_calleridname", "agi_dnid", "agi_rdnis", "agi_extension"):
            value = _caller_text(rng)
        pairs[i] = (key, value)
    if rng.random() < 0.3:
        rng.shuffle(pairs)
    if rng.random() < 0.3:
        pairs.insert(rng.randrange(len(pairs) + 1), rng.choice(pairs))
    args = [
        base64.b64encode(rng.randbytes(rng.randint(0, 12))).decode()
        for _ in range(rng.randint(0, 4))
    ]
    lines = [f"{k}: {v}".encode("utf-8", "surrogatepass") for k, v in pairs]
    numbers = list(range(1, len(args) + 1))
    if rng.random() < 0.1:
        rng.shuffle(numbers)
    lines += [f"agi_arg_{n}: {a}".encode() for n, a in zip(numbers, args, strict=True)]
    if rng.random() < 0.1:
        lines.insert(rng.randrange(len(lines) + 1), b"HANGUP")
    out = b"\n".join(lines) + b"\n\n"
    if rng.random() < 0.1:
        out += b"HANGUP\n"
    if rng.random() < 0.9:
        out += FENCE_REPLY
    for _ in range(rng.randint(0, 8)):
        out += rng.choice(_AGI_REPLIES)
        if rng.random() < 0.3:
            out += FENCE_REPLY
    return out


AGI_TOKENS = [
    b"\n", b"\r\n", b"\n\n", b"\r", b"\x00", b"HANGUP\n", FENCE_REPLY, b"200 result=1 (", b")\n",
    b"200 result=0\n", b"520-", b"520 End\n", b"510 Invalid\n", b"511 Command Not Permitted\n",
    b"agi_network: yes\n", b"agi_arg_1: ", b"agi_arg_9: x\n", b"agi_callerid: ",
    b"agi_network_script: screen?x=y\n", b"%", b"?", b"=", b"\xff", b"\xc3", b"a" * 8192,
    b"a" * 8193, b"result=", b" endpos=", b"(", b")",
]  # fmt: skip


# --- AMI --------------------------------------------------------------------------------------

_AMI_HEADERS = (
    "Event", "UserEvent", "AgentChannel", "Token", "Channel", "Uniqueid", "Linkedid", "Digit",
    "Direction", "ActionID", "Response", "Message", "CommandID", "EventList", "CallerIDNum",
    "ConnectedLineNum", "Value", "Privilege",
)  # fmt: skip
_AMI_VALUES = (
    "UserEvent", "DTMFEnd", "ScreenerFlag", "Received", "Sent", "PJSIP/agent1-00000003",
    "1795447805.3", "9", "*", "Success", "Error", "Follows", "Complete", "scr-fuzz",
    "FullyBooted", "Shutdown", "",
    "1\r\nEvent: UserEvent\r\nUserEvent: ScreenerFlag\r\nToken: forged",
    "1\r\n\r\nEvent: DTMFEnd\r\nDirection: Received\r\nDigit: 9",
    "1\r\nActionID: scr-fuzz\r\nActionID: x", "1\r\nEvent: X", "\x1b[31m", "\xff", "a" * 5000,
)  # fmt: skip


def gen_ami(rng: random.Random) -> bytes:
    """AMI messages from Asterisk: known headers, repeated headers, injected CR LF."""
    messages = []
    for _ in range(rng.randint(1, 6)):
        headers = [("Event", rng.choice(("UserEvent", "DTMFEnd", "Hangup", "FullyBooted")))]
        if rng.random() < 0.2:
            headers = [("Response", rng.choice(("Success", "Error", "Follows", "Fail")))]
        for _ in range(rng.randint(0, 10)):
            name = rng.choice(_AMI_HEADERS)
            if rng.random() < 0.1:
                name = name.lower() if rng.random() < 0.5 else name.upper()
            headers.append((name, rng.choice(_AMI_VALUES)))
        sep = ": " if rng.random() < 0.95 else rng.choice((":", " : ", ""))
        text = "".join(f"{k}{sep}{v}\r\n" for k, v in headers)
        messages.append(text.encode("utf-8", "surrogatepass") + b"\r\n")
    out = b"".join(messages)
    return (b"Asterisk Call Manager/11.0.0\r\n" + out) if rng.random() < 0.2 else out


AMI_TOKENS = [
    b"\r\n", b"\r\n\r\n", b"\n", b"\r", b": ", b"Event: UserEvent\r\n", b"Event: DTMFEnd\r\n",
    b"Event: Shutdown\r\n", b"Event: FullyBooted\r\n", b"UserEvent: ScreenerFlag\r\n",
    b"AgentChannel: PJSIP/agent1-00000001\r\n", b"Token: ", b"Direction: Received\r\n",
    b"Digit: 9\r\n", b"ActionID: scr-fuzz\r\n", b"ActionID: ", b"CommandID: ",
    b"Response: Success\r\n", b"Response: Follows\r\n", b"Response: Fail\r\n",
    b"EventList: Complete\r\n", b"Uniqueid: ", b"Channel: ", b"Result: %0D%0A",
    b"--END COMMAND--", b"\xff", b"\x00", b"Asterisk Call Manager/11.0.0\r\n",
]  # fmt: skip


class _FakeTransport:
    """What panoramisk's protocol writes to (its writes are discarded)."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, _data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Errors:
    """Stands in for ``metrics.errors``: records the component of every boundary error."""

    def __init__(self) -> None:
        self.components: list[str] = []

    def labels(self, component: str) -> _Errors:
        self.components.append(component)
        return self

    def inc(self, _amount: float = 1) -> None:
        pass


class _MetricsProxy:
    def __init__(self, real: Any, errors: _Errors) -> None:
        self._real = real
        self.errors = errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class AmiHarness:
    """screener's AMI client with its panoramisk Manager, minus the socket (see ``check``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        from screener.ami import AmiClient
        from screener.config import AmiSettings
        from screener.metrics import Metrics

        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.errors = _Errors()
        metrics = Metrics(CollectorRegistry())
        self.client = AmiClient(AmiSettings(secret="fuzz"), self.queue, metrics, dtmf=True)
        self.client.metrics = _MetricsProxy(metrics, self.errors)  # type: ignore[assignment]

        async def build() -> Any:
            return self.client._build()

        self.manager = self.loop.run_until_complete(build())
        self.manager.closing = True  # a Shutdown event must not make it reconnect for real
        self.inputs = 0

    def close(self) -> None:
        """Run what panoramisk scheduled (it logs and returns), then close the loop."""
        loop = self.loop
        loop.run_until_complete(asyncio.sleep(0))
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)

    def _connect(self) -> Any:
        manager = self.manager
        protocol = manager.config["protocol_factory"]()
        protocol.connection_made(_FakeTransport())
        protocol.factory = manager
        protocol.log = manager.log
        protocol.config = manager.config
        protocol.encoding = manager.encoding = manager.config["encoding"]
        manager.protocol = protocol
        manager.responses = protocol.responses
        return protocol

    def check(self, data: bytes) -> str:
        asyncio.set_event_loop(self.loop)  # panoramisk's Action() makes a Future on "the" loop
        protocol = self._connect()
        action = protocol.send({"Action": "Getvar", "ActionID": "scr-fuzz", "Variable": "X"})
        for piece in pieces(data, cuts_for(data)):
            protocol.data_received(piece)  # must never raise
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        for event in events:
            expect(
                isinstance(event, FlagRequested | DtmfReceived | AmiConnected | AmiDisconnected),
                f"not a model event: {event!r}",
            )
        expect(not self.errors.components, f"boundary errors: {self.errors.components}")
        if action.done() and not action.cancelled() and action.exception() is None:
            expect(hasattr(action.result(), "get"), "action resolved to a non-message")
        self.inputs += 1
        if self.inputs % 1000 == 0:  # run what panoramisk scheduled (FullyBooted, Shutdown)
            self.loop.run_until_complete(asyncio.sleep(0))
        return "events" if events else "no-events"


def _ami_seeds() -> list[bytes]:
    seeds = []
    for path in sorted(AMI_FIXTURES.glob("*.txt")):
        raw = path.read_bytes()
        seeds.append(raw)
        messages = raw.split(b"\r\n\r\n")
        for start in range(0, len(messages), 5):  # windows of 5 messages: cheaper to mutate
            seeds.append(b"\r\n\r\n".join(messages[start : start + 5]) + b"\r\n\r\n")
    return seeds


def _hostile_value(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return [rng.choice(_AMI_VALUES) for _ in range(rng.randint(2, 3))]
    if kind == 1:
        return None
    if kind == 2:
        return rng.randint(-5, 5)
    return rng.choice(_AMI_VALUES)


def check_ami_event(data: bytes) -> str:
    """``to_event`` on the messages panoramisk parses from ``data`` and on a mapping built from
    the bytes (any value type)."""
    from panoramisk.message import Message

    from screener.ami import to_event

    text = data.decode("utf-8", "ignore")
    results = []
    for block in text.split("\r\n\r\n"):
        message = Message.from_line(block.strip())
        if message is not None:
            results.append((message, to_event(message, 1.0)))
    rng = random.Random(zlib.crc32(data))
    mapping: dict[Any, Any] = {"Event": rng.choice(("UserEvent", "DTMFEnd", "x"))}
    mapping["UserEvent" if rng.random() < 0.5 else "userevent"] = "ScreenerFlag"
    mapping["Direction"] = "Received"
    for _ in range(rng.randint(0, 6)):
        mapping[rng.choice(_AMI_HEADERS)] = _hostile_value(rng)
    results.append((mapping, to_event(mapping, 1.0)))
    seen = 0
    for source, event in results:
        if event is None:
            continue
        seen += 1
        expect(isinstance(event, FlagRequested | DtmfReceived), f"not a model event {event!r}")
        values = {
            "agentchannel": getattr(event, "agent_channel", None),
            "token": getattr(event, "token", None),
            "channel": getattr(event, "channel", None),
            "uniqueid": getattr(event, "uniqueid", None),
            "digit": getattr(event, "digit", None),
        }
        lowered = {str(k).lower(): v for k, v in source.items()}
        for name, value in values.items():
            if value is None:
                continue
            expect(isinstance(value, str), f"{name} is {type(value).__name__}")
            if isinstance(lowered.get(name), list) and len(lowered[name]) > 1:
                expect("\n" in value, f"a repeated {name} header became {value!r}")
    return "event" if seen else "ignored"


# --- rules imports ----------------------------------------------------------------------------

_RULE_VALUES = (
    "+8613812341234", "13812341234", "+86 138-1234 1234", "0105*", "+86105*",
    "+861012345600..+861012345699", "+861012345600..+861012345599", "+1..+9" * 3, "anonymous",
    "withheld", "unavailable", "private", "", " ", "*", "..", "+", "00861*", "9" * 300,
    "+" + "9" * 30, "1e400", "=cmd|'/c calc'!A1", "'+8613812341234", "\u2028", "\x00", "\ud800",
)  # fmt: skip
_RULE_FIELD_VALUES: dict[str, tuple[Any, ...]] = {
    "list": ("block", "allow", "BLOCK", "deny", "", None),
    "match": ("number", "prefix", "range", "anonymous", "regex", ""),
    "action": ("block", "challenge", "analysis", "allow", "drop", ""),
    "treatment": ("analysis", "linefault", "busy", "reject", "", "fax"),
    "hotlines": ("service", "service;sales", "unknown", ";;", "a" * 70, ["service"], [1], {}),
    "windows": (
        "mon-fri 22:00-06:00",
        "learned",
        "sat,sun",
        "sun-mon",
        "*",
        "24:00-01:00",
        "22:00-22:00",
        "mon 00:00-24:00;tue",
        "fri-thu 23:59-00:00",
        "xyz",
        ["learned"],
        [None],
    ),
    "expires": (
        "7d",
        "1d12h",
        "0s",
        "999999w",
        "2026-12-31",
        "2026-12-31T18:00+08:00",
        "9999-12-31T23:59:59",
        "0001-01-01",
        "2026-02-30",
        NOW + 10,
        NOW + 0.5,
        1e300,
        10**400,
        -1,
        float("inf"),
        float("nan"),
        True,
        "",
    ),
    "expires_at": (NOW + 3600, "1e999", 1e308),
    "mode": ("enforce", "shadow", "SHADOW", "x"),
    "reason": ("prank calls", "'quoted", "=formula", "a" * 201, "two\nlines", "", " ", 5),
    "id": ("r1", "x"),
    "created_by": ("someone",),
    "created_at": (0, "x"),
    "origin": ("auto", "x"),
    "by": ("root",),
}


_VALID_ROWS: tuple[dict[str, Any], ...] = (
    {"value": "+8613812341234"},
    {"value": "13812341234", "list": "allow"},
    {"value": "0105*", "action": "challenge", "windows": "learned"},
    {"value": "+86105*", "action": "analysis", "hotlines": "service;sales"},
    {"value": "+861012345600..+861012345699", "treatment": "busy", "expires": "7d"},
    {"value": "anonymous", "windows": "mon-fri 22:00-06:00", "mode": "shadow"},
    {"value": "withheld", "windows": ["sat,sun", "fri 23:00-01:00"], "expires": NOW + 86400},
    {"value": "+8613812341235", "expires": "2030-01-01T08:00:00+08:00", "reason": "'quoted"},
    {"value": "+8613812341236", "windows": "sun-mon", "expires_at": NOW + 90.25},
)


def _rule_row(rng: random.Random) -> dict[str, Any]:
    """A mostly valid row with a few fields drawn from every type and edge case."""
    row: dict[str, Any] = {"reason": "prank calls", **rng.choice(_VALID_ROWS)}
    if rng.random() < 0.5:
        return row
    if rng.random() < 0.5:
        row["value"] = rng.choice(_RULE_VALUES)
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(list(_RULE_FIELD_VALUES))
        row[name] = rng.choice(_RULE_FIELD_VALUES[name])
    if rng.random() < 0.05:
        del row["value"]
    return row


def gen_rules_json(rng: random.Random) -> bytes:
    rows: list[Any] = [_rule_row(rng) for _ in range(rng.randint(1, 8))]
    if rng.random() < 0.1:
        rows.append(rng.choice([None, 1, "x", [], [{}]]))
    if rng.random() < 0.05:
        depth = rng.choice((10, 1000, 100_000))
        return b"[" * depth + b"]" * rng.choice((0, depth))
    if rng.random() < 0.5:
        text = json.dumps(rows, ensure_ascii=rng.random() < 0.5)
    else:
        text = "\n".join(json.dumps(r) for r in rows)
    return text.encode("utf-8", "surrogatepass")


def gen_rules_csv(rng: random.Random) -> bytes:
    rows = [_rule_row(rng) for _ in range(rng.randint(1, 8))]
    named = {name for row in rows for name in row}
    extra = rng.sample(list(_RULE_FIELD_VALUES), rng.randint(0, 2))
    columns = ["value", "reason", *sorted(named - {"value", "reason"}), *extra]
    columns = list(dict.fromkeys(columns))
    if rng.random() < 0.3:
        rng.shuffle(columns)
    if rng.random() < 0.05:
        columns.remove("value")
    lines = [",".join(columns)]
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            cell = ";".join(map(str, value)) if isinstance(value, list) else str(value)
            if any(ch in cell for ch in ',"\r\n') or rng.random() < 0.1:
                cell = '"' + cell.replace('"', '""') + '"'
            cells.append(cell)
        if rng.random() < 0.05:
            cells.append("extra")
        lines.append(",".join(cells))
    eol = rng.choice(("\n", "\r\n", "\r"))
    return ("\ufeff" if rng.random() < 0.05 else "").encode() + eol.join(lines).encode(
        "utf-8", "surrogatepass"
    )


_SAMPLE_ROWS = [
    {"value": "+8613812341234", "reason": "prank calls"},
    {"value": "0105*", "reason": "public phones", "action": "challenge"},
    {"value": "+861012345600..+861012345699", "reason": "office", "treatment": "busy"},
    {"value": "anonymous", "reason": "withheld at night", "windows": "mon-fri 22:00-06:00"},
    {"value": "13812341235", "list": "allow", "reason": "the boss", "hotlines": "service"},
    {"value": "+8613812341236", "reason": "'quoted", "expires": "7d", "mode": "shadow"},
]


def _rule_seeds() -> tuple[list[bytes], list[bytes]]:
    from screener.rules import parse_rule

    rules = [parse_rule(row, RULE_CONTEXT) for row in _SAMPLE_ROWS]
    csv_seeds = [export_csv(rules).encode(), export_csv(rules[:1]).encode()]
    csv_seeds.append(b"value,reason\n+8613812341234,prank\n")
    json_seeds = [export_json(rules).encode(), json.dumps([r.to_dict() for r in rules]).encode()]
    return csv_seeds, json_seeds


RULE_TOKENS = [
    b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"'", b"=", b"+", b"*", b"..", b";", b":", b"\x00",
    b"\t", b"\xff", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"value", b"reason", b"expires",
    b"+8613812341234", b"0105*", b"+861012345600..+861012345699", b"anonymous",
    b"mon-fri 22:00-06:00", b"learned", b"7d", b"9999-12-31", b"0001-01-01", b"1e308", b"9" * 400,
    b"9" * 5000, b"{", b"}", b"[", b"]", b"null", b"true", b"1e999", b"NaN", b"-Infinity",
    b"\\u0000", b"\\ud800", b'"expires":', b'"windows":', b'"hotlines":', b'"value":',
]  # fmt: skip


def _same_rule(a: Rule, b: Rule) -> bool:
    def key(r: Rule) -> tuple[Any, ...]:
        return (r.list, r.match, r.value, r.action, r.treatment, r.hotlines, r.windows, r.mode)

    if key(a) != key(b) or a.reason != b.reason:
        return False
    if a.expires_at is None or b.expires_at is None:
        return a.expires_at == b.expires_at
    return abs(a.expires_at - b.expires_at) < 1.0  # the CSV export writes whole seconds


def check_rules(data: bytes, fmt: str) -> str:
    text = data.decode("utf-8", "replace")
    try:
        rules = parse_import(text, fmt, RULE_CONTEXT)
    except ImportFormatError as e:
        expect(bool(e.problems), "ImportFormatError without problems")
        expect(
            all(isinstance(n, int) and isinstance(m, str) for n, m in e.problems),
            "problems are not (line, message)",
        )
        return "rejected"
    expect(bool(rules), "no rules and no error")
    for rule in rules:
        expect(Rule.from_json(rule.to_json()) == rule, f"JSON round trip changed {rule}")
    later = replace(RULE_CONTEXT, now=NOW - 2)  # the CSV export rounds expiries down
    for exported, again_fmt in ((export_csv(rules), "csv"), (export_json(rules), "json")):
        again = parse_import(exported, again_fmt, later)
        expect(len(again) == len(rules), f"{again_fmt} export re-imports {len(again)} rules")
        for a, b in zip(rules, again, strict=True):
            expect(_same_rule(a, b), f"{again_fmt} export changed {a} into {b}")
    return "imported"


# --- billing (another team's parser, when present) --------------------------------------------


def billing_parser() -> Callable[[str], object] | None:
    """``parse_carrier_csv`` with the keyword arguments it takes, or None if it does not exist."""
    try:
        module = importlib.import_module("screener.billing")
    except ImportError:
        return None
    parser = getattr(module, "parse_carrier_csv", None)
    if not callable(parser):
        return None
    params = inspect.signature(parser).parameters
    options = {"zone": RULE_CONTEXT.zone, "region": RULE_CONTEXT.region}
    kwargs = {k: v for k, v in options.items() if k in params}
    return lambda text: parser(text, **kwargs)


def check_billing(data: bytes) -> str:
    parser = billing_parser()
    assert parser is not None
    try:
        parser(data.decode("utf-8", "replace"))
    except (ImportFormatError, ValueError):
        return "rejected"
    return "parsed"


_BILL_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # header names, cells
    "time": (
        ("start_time", "time", "开始时间", "Call Start"),
        ("2026-11-23 10:00:00", "2026/11/23 10:00", "23/11/2026 10:00:00", "20261123100000",
         "2026-11-23T10:00:00+08:00", "1795447805", "1795447805123"),
    ),
    "calling": (
        ("calling_number", "caller", "from", "主叫号码"),
        ("+8613812341234", "13812341234", '"Caller" <13812341234>', "010 1234 5678"),
    ),
    "called": (
        ("called_number", "to", "dst", "被叫号码"),
        ("4008001234", "+864008001234"),
    ),
    "duration": (("duration", "billsec"), ("60", "60.5", "0:01:00", "1:00:00", "")),
}  # fmt: skip
_BILL_BAD_CELLS = (
    "anonymous", "", " ", "2026-11-23 10:00:00 +99:99", "2026-02-30 10:00", "10:00",
    "9999999999999", "99:59:59", "-1", "1e400", "NaN", "inf", '"', "a" * 200, "\x00",
    "0000-00-00 00:00:00", "+" + "9" * 40,
)  # fmt: skip


def gen_billing(rng: random.Random) -> bytes:
    """A carrier bill: a header naming time, calling and called (usually), then mostly valid
    rows with a few bad cells."""
    kinds = [k for k in _BILL_KINDS if k != "duration" or rng.random() < 0.5]
    if rng.random() < 0.1:
        kinds.remove(rng.choice(kinds))
    if rng.random() < 0.3:
        rng.shuffle(kinds)
    header = [rng.choice(_BILL_KINDS[k][0]) for k in kinds]
    if rng.random() < 0.2:
        kinds.append("other")
        header.append("cost")
    delimiter = rng.choice((",", ";", "\t", "|"))
    lines = ["Carrier bill, November"] if rng.random() < 0.1 else []
    lines.append(delimiter.join(header))
    for _ in range(rng.randint(0, 8)):
        cells = [
            rng.choice(_BILL_BAD_CELLS)
            if rng.random() < 0.1 or kind == "other"
            else rng.choice(_BILL_KINDS[kind][1])
            for kind in kinds
        ]
        lines.append(delimiter.join(cells))
    return rng.choice(("\n", "\r\n")).join(lines).encode()


# --- targets ----------------------------------------------------------------------------------


@dataclass
class Target:
    """One fuzzing target: how to make input ``i`` and how to check it."""

    name: str
    check: Callable[[bytes], str]
    generate: Callable[[random.Random], bytes]
    mutate: Mutator
    structured: float = 0.4  # share of generated (rather than mutated) inputs
    close: Callable[[], None] = lambda: None

    def make(self, rng: random.Random) -> bytes:
        return self.generate(rng) if rng.random() < self.structured else self.mutate(rng)


def build_targets(names: list[str] | None = None) -> dict[str, Target]:
    """The targets (only ``names`` if given; ``billing_csv`` only when its parser exists)."""
    csv_seeds, json_seeds = _rule_seeds()
    agi_seeds = [*_agi_transcripts(), gen_agi(random.Random(0))]
    targets: dict[str, Target] = {}
    wanted = set(names) if names else None

    def add(target: Target) -> None:
        if wanted is None or target.name in wanted:
            targets[target.name] = target

    add(Target("agi", check_agi, gen_agi, Mutator(agi_seeds, AGI_TOKENS)))
    if wanted is None or "ami_stream" in wanted:
        harness = AmiHarness()
        mutator = Mutator(_ami_seeds(), AMI_TOKENS)
        add(Target("ami_stream", harness.check, gen_ami, mutator, close=harness.close))
    add(Target("ami_event", check_ami_event, gen_ami, Mutator(_ami_seeds(), AMI_TOKENS)))
    add(
        Target(
            "rules_csv",
            lambda d: check_rules(d, "csv"),
            gen_rules_csv,
            Mutator(csv_seeds, RULE_TOKENS),
        )
    )
    add(
        Target(
            "rules_json",
            lambda d: check_rules(d, "json"),
            gen_rules_json,
            Mutator(json_seeds, RULE_TOKENS),
        )
    )
    if billing_parser() is not None:
        seeds = [gen_billing(random.Random(n)) for n in range(20)]
        add(Target("billing_csv", check_billing, gen_billing, Mutator(seeds, RULE_TOKENS)))
    if wanted is not None and wanted - set(targets) - {"billing_csv"}:
        raise SystemExit(f"unknown target(s): {', '.join(sorted(wanted - set(targets)))}")
    return targets


TARGET_NAMES = ("agi", "ami_stream", "ami_event", "rules_csv", "rules_json", "billing_csv")


# --- running ----------------------------------------------------------------------------------


@dataclass
class Failure:
    target: str
    index: int
    kind: str  # exception, property, slow, hang
    detail: str
    path: str = ""


@dataclass
class Stats:
    inputs: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    slowest: float = 0.0


def input_for(seed: int, target_no: int, index: int, target: Target, rng: random.Random) -> bytes:
    rng.seed((seed * 1_000_003 + target_no) * 10_000_000_019 + index)
    return target.make(rng)


def write_reproducer(out_dir: Path, failure: Failure, data: bytes) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{failure.target}-{failure.index:09d}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(
        f"target {failure.target} input {failure.index}: {failure.kind}\n{failure.detail}\n"
        f"replay: python -m bench.fuzz --replay {path}\n"
    )
    return str(path)


def run_one(target: Target, data: bytes, bound: float) -> tuple[str, float, Failure | None]:
    """Check one input: (outcome, seconds, failure or None)."""
    start = time.perf_counter()
    try:
        outcome = target.check(data)
    except PropertyFailure as e:
        return "failed", time.perf_counter() - start, Failure(target.name, -1, "property", str(e))
    except Exception as e:
        detail = "".join(traceback.format_exception(e))[-4000:]
        return "failed", time.perf_counter() - start, Failure(target.name, -1, "exception", detail)
    elapsed = time.perf_counter() - start
    if elapsed > bound:
        return outcome, elapsed, Failure(target.name, -1, "slow", f"{elapsed:.3f}s > {bound}s")
    return outcome, elapsed, None


def run_range(
    target: Target,
    target_no: int,
    start: int,
    stop: int,
    *,
    seed: int,
    bound: float,
    out_dir: Path,
    progress: Any = None,
    report: Callable[[Failure], None] | None = None,
) -> Stats:
    """Inputs ``start..stop-1`` of one target, in this process."""
    stats = Stats()
    rng = random.Random()
    began = time.perf_counter()
    for index in range(start, stop):
        if progress is not None:
            progress.value = index
        data = input_for(seed, target_no, index, target, rng)
        outcome, elapsed, failure = run_one(target, data, bound)
        stats.inputs += 1
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        stats.slowest = max(stats.slowest, elapsed)
        if failure is not None:
            failure.index = index
            failure.path = write_reproducer(out_dir, failure, data)
            stats.failures += 1
            if report is not None:
                report(failure)
    stats.seconds = time.perf_counter() - began
    return stats


def _worker(
    factory: Callable[[], Target],
    target_no: int,
    start: int,
    stop: int,
    seed: int,
    bound: float,
    out_dir: str,
    progress: Any,
    results: Any,
) -> None:
    logging.disable(logging.CRITICAL)  # the code under test logs hostile input at every turn
    target = factory()
    try:
        stats = run_range(
            target,
            target_no,
            start,
            stop,
            seed=seed,
            bound=bound,
            out_dir=Path(out_dir),
            progress=progress,
            report=lambda f: results.put(("failure", f)),
        )
    finally:
        target.close()
    results.put(("stats", stats))


@dataclass
class _Worker:
    process: Any
    progress: Any  # shared: the index of the input being checked
    start: int
    stop: int
    last: int
    since: float  # when ``last`` was seen to change


class _Pool:
    """Worker processes for one target's inputs; a stalled or crashed worker is recorded as a
    failure of the input it was on, and a new worker takes over after that input."""

    def __init__(self, name: str, target_no: int, *, seed: int, bound: float,
                 hang_seconds: float, out_dir: Path,
                 factory: Callable[[], Target] | None = None) -> None:  # fmt: skip
        self.factory = factory or (lambda: build_targets([name])[name])
        self.name, self.target_no, self.seed = name, target_no, seed
        self.bound, self.hang_seconds, self.out_dir = bound, hang_seconds, out_dir
        self.ctx = mp.get_context("fork")
        self.results = self.ctx.Queue()
        self.workers: list[_Worker] = []
        self.awaited = 0  # stats messages still to come
        self.total = Stats()
        self.failures: list[Failure] = []

    def launch(self, a: int, b: int) -> None:
        progress = self.ctx.Value("q", a, lock=False)
        args = (self.factory, self.target_no, a, b, self.seed, self.bound, str(self.out_dir),
                progress, self.results)  # fmt: skip
        process = self.ctx.Process(target=_worker, args=args, daemon=True)
        process.start()
        self.workers.append(_Worker(process, progress, a, b, a, time.monotonic()))
        self.awaited += 1

    def run(self, count: int, jobs: int) -> tuple[Stats, list[Failure]]:
        per = -(-count // jobs)
        for a in range(0, count, per):
            self.launch(a, min(count, a + per))
        began = time.perf_counter()
        while self.workers or self.awaited:
            try:
                kind, item = self.results.get(timeout=0.5)
            except queue.Empty:
                for worker in list(self.workers):
                    self._check(worker, time.monotonic())
                continue
            if kind == "failure":
                self.failures.append(item)
            else:
                self._add(item)
        self.total.seconds = time.perf_counter() - began
        return self.total, self.failures

    def _add(self, stats: Stats) -> None:
        self.awaited -= 1
        self.total.inputs += stats.inputs
        self.total.failures += stats.failures
        self.total.slowest = max(self.total.slowest, stats.slowest)
        for k, v in stats.outcomes.items():
            self.total.outcomes[k] = self.total.outcomes.get(k, 0) + v

    def _check(self, worker: _Worker, now: float) -> None:
        index = worker.progress.value
        if not worker.process.is_alive():
            worker.process.join()
            self.workers.remove(worker)
            if worker.process.exitcode != 0:
                self._lost(worker, index, "crash", f"worker exit {worker.process.exitcode}")
        elif index != worker.last:
            worker.last, worker.since = index, now
        elif now - worker.since > self.hang_seconds:
            worker.process.kill()
            worker.process.join()
            self.workers.remove(worker)
            self._lost(worker, index, "hang", f"no progress for {self.hang_seconds}s")

    def _lost(self, worker: _Worker, index: int, kind: str, detail: str) -> None:
        """A worker died on input ``index``: record it, count what it had done, go on after it."""
        self.awaited -= 1
        target = self.factory()
        data = input_for(self.seed, self.target_no, index, target, random.Random())
        target.close()
        failure = Failure(self.name, index, kind, detail)
        failure.path = write_reproducer(self.out_dir, failure, data)
        self.failures.append(failure)
        self.total.failures += 1
        self.total.inputs += index - worker.start + 1
        done = index - worker.start
        self.total.outcomes["uncounted"] = self.total.outcomes.get("uncounted", 0) + done
        if index + 1 < worker.stop:
            self.launch(index + 1, worker.stop)


def replay(path: Path, target_name: str | None) -> int:
    name = target_name or path.name.rsplit("-", 1)[0]
    target = build_targets([name])[name]
    data = path.read_bytes()
    outcome, elapsed, failure = run_one(target, data, float("inf"))
    print(f"{name} {path}: {outcome} in {elapsed * 1000:.1f} ms")
    if failure is not None:
        print(failure.detail)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="total, split over targets")
    parser.add_argument("--targets", default=",".join(TARGET_NAMES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--time-bound", type=float, default=2.0, help="seconds per input")
    parser.add_argument("--hang-seconds", type=float, default=20.0)
    parser.add_argument("--out-dir", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--replay", type=Path, help="check one reproducer file and exit")
    a = parser.parse_args(argv)
    if a.replay:
        return replay(a.replay, None if "," in a.targets else a.targets)
    names = [n for n in a.targets.split(",") if n]
    if "billing_csv" in names and billing_parser() is None:
        names.remove("billing_csv")
        print("billing_csv: skipped, screener.billing.parse_carrier_csv does not exist")
    per_target = a.inputs // len(names)
    print(f"fuzz seed={a.seed} jobs={a.jobs} inputs/target={per_target} bound={a.time_bound}s")
    summary: dict[str, dict[str, Any]] = {}
    all_failures: list[Failure] = []
    began = time.perf_counter()
    for number, name in enumerate(TARGET_NAMES):
        if name not in names:
            continue
        pool = _Pool(
            name,
            number,
            seed=a.seed,
            bound=a.time_bound,
            hang_seconds=a.hang_seconds,
            out_dir=a.out_dir,
        )
        stats, failures = pool.run(per_target, a.jobs)
        all_failures += failures
        rate = stats.inputs / stats.seconds if stats.seconds else 0.0
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(stats.outcomes.items()))
        print(
            f"{name:11} {stats.inputs:>9} inputs {stats.seconds:8.1f} s {rate:9.0f} inputs/s "
            f"failures={stats.failures} slowest={stats.slowest * 1000:.0f}ms  {outcomes}"
        )
        summary[name] = {
            "inputs": stats.inputs,
            "seconds": round(stats.seconds, 2),
            "inputs_per_second": round(rate),
            "failures": stats.failures,
            "slowest_ms": round(stats.slowest * 1000, 1),
            "outcomes": stats.outcomes,
        }
    seconds = time.perf_counter() - began
    total = sum(s["inputs"] for s in summary.values())
    print(
        f"total {total} inputs in {seconds:.1f} s ({total / seconds:.0f}/s), "
        f"{len(all_failures)} failure(s)"
    )
    for f in all_failures[:50]:
        print(f"  {f.target} #{f.index} {f.kind}: {f.detail.strip().splitlines()[-1][:160]}")
        print(f"    reproducer: {f.path}")
    print(
        json.dumps(
            {
                "benchmark": "fuzz",
                "seed": a.seed,
                "jobs": a.jobs,
                "inputs": total,
                "seconds": round(seconds, 1),
                "inputs_per_second": round(total / seconds) if seconds else 0,
                "failures": len(all_failures),
                "targets": summary,
            }
        )
    )
    return 1 if all_failures else 0


if __name__ == "__main__":
    sys.exit(main())
