"""Sans-IO FastAGI codec: bytes from Asterisk in, events out; commands in, bytes out."""

# Theory of operation
# -------------------
# Asterisk connects, writes its AGI environment (`agi_key: value` lines ended by a blank line),
# then reads one command line at a time and answers each with `200 result=...` (or 510, 511, or a
# `520-` ... `520 ` block). It may also write an out-of-band `HANGUP` line at any point after the
# environment. `AgiConnection` turns received bytes into `AgiRequest` / `AgiReply` / `AgiHangup`
# events and commands into bytes, like h11: `receive_data()`, `next_event()`, `send()`. It never
# does I/O and never imports asyncio. Every state change goes through `_TRANSITIONS`.
#
# The environment is hostile. Asterisk writes caller-controlled values (agi_callerid,
# agi_calleridname, agi_dnid, agi_rdnis, agi_extension) unescaped, so a caller ID holding CR LF
# adds lines, and LF LF ends the environment early: a naive reader then takes the caller's text
# (e.g. a forged `200 result=1 (...)` or `HANGUP`) as replies to our first commands.
#
# Resynchronisation ("fences"). A fence is `GET FULL VARIABLE "<nonce>"`, with a random nonce
# per connection: Asterisk substitutes no variable in it and answers `200 result=1 (<nonce>)`, a
# line no caller can forge without knowing the nonce. It is allowed on dead channels, so it is
# always answered. `start()` returns a fence to write as soon as the connection opens: Asterisk
# writes its whole environment before it reads any command (res_agi.c setup_env, then run_agi),
# so the fence reply is the first byte after the complete environment, wherever a caller put
# blank lines. Until that reply arrives every line is environment: the genuine terminator is the
# LAST blank line before the fence reply, and only Asterisk's own `HANGUP` can sit between it and
# the fence reply. `AgiRequest` is emitted only then, with every anomaly listed in `suspicious`.
# Which environment value is kept when a key repeats follows from Asterisk's fixed key order:
# keys written before the first caller-controlled value (agi_network ... agi_version) keep their
# first occurrence, keys written after the last one (agi_priority ... agi_threadid, agi_arg_N)
# keep their last, and the arguments are the contiguous agi_arg_1..N block that ends the
# environment. Values in between may have been forged whenever `suspicious` is not empty: read
# the caller ID from a base64 argument (`AGI(agi://host/screen,${BASE64_ENCODE(...)})`).
#
# After the request, Asterisk writes only its replies and `HANGUP`, so no caller text can arrive
# unasked, except inside the reply to a command that echoes a value (GET VARIABLE, GET FULL
# VARIABLE). Those commands are sent with a fence pipelined behind them; their reply is released
# only when the fence reply follows it directly. A value holding a line break therefore raises
# `RemoteAgiError` instead of shifting later replies, and a `HANGUP` seen between an echoing reply
# and its fence is dropped, since it may be forged (Asterisk's answer 511 to the next command that
# needs a live channel reports a genuine hangup anyway).
#
# Guarantees, given that Asterisk writes the whole environment before reading a command (true of
# res_agi.c since FastAGI exists): a caller cannot make us read any reply that Asterisk did not
# send for the command it is paired with, cannot forge a HANGUP, and cannot change
# agi_network_script, agi_request, agi_channel, agi_uniqueid or the arguments (as long as the
# dialplan passes no caller text in them raw). Outside a `520-` block, lines that are not
# `^[0-9]{3}[ -]` or exactly `HANGUP` are never taken as replies; one that does not parse is a
# RemoteAgiError. Text is decoded as UTF-8 with U+FFFD for invalid bytes (as Asterisk does for SIP
# names); the caller's raw bytes are in the base64 argument.

import re
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import ClassVar, Final, Protocol
from urllib.parse import parse_qsl, unquote

from screener.errors import LocalAgiError, RemoteAgiError, ScreenerError

MAX_LINE_BYTES: Final = 8192
"""Longest line accepted from Asterisk, without its LF (Asterisk's own AGI_BUF_LEN)."""
MAX_ENV_LINES: Final = 200
"""Most lines accepted before the first fence reply (a genuine environment has ~25 + args)."""
MAX_ENV_BYTES: Final = 65536
"""Most bytes accepted before the first fence reply."""
MAX_REPLY_LINES: Final = 200
"""Most lines in one multi-line (`520-`) reply."""
MAX_COMMAND_BYTES: Final = 8191
"""Longest command we send, LF included: Asterisk's fgets() into 8192 bytes would split a longer
one and run its tail as a second command."""

_HANGUP_LINE: Final = b"HANGUP"


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The AGI environment, emitted once the first fence proved it complete.

    `suspicious` lists anomalies (`kind` or `kind:agi_key`, from a fixed vocabulary, so the part
    before `:` is safe as a metric label): `malformed-line`, `blank-line`, `duplicate:<key>`,
    `out-of-order:<key>`, `missing:<key>`, `unknown-key`, `misplaced-arg`, `arg-numbering`,
    `control-character:<key>`, `stray-after-environment`. Genuine Asterisk produces none.
    """

    env: Mapping[str, str] = field(hash=False)
    script: str
    params: Mapping[str, str] = field(hash=False)
    args: tuple[str, ...]
    suspicious: tuple[str, ...]

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.env.get("agi_channel", "")


@dataclass(frozen=True, slots=True)
class AgiReply:
    """Asterisk's answer to one command.

    `result` and `data` come from `200 result=<result> (<data>)` (empty / None for other codes);
    `text` is everything after the code, continuation lines of a `520-` block joined by LF.
    """

    code: int
    result: str
    data: str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200


@dataclass(frozen=True, slots=True)
class AgiHangup:
    """Asterisk's out-of-band `HANGUP` line: the caller has gone (not a reply to anything)."""


Event = AgiRequest | AgiReply | AgiHangup


class AgiHangupError(ScreenerError):
    """The channel hung up (511, `HANGUP`, or Asterisk closed the socket): the dialogue is over.

    Not a protocol error: callers let it reach the connection boundary, which logs it at INFO.
    """

    def __init__(self, message: str, reply: AgiReply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class Sentinel(Enum):
    """Non-events returned by `AgiConnection.next_event()`."""

    NEED_DATA = "need_data"
    CLOSED = "closed"


NEED_DATA: Final = Sentinel.NEED_DATA
CLOSED: Final = Sentinel.CLOSED


# --- commands -----------------------------------------------------------------------------------


class AgiCommand(Protocol):
    """Anything `AgiConnection.send()` accepts.

    `allowed_on_dead_channel` mirrors the `dead` column of res_agi.c's command table;
    `echoes_value` marks commands whose reply carries a value that may hold caller text.
    """

    allowed_on_dead_channel: ClassVar[bool]
    echoes_value: ClassVar[bool]

    def serialize(self) -> bytes: ...


def quote(value: str) -> str:
    """Quote one argument the way res_agi.c `parse_args()` unquotes it.

    Raises:
        LocalAgiError: the value holds CR, LF or NUL, which would end or cut the command line.
    """
    if "\r" in value or "\n" in value or "\0" in value:
        raise LocalAgiError(
            f"AGI argument holds CR, LF or NUL: {value[:40]!r}",
            hint="never pass caller-controlled text unfiltered; base64-encode it",
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(verb: str, *args: str | int) -> bytes:
    parts = [verb]
    for arg in args:
        if isinstance(arg, str):
            parts.append(quote(arg))
        elif arg < 0:
            raise LocalAgiError(f"{verb}: negative number {arg}")
        else:
            parts.append(str(arg))
    try:
        data = (" ".join(parts) + "\n").encode("utf-8")
    except UnicodeEncodeError as e:
        raise LocalAgiError(f"{verb}: argument is not valid Unicode ({e.reason})") from e
    if len(data) > MAX_COMMAND_BYTES:
        raise LocalAgiError(
            f"{verb}: command is {len(data)} bytes, Asterisk reads at most {MAX_COMMAND_BYTES}",
            hint="Asterisk would run the tail of a longer line as a second command",
        )
    return data


def _require_name(verb: str, name: str) -> None:
    if not name:
        raise LocalAgiError(f"{verb}: empty name")


@dataclass(frozen=True, slots=True)
class SetVariable:
    """`SET VARIABLE name value` (answer `200 result=1`)."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = False
    name: str
    value: str

    def serialize(self) -> bytes:
        _require_name("SET VARIABLE", self.name)
        return _line("SET VARIABLE", self.name, self.value)


@dataclass(frozen=True, slots=True)
class GetVariable:
    """`GET VARIABLE name` (answer `200 result=1 (value)` or `200 result=0`); fenced."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = True
    name: str

    def serialize(self) -> bytes:
        _require_name("GET VARIABLE", self.name)
        return _line("GET VARIABLE", self.name)


@dataclass(frozen=True, slots=True)
class GetFullVariable:
    """`GET FULL VARIABLE expression`: Asterisk substitutes `${...}` in it; fenced."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = True
    expression: str

    def serialize(self) -> bytes:
        _require_name("GET FULL VARIABLE", self.expression)
        return _line("GET FULL VARIABLE", self.expression)


@dataclass(frozen=True, slots=True)
class Verbose:
    """`VERBOSE message level` (level 1-4) to the Asterisk console."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = False
    message: str
    level: int = 1

    def serialize(self) -> bytes:
        if not 1 <= self.level <= 4:
            raise LocalAgiError(f"VERBOSE: level must be 1-4, not {self.level}")
        return _line("VERBOSE", self.message, self.level)


@dataclass(frozen=True, slots=True)
class Exec:
    """`EXEC application options` (options comma-separated, as in the dialplan)."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = False
    application: str
    options: str = ""

    def serialize(self) -> bytes:
        _require_name("EXEC", self.application)
        if self.options:
            return _line("EXEC", self.application, self.options)
        return _line("EXEC", self.application)


@dataclass(frozen=True, slots=True)
class StreamFile:
    """`STREAM FILE file escape_digits` (answer `200 result=<digit code> endpos=<n>`)."""

    allowed_on_dead_channel: ClassVar[bool] = False
    echoes_value: ClassVar[bool] = False
    filename: str
    escape_digits: str = ""

    def serialize(self) -> bytes:
        _require_name("STREAM FILE", self.filename)
        return _line("STREAM FILE", self.filename, self.escape_digits)


@dataclass(frozen=True, slots=True)
class GetData:
    """`GET DATA file timeout_ms max_digits` (answer `200 result=<digits> [(timeout)]`)."""

    allowed_on_dead_channel: ClassVar[bool] = False
    echoes_value: ClassVar[bool] = False
    filename: str
    timeout_ms: int
    max_digits: int

    def serialize(self) -> bytes:
        _require_name("GET DATA", self.filename)
        return _line("GET DATA", self.filename, self.timeout_ms, self.max_digits)


@dataclass(frozen=True, slots=True)
class Answer:
    """`ANSWER` the channel."""

    allowed_on_dead_channel: ClassVar[bool] = False
    echoes_value: ClassVar[bool] = False

    def serialize(self) -> bytes:
        return _line("ANSWER")


@dataclass(frozen=True, slots=True)
class Hangup:
    """`HANGUP` the channel (the command, not Asterisk's out-of-band line)."""

    allowed_on_dead_channel: ClassVar[bool] = False
    echoes_value: ClassVar[bool] = False

    def serialize(self) -> bytes:
        return _line("HANGUP")


@dataclass(frozen=True, slots=True)
class Noop:
    """`NOOP [text]` (answer `200 result=0`)."""

    allowed_on_dead_channel: ClassVar[bool] = True
    echoes_value: ClassVar[bool] = False
    text: str = ""

    def serialize(self) -> bytes:
        return _line("NOOP", self.text) if self.text else _line("NOOP")


# --- the environment ----------------------------------------------------------------------------

# res_agi.c launch_netscript + setup_env, in the order Asterisk writes them (Asterisk 22).
_FRONT: Final = (
    "agi_network",
    "agi_network_script",
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
)
_MIDDLE: Final = (  # caller-controlled values, and the keys written between them
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
)
_BACK: Final = ("agi_priority", "agi_enhanced", "agi_accountcode", "agi_threadid")
_ORDER: Final = {key: i for i, key in enumerate(_FRONT + _MIDDLE + _BACK)}
_LAST_WINS: Final = frozenset(_BACK)
_REQUIRED: Final = tuple(k for k in _ORDER if k != "agi_network_script")

_ENV_LINE: Final = re.compile(r"(agi_[a-z0-9_]+): (.*)", re.ASCII | re.DOTALL)
_ARG_KEY: Final = re.compile(r"agi_arg_([0-9]{1,6})", re.ASCII)
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REPLY_LINE: Final = re.compile(r"([0-9]{3})([ -])(.*)", re.ASCII | re.DOTALL)
_RESULT: Final = re.compile(r"result=(\S*)(.*)", re.DOTALL)
_EXTRA: Final = re.compile(r"(?: [^\s=()]+=[^\s()]*)*")  # ` endpos=1234`

_Pair = tuple[str, str]


def _label(key: str) -> str:
    return key if key in _ORDER else "other"


def _parse_pairs(region: list[bytes], reasons: list[str]) -> list[_Pair | None]:
    pairs: list[_Pair | None] = []
    for raw in region:
        match = _ENV_LINE.fullmatch(raw.decode("utf-8", "replace"))
        if match is None:
            reasons.append("blank-line" if raw == b"" else "malformed-line")
            pairs.append(None)
            continue
        key, value = match.groups()
        if _CONTROL.search(value):
            reasons.append(f"control-character:{_label(key)}")
        pairs.append((key, value))
    return pairs


def _arg_number(pair: _Pair | None) -> int | None:
    match = _ARG_KEY.fullmatch(pair[0]) if pair is not None else None
    return int(match[1]) if match is not None else None


def _tail_args(pairs: list[_Pair | None], reasons: list[str]) -> tuple[list[str], int]:
    """The contiguous agi_arg_N block that ends the environment, and where it starts."""
    start = len(pairs)
    numbers: list[int] = []
    while start > 0 and (number := _arg_number(pairs[start - 1])) is not None:
        numbers.append(number)
        start -= 1
    if numbers[::-1] != list(range(1, len(numbers) + 1)):
        reasons.append("arg-numbering")
    return [pair[1] for pair in pairs[start:] if pair is not None], start


def _collect(pairs: list[_Pair | None], reasons: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    highest = -1
    for pair in pairs:
        if pair is None:
            continue
        key, value = pair
        if _ARG_KEY.fullmatch(key):
            reasons.append("misplaced-arg")
            continue
        if key in env:
            reasons.append(f"duplicate:{_label(key)}")
            if key in _LAST_WINS:
                env[key] = value
            continue
        order = _ORDER.get(key)
        if order is None:
            reasons.append("unknown-key")
        elif order < highest:
            reasons.append(f"out-of-order:{key}")
        else:
            highest = order
        env[key] = value
    return env


def _split_script(raw: str) -> tuple[str, Mapping[str, str]]:
    """`screen?x=y` -> (`screen`, {x: y}); the last of repeated parameters wins."""
    path, _, query = raw.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    return unquote(path).strip("/"), MappingProxyType(params)


def parse_environment(region: list[bytes], after: list[bytes]) -> AgiRequest:
    """Build the request from the lines before the genuine terminator (`region`) and after it.

    `after` holds the lines between the terminator and the fence reply: only `HANGUP` is
    legitimate there (it is not reported here; the connection emits it as an event).
    """
    reasons: list[str] = []
    pairs = _parse_pairs(region, reasons)
    args, tail_start = _tail_args(pairs, reasons)
    env = _collect(pairs[:tail_start], reasons)
    env.update((f"agi_arg_{i}", value) for i, value in enumerate(args, 1))
    reasons.extend(f"missing:{key}" for key in _REQUIRED if key not in env)
    if any(line != _HANGUP_LINE for line in after):
        reasons.append("stray-after-environment")
    script, params = _split_script(env.get("agi_network_script", ""))
    return AgiRequest(
        env=MappingProxyType(env),
        script=script,
        params=params,
        args=tuple(args),
        suspicious=tuple(dict.fromkeys(reasons)),
    )


def parse_reply(code: int, rest: str) -> AgiReply:
    """Parse the text after `<code> ` of a single-line reply.

    `data` runs to the last `)`: a value may hold `)`, the `key=value` fields after it never do.

    Raises:
        RemoteAgiError: a 200 reply without a well-formed `result=`.
    """
    if code != 200:
        return AgiReply(code=code, result="", data=None, text=rest)
    match = _RESULT.fullmatch(rest)
    data = None
    if match is not None:
        result, tail = match.groups()
        close = tail.rfind(")")
        if tail.startswith(" (") and close > 0:
            data, tail = tail[2:close], tail[close + 1 :]
        if _EXTRA.fullmatch(tail):
            return AgiReply(code=200, result=result, data=data, text=rest)
    raise RemoteAgiError(
        f"malformed 200 reply: {rest[:80]!r}", hint="expected 'result=<x> [(<data>)] [k=v ...]'"
    )


# --- the connection -----------------------------------------------------------------------------


class AgiState(StrEnum):
    """Where a FastAGI dialogue stands (our side is the server)."""

    CONNECTED = "connected"  # environment arriving, start() not called yet
    SYNCING = "syncing"  # first fence sent, environment read until its reply
    IDLE = "idle"  # we may send one command
    AWAITING_REPLY = "awaiting_reply"
    AWAITING_FENCE = "awaiting_fence"  # reply to an echoing command held until the fence reply
    CLOSED = "closed"  # Asterisk closed the socket
    ERROR = "error"  # a protocol error was raised; the connection is unusable


class _Trigger(StrEnum):
    START = "start"  # ours
    SEND = "send"  # ours
    SYNCED = "fence reply ending the environment"
    REPLY = "reply"
    REPLY_BEFORE_FENCE = "reply to an echoing command"
    FENCE = "fence reply"
    HANGUP = "HANGUP"
    EOF = "end of stream"


_OURS: Final = frozenset({_Trigger.START, _Trigger.SEND})

_S, _T = AgiState, _Trigger
_TRANSITIONS: Final[Mapping[tuple[AgiState, _Trigger], AgiState]] = {
    (_S.CONNECTED, _T.START): _S.SYNCING,
    (_S.CONNECTED, _T.EOF): _S.CLOSED,
    (_S.SYNCING, _T.SYNCED): _S.IDLE,
    (_S.SYNCING, _T.EOF): _S.CLOSED,
    (_S.IDLE, _T.SEND): _S.AWAITING_REPLY,
    (_S.IDLE, _T.HANGUP): _S.IDLE,
    (_S.IDLE, _T.EOF): _S.CLOSED,
    (_S.AWAITING_REPLY, _T.REPLY): _S.IDLE,
    (_S.AWAITING_REPLY, _T.REPLY_BEFORE_FENCE): _S.AWAITING_FENCE,
    (_S.AWAITING_REPLY, _T.HANGUP): _S.AWAITING_REPLY,
    (_S.AWAITING_REPLY, _T.EOF): _S.CLOSED,
    (_S.AWAITING_FENCE, _T.FENCE): _S.IDLE,
    (_S.AWAITING_FENCE, _T.HANGUP): _S.AWAITING_FENCE,  # dropped: may be caller text
    (_S.AWAITING_FENCE, _T.EOF): _S.CLOSED,
}

_NONCE: Final = re.compile(r"[0-9A-Za-z]{16,64}", re.ASCII)


class AgiConnection:
    """One FastAGI dialogue, server side, without I/O.

    Usage::

        conn = AgiConnection()
        write(conn.start())                 # the first fence, before anything is read
        while (event := conn.next_event()) is NEED_DATA:
            conn.receive_data(read())       # b"" at EOF
        # event is an AgiRequest (or CLOSED); then for each command:
        write(conn.send(SetVariable("SCREENER_VERDICT", "allow")))
        ...                                 # next_event() until an AgiReply

    Raises `RemoteAgiError` for bytes Asterisk cannot have sent and `LocalAgiError` when used
    out of turn; after either, the connection is in state ERROR and unusable.
    """

    def __init__(self, nonce: str | None = None) -> None:
        nonce = secrets.token_hex(16) if nonce is None else nonce
        if not _NONCE.fullmatch(nonce):
            raise LocalAgiError("nonce must be 16-64 ASCII letters or digits")
        self._fence = GetFullVariable(nonce).serialize()
        self._fence_reply = f"200 result=1 ({nonce})".encode("ascii")
        self._state = AgiState.CONNECTED
        self._buffer = bytearray()
        self._scan_from = 0
        self._eof = False
        self._pending: deque[Event] = deque()
        self._env_lines: list[bytes] = []
        self._env_bytes = 0
        self._fenced = False
        self._held: AgiReply | None = None
        self._block: list[str] | None = None  # lines of a `520-` reply so far
        self._block_code = 0

    @property
    def state(self) -> AgiState:
        return self._state

    def start(self) -> bytes:
        """Bytes to write as soon as the connection opens: the fence that ends the environment."""
        self._transition(_Trigger.START)
        return self._fence

    def send(self, command: AgiCommand) -> bytes:
        """Bytes for one command (plus a fence if it echoes a value).

        Raises:
            LocalAgiError: not our turn (no request yet, a reply pending, closed), or the command
                cannot be written safely.
        """
        if self._state is not AgiState.IDLE:
            raise LocalAgiError(
                f"cannot send {type(command).__name__} in state {self._state}",
                hint="send one command after the AgiRequest or after the previous AgiReply",
            )
        data = command.serialize()
        self._transition(_Trigger.SEND)
        self._fenced = command.echoes_value
        return data + self._fence if self._fenced else data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from Asterisk; `b""` means the peer closed the connection.

        Raises:
            LocalAgiError: data after EOF.
        """
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalAgiError("receive_data() after EOF")
        else:
            self._buffer += data

    def next_event(self) -> Event | Sentinel:
        """The next event, `NEED_DATA`, or `CLOSED` (repeated forever once closed).

        Raises:
            RemoteAgiError: the peer sent bytes Asterisk cannot have sent (see `hint`).
            LocalAgiError: called again after an error.
        """
        if self._state is AgiState.ERROR:
            raise LocalAgiError("the connection already failed", hint="close it")
        try:
            return self._next_event()
        except BaseException:
            self._state = AgiState.ERROR
            raise

    # -- internals --

    def _transition(self, trigger: _Trigger) -> None:
        new = _TRANSITIONS.get((self._state, trigger))
        if new is None:
            error = LocalAgiError if trigger in _OURS else RemoteAgiError
            raise error(f"unexpected {trigger} in state {self._state}")
        self._state = new

    def _next_event(self) -> Event | Sentinel:
        while not self._pending:
            if self._state is AgiState.CLOSED:
                return CLOSED
            line = self._next_line()
            if line is None:
                if not self._eof:
                    return NEED_DATA
                if self._buffer:
                    raise RemoteAgiError(
                        "connection closed in the middle of a line",
                        hint="Asterisk ends every line with LF",
                    )
                self._transition(_Trigger.EOF)
                return CLOSED
            event = self._handle_line(line)
            if event is not None:
                return event
        return self._pending.popleft()

    def _next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            end = self._scan_from
            if end <= MAX_LINE_BYTES:
                return None
        if end > MAX_LINE_BYTES:
            raise RemoteAgiError(
                f"line longer than {MAX_LINE_BYTES} bytes",
                hint="not Asterisk, or a value too large to be genuine",
            )
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        return line

    def _handle_line(self, line: bytes) -> Event | None:
        match self._state:
            case AgiState.CONNECTED | AgiState.SYNCING:
                return self._environment_line(line)
            case AgiState.AWAITING_FENCE:
                return self._fence_line(line)
            case _:  # IDLE, AWAITING_REPLY
                return self._reply_line(line)

    def _environment_line(self, line: bytes) -> Event | None:
        if self._state is AgiState.SYNCING and line == self._fence_reply:
            return self._end_environment()
        if not self._env_lines and line != b"agi_network: yes":
            raise RemoteAgiError(
                f"not a FastAGI peer: first line {line[:40]!r}",
                hint="Asterisk starts with 'agi_network: yes'",
            )
        self._env_lines.append(line)
        self._env_bytes += len(line) + 1
        if len(self._env_lines) > MAX_ENV_LINES or self._env_bytes > MAX_ENV_BYTES:
            raise RemoteAgiError(
                f"environment larger than {MAX_ENV_LINES} lines or {MAX_ENV_BYTES} bytes",
                hint="a genuine environment is ~25 lines plus one per AGI() argument",
            )
        return None

    def _end_environment(self) -> AgiRequest:
        lines = self._env_lines
        blanks = [i for i, line in enumerate(lines) if line == b""]
        if not blanks:
            raise RemoteAgiError(
                "fence reply before the end of the environment",
                hint="Asterisk writes the whole environment before it reads a command",
            )
        region, after = lines[: blanks[-1]], lines[blanks[-1] + 1 :]
        self._env_lines = []
        self._transition(_Trigger.SYNCED)
        self._pending.extend(AgiHangup() for line in after if line == _HANGUP_LINE)
        return parse_environment(region, after)

    def _fence_line(self, line: bytes) -> Event | None:
        if line == self._fence_reply:
            self._transition(_Trigger.FENCE)
            held, self._held = self._held, None
            return held
        if line == _HANGUP_LINE:
            self._transition(_Trigger.HANGUP)
            return None
        raise RemoteAgiError(
            f"extra line after the reply to an echoing command: {line[:40]!r}",
            hint="the value held a line break: caller-controlled text? Read it base64-encoded",
        )

    def _reply_line(self, line: bytes) -> Event | None:
        if line == _HANGUP_LINE and self._block is None:
            self._transition(_Trigger.HANGUP)
            return AgiHangup()
        text = line.decode("utf-8", "replace")
        if self._block is not None:
            return self._block_line(text)
        match = _REPLY_LINE.fullmatch(text)
        if match is None:
            raise RemoteAgiError(
                f"not a FastAGI reply: {text[:40]!r}", hint="expected '<3 digits> ...' or 'HANGUP'"
            )
        if self._state is AgiState.IDLE:
            self._transition(_Trigger.REPLY)  # raises: nothing was asked
        code, separator, rest = int(match[1]), match[2], match[3]
        if separator == "-":
            self._block, self._block_code = [rest], code
            return None
        return self._complete(parse_reply(code, rest))

    def _block_line(self, text: str) -> Event | None:
        assert self._block is not None
        end = f"{self._block_code} "
        self._block.append(text.removeprefix(end))
        if len(self._block) > MAX_REPLY_LINES:
            raise RemoteAgiError(f"multi-line reply longer than {MAX_REPLY_LINES} lines")
        if not text.startswith(end):
            return None
        reply = AgiReply(code=self._block_code, result="", data=None, text="\n".join(self._block))
        self._block = None
        return self._complete(reply)

    def _complete(self, reply: AgiReply) -> AgiReply | None:
        if self._fenced:
            self._transition(_Trigger.REPLY_BEFORE_FENCE)
            self._held = reply
            return None
        self._transition(_Trigger.REPLY)
        return reply
