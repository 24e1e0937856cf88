"""The sans-IO FastAGI codec: bytes in, events out; every case also fed one byte at a time.

Transcripts in tests/fixtures/agi/*.txt: `>> ` lines are what screener writes, `<< ` lines what
Asterisk writes (`<<` alone is an empty line), escapes `\\r`, `\\xNN`, `\\\\`, and `{nonce}`.
"""

import base64
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screener.agi_protocol import (
    CLOSED,
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_ENV_LINES,
    MAX_LINE_BYTES,
    MAX_REPLY_LINES,
    NEED_DATA,
    AgiCommand,
    AgiConnection,
    AgiHangup,
    AgiReply,
    AgiRequest,
    AgiState,
    Answer,
    Exec,
    GetData,
    GetFullVariable,
    GetVariable,
    Hangup,
    Noop,
    SetVariable,
    StreamFile,
    Verbose,
    parse_reply,
    quote,
)
from screener.errors import AgiProtocolError, LocalAgiError, RemoteAgiError

FIXTURES = Path(__file__).parent / "fixtures" / "agi"
NONCE = "0123456789abcdef0123456789abcdef"
FENCE = b'GET FULL VARIABLE "0123456789abcdef0123456789abcdef"\n'
FENCE_REPLY = b"200 result=1 (0123456789abcdef0123456789abcdef)\n"
ARG = base64.b64encode(b"0612345678").decode()

EOF = b""


@dataclass(frozen=True, slots=True)
class Raw:
    """A command line as-is, to make Asterisk answer 510/520 in transcripts."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = False
    line: bytes

    def serialize(self) -> bytes:
        return self.line


def env(
    *,
    script: str | None = "screen",
    callerid: str = "0612345678",
    calleridname: str = "Alice",
    dnid: str = "2000",
    rdnis: str = "unknown",
    extension: str = "2000",
    args: Sequence[str] = (ARG,),
) -> bytes:
    """What Asterisk 22 writes (res_agi.c launch_netscript + setup_env), terminator included."""
    lines = ["agi_network: yes"]
    if script is not None:
        lines.append(f"agi_network_script: {script}")
    lines += [
        f"agi_request: agi://127.0.0.1:4573/{script or ''}",
        "agi_channel: PJSIP/caller-00000003",
        "agi_language: en",
        "agi_type: PJSIP",
        "agi_uniqueid: 1732368000.7",
        "agi_version: 22.10.1",
        f"agi_callerid: {callerid}",
        f"agi_calleridname: {calleridname}",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        f"agi_dnid: {dnid}",
        f"agi_rdnis: {rdnis}",
        "agi_context: inbound",
        f"agi_extension: {extension}",
        "agi_priority: 3",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140041298503360",
    ]
    lines += [f"agi_arg_{i}: {arg}" for i, arg in enumerate(args, 1)]
    return ("\n".join(lines) + "\n\n").encode()


GENUINE = env()

Step = bytes | AgiCommand


def summarize(event: object) -> tuple[Any, ...]:
    match event:
        case AgiRequest():
            return ("request", event.script, dict(event.params), event.args, event.suspicious)
        case AgiReply():
            return ("reply", event.code, event.result, event.data)
        case AgiHangup():
            return ("hangup",)
    assert event is CLOSED, event
    return ("closed",)


def pump(conn: AgiConnection, out: list[tuple[Any, ...]]) -> None:
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(summarize(event))
        if event is CLOSED:
            return


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    if not data:
        yield data
    for i in range(0, len(data), size):
        yield data[i : i + size]


def drive(steps: Sequence[Step], size: int) -> list[tuple[Any, ...]]:
    """Run steps (bytes from Asterisk, or a command to send) feeding `size` bytes at a time."""
    conn = AgiConnection(NONCE)
    assert conn.start() == FENCE
    out: list[tuple[Any, ...]] = []
    try:
        for step in steps:
            if isinstance(step, bytes):
                for chunk in chunks(step, size):
                    conn.receive_data(chunk)
                    pump(conn, out)
            else:
                conn.send(step)
    except AgiProtocolError as e:
        out.append(("error", type(e)))
        assert conn.state is AgiState.ERROR or isinstance(e, LocalAgiError)
    return out


def check(steps: Sequence[Step], expected: list[tuple[Any, ...]]) -> None:
    assert drive(steps, 1 << 20) == expected
    assert drive(steps, 1) == expected  # h11's rule: every case also one byte at a time
    assert drive(steps, 7) == expected


def request(
    script: str = "screen",
    params: dict[str, str] | None = None,
    args: tuple[str, ...] = (ARG,),
    suspicious: tuple[str, ...] = (),
) -> tuple[Any, ...]:
    return ("request", script, params or {}, args, suspicious)


def reply(code: int, result: str = "", data: str | None = None) -> tuple[Any, ...]:
    return ("reply", code, result, data)


HANGUP = ("hangup",)
CLOSE = ("closed",)


def error(kind: type[AgiProtocolError]) -> tuple[Any, ...]:
    return ("error", kind)


# --- bytes in, events out -----------------------------------------------------------------------

CASES: dict[str, tuple[list[Step], list[tuple[Any, ...]]]] = {
    "request then EOF": ([GENUINE + FENCE_REPLY, EOF], [request(), CLOSE]),
    "no request until the fence reply": ([GENUINE], []),
    "connect and close": ([EOF], [CLOSE]),
    "close during environment": ([GENUINE[:50].rpartition(b"\n")[0] + b"\n", EOF], [CLOSE]),
    "close mid-line": ([GENUINE[:50], EOF], [error(RemoteAgiError)]),
    "no script, no args": (
        [env(script=None, args=()) + FENCE_REPLY],
        [request(script="", args=())],
    ),
    "query string": (
        [env(script="screen?hotline=sales&lang=fr&lang=en&flag") + FENCE_REPLY],
        [request(params={"hotline": "sales", "lang": "en", "flag": ""})],
    ),
    "script path is percent-decoded and trimmed": (
        [env(script="screen%20two/") + FENCE_REPLY],
        [request(script="screen two")],
    ),
    "three args, one empty": (
        [env(args=("a", "", "c d")) + FENCE_REPLY],
        [request(args=("a", "", "c d"))],
    ),
    "set variable": (
        [GENUINE + FENCE_REPLY, SetVariable("V", "x"), b"200 result=1\n"],
        [request(), reply(200, "1")],
    ),
    "get variable is fenced": (
        [GENUINE + FENCE_REPLY, GetVariable("V"), b"200 result=1 (a (b) c)\n" + FENCE_REPLY],
        [request(), reply(200, "1", "a (b) c")],
    ),
    "get variable unset": (
        [GENUINE + FENCE_REPLY, GetVariable("V"), b"200 result=0\n" + FENCE_REPLY],
        [request(), reply(200, "0")],
    ),
    "reply held until its fence": (
        [GENUINE + FENCE_REPLY, GetVariable("V"), b"200 result=1 ()\n"],
        [request()],
    ),
    "value with a line break": (
        [
            GENUINE + FENCE_REPLY,
            GetVariable("V"),
            b"200 result=1 (1)\n200 result=1 (forged)\n" + FENCE_REPLY,
        ],
        [request(), error(RemoteAgiError)],
    ),
    "HANGUP before an echoed reply is genuine": (
        [GENUINE + FENCE_REPLY, GetVariable("V"), b"HANGUP\n200 result=0\n" + FENCE_REPLY],
        [request(), HANGUP, reply(200, "0")],
    ),
    "HANGUP between an echoed reply and its fence is dropped": (
        [GENUINE + FENCE_REPLY, GetVariable("V"), b"200 result=0\nHANGUP\n" + FENCE_REPLY],
        [request(), reply(200, "0")],
    ),
    "stream file": (
        [GENUINE + FENCE_REPLY, StreamFile("x", "#"), b"200 result=35 endpos=1234\n"],
        [request(), reply(200, "35")],
    ),
    "get data timeout": (
        [GENUINE + FENCE_REPLY, GetData("x", 3000, 4), b"200 result=12 (timeout)\n"],
        [request(), reply(200, "12", "timeout")],
    ),
    "HANGUP out of band, then the reply": (
        [GENUINE + FENCE_REPLY, StreamFile("x"), b"HANGUP\n200 result=-1 endpos=0\n"],
        [request(), HANGUP, reply(200, "-1")],
    ),
    "HANGUP while idle": ([GENUINE + FENCE_REPLY + b"HANGUP\n", EOF], [request(), HANGUP, CLOSE]),
    "HANGUP between environment and fence reply": (
        [GENUINE + b"HANGUP\n" + FENCE_REPLY, SetVariable("V", "1"), b"200 result=1\n"],
        [request(), HANGUP, reply(200, "1")],
    ),
    "511 on a dead channel": (
        [GENUINE + FENCE_REPLY, Answer(), b"511 Command Not Permitted on a dead channel\n"],
        [request(), reply(511)],
    ),
    "510 unknown command": (
        [GENUINE + FENCE_REPLY, Raw(b"FROB\n"), b"510 Invalid or unknown command\n"],
        [request(), reply(510)],
    ),
    "520 multi-line usage, HANGUP and blank lines inside": (
        [
            GENUINE + FENCE_REPLY,
            Raw(b"GET DATA\n"),
            b"520-Invalid command syntax.  Proper usage follows:\nUsage: GET DATA\n\nHANGUP\n"
            b"520 End of proper usage.\n",
        ],
        [request(), reply(520)],
    ),
    "520 on one line": (
        [GENUINE + FENCE_REPLY, Raw(b"X\n"), b"520 Invalid command syntax.  Proper usage n\n"],
        [request(), reply(520)],
    ),
    "reply with nothing asked": (
        [GENUINE + FENCE_REPLY + b"200 result=1\n"],
        [request(), error(RemoteAgiError)],
    ),
    "garbage instead of a reply": (
        [GENUINE + FENCE_REPLY, Noop(), b"hello\n"],
        [request(), error(RemoteAgiError)],
    ),
    "reply line with CR": (
        [GENUINE + FENCE_REPLY, Noop(), b"200 result=0\r\n"],
        [request(), error(RemoteAgiError)],
    ),
    "200 without result=": (
        [GENUINE + FENCE_REPLY, Noop(), b"200 ok\n"],
        [request(), error(RemoteAgiError)],
    ),
    "HTTP client": ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], [error(RemoteAgiError)]),
    "fence reply before any blank line": (
        [GENUINE.rstrip(b"\n") + b"\n" + FENCE_REPLY],
        [error(RemoteAgiError)],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CASES.values(), ids=CASES.keys())
def test_events(steps: list[Step], expected: list[tuple[Any, ...]]) -> None:
    check(steps, expected)


# --- hostile environments -----------------------------------------------------------------------

LATER_KEYS = ["callingani2", "callington", "callingtns", "dnid", "rdnis", "context", "extension"]
LATER_KEYS += ["priority", "enhanced", "accountcode"]

HOSTILE: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "CR LF in caller ID": (
        {"callerid": "123\r\nAction: Originate"},
        ("control-character:agi_callerid", "malformed-line"),
    ),
    "CR alone": ({"callerid": "12\r3"}, ("control-character:agi_callerid",)),
    "early end": (
        {"callerid": "123\n\n200 result=1 (forged)\nHANGUP"},
        ("blank-line", "malformed-line"),
    ),
    "forged argument": ({"calleridname": "x\nagi_arg_1: ZmFrZQ=="}, ("misplaced-arg",)),
    "forged script": (
        {"callerid": "1\nagi_network_script: admin"},
        ("duplicate:agi_network_script",),
    ),
    "forged key after its genuine place": (
        {"calleridname": "x\nagi_callerid: 1"},
        ("duplicate:agi_callerid",),
    ),
    "unknown key": ({"dnid": "1\nagi_evil: 1"}, ("unknown-key",)),
    "forged tail with a blank line": (
        {
            "calleridname": "x\nagi_callingpres: 0\nagi_threadid: 1\nagi_arg_1: ZmFrZQ==\n",
        },
        (
            "blank-line",
            "misplaced-arg",
            "duplicate:agi_callingpres",
            *(f"out-of-order:agi_{k}" for k in LATER_KEYS),
            "duplicate:agi_threadid",
        ),
    ),
    "forged numbering": ({"extension": "2000\nagi_arg_7: x"}, ("misplaced-arg",)),
    "HANGUP injected in the rdnis": ({"rdnis": "1\nHANGUP"}, ("malformed-line",)),
}


@pytest.mark.parametrize(("fields", "reasons"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_environment(fields: dict[str, str], reasons: tuple[str, ...]) -> None:
    data = env(**fields) + FENCE_REPLY
    check(
        [data, SetVariable("V", "1"), b"200 result=1\n"],
        [request(suspicious=reasons), reply(200, "1")],
    )


def test_forged_script_without_a_genuine_one_is_out_of_order() -> None:
    check(
        [env(script=None, callerid="1\nagi_network_script: admin") + FENCE_REPLY],
        [request(script="admin", suspicious=("out-of-order:agi_network_script",))],
    )


def test_missing_keys_and_bad_numbering() -> None:
    data = b"agi_network: yes\nagi_arg_2: b\n\n" + FENCE_REPLY
    (summary,) = drive([data], 1)
    assert summary[3] == ("b",)
    assert summary[4][0] == "arg-numbering"
    assert "missing:agi_uniqueid" in summary[4]
    assert "missing:agi_network_script" not in summary[4]


def test_stray_line_after_terminator_is_flagged() -> None:
    check(
        [GENUINE + b"200 result=1\n" + FENCE_REPLY],
        [request(suspicious=("stray-after-environment",))],
    )


def test_env_values_and_which_occurrence_wins() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(
        env(calleridname="x\nagi_uniqueid: 666\nagi_threadid: 1\nagi_priority: 9") + FENCE_REPLY
    )
    event = conn.next_event()
    assert isinstance(event, AgiRequest)
    assert event.uniqueid == "1732368000.7"  # written before any caller text: first wins
    assert event.channel == "PJSIP/caller-00000003"
    assert event.env["agi_threadid"] == "140041298503360"  # written after: last wins
    assert event.env["agi_priority"] == "3"
    assert event.env["agi_calleridname"] == "x"
    assert event.env["agi_accountcode"] == ""
    assert event.env["agi_arg_1"] == ARG
    assert "duplicate:agi_uniqueid" in event.suspicious
    hash(event)  # usable as a dict key despite its mappings


def test_invalid_utf8_is_replaced_not_flagged() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(GENUINE.replace(b"Alice", b"Ren\xe9") + FENCE_REPLY)
    event = conn.next_event()
    assert isinstance(event, AgiRequest)
    assert event.env["agi_calleridname"] == "Ren\ufffd"
    assert event.suspicious == ()


# --- limits ---------------------------------------------------------------------------------------


def test_oversized_line_fails_before_its_end() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(b"agi_network: yes\nagi_callerid: " + b"1" * MAX_LINE_BYTES)
    with pytest.raises(RemoteAgiError) as info:
        conn.next_event()
    assert info.value.hint
    assert conn.state is AgiState.ERROR
    with pytest.raises(LocalAgiError):
        conn.next_event()


def test_longest_line_is_accepted() -> None:
    line = b"agi_callerid: " + b"1" * (MAX_LINE_BYTES - 14)
    check(
        [b"agi_network: yes\n" + line + b"\n\n" + FENCE_REPLY],
        [request(script="", args=(), suspicious=CASES_MISSING)],
    )


CASES_MISSING = tuple(
    f"missing:agi_{k}"
    for k in [
        *["request", "channel", "language", "type", "uniqueid", "version", "calleridname"],
        *["callingpres", "callingani2", "callington", "callingtns", "dnid", "rdnis", "context"],
        *["extension", "priority", "enhanced", "accountcode", "threadid"],
    ]
)


def test_line_with_newline_past_the_limit() -> None:
    data = b"agi_network: yes\nagi_callerid: " + b"1" * MAX_LINE_BYTES + b"\n"
    assert drive([data], 1 << 20) == [error(RemoteAgiError)]


def test_too_many_environment_lines() -> None:
    data = b"agi_network: yes\n" + b"x\n" * MAX_ENV_LINES
    assert drive([data], 1 << 20) == [error(RemoteAgiError)]


def test_too_many_environment_bytes() -> None:
    data = b"agi_network: yes\n" + (b"x" * 1000 + b"\n") * (MAX_ENV_BYTES // 1000 + 1)
    assert drive([data], 1 << 20) == [error(RemoteAgiError)]


def test_multi_line_reply_too_long() -> None:
    steps: list[Step] = [
        GENUINE + FENCE_REPLY,
        Raw(b"X\n"),
        b"520-usage\n" + b"more\n" * MAX_REPLY_LINES,
    ]
    assert drive(steps, 1 << 20) == [request(), error(RemoteAgiError)]


# --- our side out of turn -------------------------------------------------------------------------


def test_send_before_request() -> None:
    conn = AgiConnection(NONCE)
    with pytest.raises(LocalAgiError):
        conn.send(Noop())
    conn.start()
    with pytest.raises(LocalAgiError, match="syncing"):
        conn.send(Noop())


def test_start_twice() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    with pytest.raises(LocalAgiError, match="unexpected start"):
        conn.start()


def test_send_while_a_reply_is_pending() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(GENUINE + FENCE_REPLY)
    assert isinstance(conn.next_event(), AgiRequest)
    conn.send(Noop())
    assert conn.state is AgiState.AWAITING_REPLY
    with pytest.raises(LocalAgiError):
        conn.send(Noop())


def test_send_after_close() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(EOF)
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED
    with pytest.raises(LocalAgiError):
        conn.send(Noop())


def test_data_after_eof() -> None:
    conn = AgiConnection(NONCE)
    conn.receive_data(EOF)
    conn.receive_data(EOF)
    with pytest.raises(LocalAgiError):
        conn.receive_data(b"x")


def test_bad_nonce() -> None:
    with pytest.raises(LocalAgiError):
        AgiConnection("${X}")


def test_random_nonce_per_connection() -> None:
    assert AgiConnection().start() != AgiConnection().start()


def test_events_before_start_are_environment() -> None:
    conn = AgiConnection(NONCE)
    conn.receive_data(GENUINE + FENCE_REPLY)
    assert conn.next_event() is NEED_DATA  # the fence reply cannot be ours yet
    assert conn.state is AgiState.CONNECTED


# --- commands -------------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[AgiCommand, bytes]] = {
    "set": (SetVariable("SCREENER_VERDICT", "allow"), b'SET VARIABLE "SCREENER_VERDICT" "allow"\n'),
    "quotes": (SetVariable("V", 'a "b" \\c'), b'SET VARIABLE "V" "a \\"b\\" \\\\c"\n'),
    "utf8": (SetVariable("V", "Zo\u00e9"), 'SET VARIABLE "V" "Zo\u00e9"\n'.encode()),
    "get": (GetVariable("CALLERID(num)"), b'GET VARIABLE "CALLERID(num)"\n'),
    "get full": (GetFullVariable("${X}"), b'GET FULL VARIABLE "${X}"\n'),
    "verbose": (Verbose("hi there", 3), b'VERBOSE "hi there" 3\n'),
    "exec": (Exec("Playback", "beep,noanswer"), b'EXEC "Playback" "beep,noanswer"\n'),
    "exec bare": (Exec("Wait"), b'EXEC "Wait"\n'),
    "stream": (StreamFile("screener/notice"), b'STREAM FILE "screener/notice" ""\n'),
    "get data": (GetData("beep", 5000, 4), b'GET DATA "beep" 5000 4\n'),
    "answer": (Answer(), b"ANSWER\n"),
    "hangup": (Hangup(), b"HANGUP\n"),
    "noop": (Noop(), b"NOOP\n"),
    "noop text": (Noop("x"), b'NOOP "x"\n'),
}


@pytest.mark.parametrize(("command", "expected"), COMMANDS.values(), ids=COMMANDS.keys())
def test_serialize(command: AgiCommand, expected: bytes) -> None:
    assert command.serialize() == expected


BAD_COMMANDS: dict[str, AgiCommand] = {
    "LF": SetVariable("V", "a\nb"),
    "CR": SetVariable("V", "a\rb"),
    "NUL": SetVariable("V", "a\0b"),
    "CR in the name": GetVariable("A\rB"),
    "empty name": SetVariable("", "x"),
    "verbose level": Verbose("x", 5),
    "negative timeout": GetData("x", -1, 1),
    "surrogate": SetVariable("V", "\udcff"),
    "too long": SetVariable("V", "x" * MAX_COMMAND_BYTES),
    "too long once escaped": SetVariable("V", '"' * (MAX_COMMAND_BYTES // 2)),
}


@pytest.mark.parametrize("command", BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
def test_unsafe_commands_are_refused(command: AgiCommand) -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(GENUINE + FENCE_REPLY)
    conn.next_event()
    with pytest.raises(LocalAgiError):
        conn.send(command)
    assert conn.state is AgiState.IDLE  # nothing was sent: still our turn


def test_longest_command_fits() -> None:
    command = SetVariable("V", "x" * (MAX_COMMAND_BYTES - len(b'SET VARIABLE "V" ""\n')))
    assert len(command.serialize()) == MAX_COMMAND_BYTES


def test_quote() -> None:
    assert quote("") == '""'
    with pytest.raises(LocalAgiError) as info:
        quote("\n")
    assert "base64" in info.value.hint


def parse_args(line: str) -> list[str]:
    """A port of res_agi.c parse_args() (Asterisk 22), to check our quoting against it."""
    argv: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
                argv.append("")
            escaped = False
            continue
        if char in " \t" and not quoted and not escaped:
            if current is not None:
                argv[-1] = "".join(current)
            current = None
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            current = []
            argv.append("")
        current.append(char)
        escaped = False
    if current is not None:
        argv[-1] = "".join(current)
    return argv


@given(
    name=st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]), min_size=1),
    value=st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"])),
)
def test_quoting_round_trips_through_asterisks_parser(name: str, value: str) -> None:
    line = SetVariable(name, value).serialize()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_args(line[:-1].decode()) == ["SET", "VARIABLE", name, value]


# --- replies --------------------------------------------------------------------------------------

REPLIES = {
    "result=1": (200, "1", None),
    "result=1 (value)": (200, "1", "value"),
    "result=1 ()": (200, "1", ""),
    "result=1 (a) b)": (200, "1", "a) b"),
    "result=1 (a) x=1)": (200, "1", "a) x=1"),
    "result=1 (timeout) endpos=12": (200, "1", "timeout"),
    "result=-1 endpos=0": (200, "-1", None),
    "result= (timeout)": (200, "", "timeout"),
}


@pytest.mark.parametrize(("text", "expected"), REPLIES.items(), ids=REPLIES.keys())
def test_parse_reply(text: str, expected: tuple[int, str, str | None]) -> None:
    parsed = parse_reply(200, text)
    assert (parsed.code, parsed.result, parsed.data) == expected
    assert parsed.ok and parsed.text == text


@pytest.mark.parametrize(
    "text", ["", "result", "ok", "result=1 (open", "result=1 junk", "result=1  x=1"]
)
def test_parse_reply_malformed(text: str) -> None:
    with pytest.raises(RemoteAgiError):
        parse_reply(200, text)


def test_parse_reply_other_codes() -> None:
    assert parse_reply(510, "Invalid or unknown command") == AgiReply(
        510, "", None, "Invalid or unknown command"
    )
    assert not parse_reply(511, "x").ok


# --- transcripts ----------------------------------------------------------------------------------


def load(name: str) -> list[tuple[str, bytes]]:
    """Consecutive same-direction lines of a transcript, grouped."""
    groups: list[tuple[str, bytes]] = []
    for text in (FIXTURES / name).read_text("utf-8").splitlines():
        if not text or text.startswith("#"):
            continue
        direction, _, content = text.partition(" ")
        assert direction in (">>", "<<"), text
        raw = re.sub(
            rb"\\(r|\\|x[0-9a-fA-F]{2})",
            lambda m: {b"r": b"\r", b"\\": b"\\"}.get(m[1]) or bytes([int(m[1][1:], 16)]),
            content.replace("{nonce}", NONCE).encode(),
        )
        if groups and groups[-1][0] == direction:
            groups[-1] = (direction, groups[-1][1] + raw + b"\n")
        else:
            groups.append((direction, raw + b"\n"))
    return groups


def replay(name: str, commands: list[AgiCommand], size: int) -> list[tuple[Any, ...]]:
    groups = load(name)
    assert groups[0] == (">>", FENCE)
    sent: list[bytes] = []
    steps: list[Step] = []
    for direction, data in groups[1:]:
        if direction == "<<":
            steps.append(data)
        else:
            sent.append(data)
            steps.append(commands[len(sent) - 1])
    assert [c.serialize() + (FENCE if c.echoes_value else b"") for c in commands] == sent
    return drive([*steps, EOF], size)


TRANSCRIPTS: dict[str, tuple[list[AgiCommand], list[tuple[Any, ...]]]] = {
    "normal_call.txt": (
        [
            GetVariable("SCREENER_LIST"),
            SetVariable("SCREENER_VERDICT", "allow"),
            Verbose("screener: verdict=allow", 3),
        ],
        [
            request(args=("MDYxMjM0NTY3OA==",)),
            reply(200, "0"),
            reply(200, "1"),
            reply(200, "1"),
            CLOSE,
        ],
    ),
    "query_script.txt": (
        [Answer(), StreamFile("screener/notice", "#")],
        [
            request(
                params={"hotline": "sales", "lang": "fr"}, args=("MDAzMzYxMjM0NTY3OA==", "2000")
            ),
            reply(200, "0"),
            reply(200, "0"),
            CLOSE,
        ],
    ),
    "hangup_out_of_band.txt": (
        [StreamFile("screener/notice"), SetVariable("SCREENER_VERDICT", "allow"), Answer()],
        [
            request(args=("MDYxMjM0NTY3OA==",)),
            reply(200, "-1"),
            HANGUP,
            reply(200, "1"),
            reply(511),
            CLOSE,
        ],
    ),
    "hangup_during_environment.txt": (
        [SetVariable("SCREENER_VERDICT", "allow")],
        [request(args=("MDYxMjM0NTY3OA==",)), HANGUP, reply(200, "1"), CLOSE],
    ),
    "usage_520.txt": (
        [Raw(b"GET DATA\n"), Raw(b"FROB\n")],
        [request(args=()), reply(520), reply(510), CLOSE],
    ),
    "hostile_crlf_callerid.txt": (
        [SetVariable("SCREENER_VERDICT", "block")],
        [
            request(
                args=("MTIzDQpBY3Rpb246IE9yaWdpbmF0ZQ==",),
                suspicious=("control-character:agi_callerid", "malformed-line"),
            ),
            reply(200, "1"),
            CLOSE,
        ],
    ),
    "hostile_blank_line.txt": (
        [SetVariable("SCREENER_VERDICT", "block")],
        [
            request(
                args=("MTIzCgoyMDAgcmVzdWx0PTEgKGZvcmdlZCkKSEFOR1VQ",),
                suspicious=("blank-line", "malformed-line", "misplaced-arg"),
            ),
            reply(200, "1"),
            CLOSE,
        ],
    ),
    "hostile_forged_environment.txt": (
        [],
        [
            request(
                args=("MDYxMjM0NTY3OA==",),
                suspicious=(
                    "blank-line",
                    "duplicate:agi_network_script",
                    "misplaced-arg",
                    "duplicate:agi_callingpres",
                    "duplicate:agi_callingani2",
                    "duplicate:agi_callington",
                    "duplicate:agi_callingtns",
                    "duplicate:agi_dnid",
                    "duplicate:agi_rdnis",
                    "duplicate:agi_context",
                    "duplicate:agi_extension",
                    "duplicate:agi_priority",
                    "duplicate:agi_enhanced",
                    "duplicate:agi_accountcode",
                    "duplicate:agi_threadid",
                ),
            ),
            CLOSE,
        ],
    ),
    "invalid_utf8.txt": ([], [request(args=("MDYxMjM0NTY3OA==",)), CLOSE]),
    "echo_injection.txt": (
        [GetVariable("PJSIP_HEADER(read,X-Account)")],
        [request(args=("MTIz",)), error(RemoteAgiError)],
    ),
}


@pytest.mark.parametrize("name", TRANSCRIPTS.keys())
@pytest.mark.parametrize("size", [1 << 20, 1, 5])
def test_transcript(name: str, size: int) -> None:
    commands, expected = TRANSCRIPTS[name]
    assert replay(name, commands, size) == expected


def test_every_fixture_is_replayed() -> None:
    assert {p.name for p in FIXTURES.glob("*.txt")} == set(TRANSCRIPTS)


def test_forged_environment_keeps_genuine_values() -> None:
    conn = AgiConnection(NONCE)
    conn.start()
    conn.receive_data(
        b"".join(d for direction, d in load("hostile_forged_environment.txt") if direction == "<<")
    )
    event = conn.next_event()
    assert isinstance(event, AgiRequest)
    assert event.script == "screen"
    assert event.env["agi_threadid"] == "140041298503360"
    assert event.uniqueid == "1732368700.19"


# --- properties -----------------------------------------------------------------------------------


def run_any(data: bytes, cuts: list[int]) -> list[tuple[Any, ...]]:
    """Feed data cut at `cuts`, sending a NOOP whenever it is our turn; never raise."""
    conn = AgiConnection(NONCE)
    conn.start()
    out: list[tuple[Any, ...]] = []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    try:
        for piece in [*pieces, EOF]:
            conn.receive_data(piece)
            while (event := conn.next_event()) is not NEED_DATA:
                out.append(summarize(event))
                if event is CLOSED:
                    return out
                if conn.state is AgiState.IDLE:
                    conn.send(Noop())
    except AgiProtocolError as e:
        out.append(("error", type(e).__name__))
    return out


LINES = st.sampled_from(
    [
        b"HANGUP\n",
        b"\n",
        b"200 result=1\n",
        b"200 result=1 (x)\n",
        b"520-usage\n",
        b"520 end\n",
        b"510 Invalid\n",
        b"agi_callerid: 1\n",
        b"agi_arg_1: x\n",
        b"agi_network: yes\n",
        FENCE_REPLY,
        b"\r\n",
        b"\xff\n",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", GENUINE, GENUINE + FENCE_REPLY]),
    body=st.lists(st.one_of(LINES, st.binary(max_size=40)), max_size=20).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_random_bytes_only_raise_protocol_errors_and_chunking_does_not_matter(
    prefix: bytes, body: bytes, cuts: list[int]
) -> None:
    data = prefix + body
    cuts = sorted({c for c in cuts if 0 < c < len(data)})  # an empty piece would mean EOF
    whole = run_any(data, [])
    assert run_any(data, cuts) == whole
    assert run_any(data, list(range(1, len(data)))) == whole


CALLER_TEXT = st.text(
    st.sampled_from('0123456789 abc:_\r\n"\\()HANGUPagi_arg_1result=\x00\u00e9'), max_size=30
)


@settings(max_examples=300)
@given(
    callerid=CALLER_TEXT,
    calleridname=CALLER_TEXT,
    dnid=CALLER_TEXT,
    rdnis=CALLER_TEXT,
    extension=CALLER_TEXT,
)
def test_caller_text_cannot_forge_what_matters(
    callerid: str, calleridname: str, dnid: str, rdnis: str, extension: str
) -> None:
    fields = {
        "callerid": callerid,
        "calleridname": calleridname,
        "dnid": dnid,
        "rdnis": rdnis,
        "extension": extension,
    }
    steps: list[Step] = [
        env(**fields, args=(ARG, "2000")) + FENCE_REPLY,
        SetVariable("V", "1"),
        b"200 result=1\n",
    ]
    (req, *rest) = drive(steps, 1 << 20)
    assert req[:4] == ("request", "screen", {}, (ARG, "2000"))
    assert rest == [reply(200, "1")]  # the first reply is Asterisk's, whatever the caller wrote
    if any("\n" in v or "\r" in v or "\0" in v for v in fields.values()):
        assert req[4], "an injected line break must be flagged"
