"""The FastAGI server on a real socket (port=0), driven by a fake Asterisk on open_connection."""

import asyncio
import base64
import contextlib
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from screener.agi_protocol import (
    AgiHangupError,
    AgiReply,
    AgiRequest,
    Answer,
    StreamFile,
    Verbose,
)
from screener.agi_server import ERROR_VARIABLE, AgiServer, AgiSession
from screener.errors import RemoteAgiError

ARG = base64.b64encode(b"0612345678").decode()
WAIT = 3.0


def environment(
    script: str = "screen", callerid: str = "0612345678", args: tuple[str, ...] = (ARG,)
) -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:4573/{script}",
        "agi_channel: PJSIP/caller-00000003",
        "agi_language: en",
        "agi_type: PJSIP",
        "agi_uniqueid: 1732368000.7",
        "agi_version: 22.10.1",
        f"agi_callerid: {callerid}",
        "agi_calleridname: Alice",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 2000",
        "agi_rdnis: unknown",
        "agi_context: inbound",
        "agi_extension: 2000",
        "agi_priority: 3",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140041298503360",
        *(f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


class FakeAsterisk:
    """What res_agi.c does on a FastAGI connection, scripted by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.fence_reply = b""

    @classmethod
    async def connect(cls, port: int) -> "FakeAsterisk":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readline()

    async def handshake(self, env: bytes | None = None) -> None:
        """Write the environment, then answer the fence the server pipelined at connect."""
        await self.send(environment() if env is None else env)
        match = re.fullmatch(rb'GET FULL VARIABLE "([0-9a-f]{32})"\n', await self.line())
        assert match is not None
        self.fence_reply = b"200 result=1 (" + match[1] + b")\n"
        await self.send(self.fence_reply)

    async def expect(self, command: bytes, reply: bytes, *, fenced: bool = False) -> None:
        assert await self.line() == command
        if fenced:
            assert re.fullmatch(rb'GET FULL VARIABLE "[0-9a-f]{32}"\n', await self.line())
            reply += self.fence_reply
        await self.send(reply)

    async def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.close()


MakeServer = Callable[..., Awaitable[AgiServer]]


@pytest.fixture
def errors() -> list[str]:
    return []


@pytest.fixture
async def make_server(errors: list[str]) -> AsyncIterator[MakeServer]:
    servers: list[AgiServer] = []

    async def make(routes: dict[str, Any], **options: Any) -> AgiServer:
        options.setdefault("read_timeout", 1.0)
        options.setdefault("session_timeout", 5.0)
        options.setdefault("on_error", errors.append)
        server = AgiServer(routes, "127.0.0.1", 0, **options)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close(drain_timeout=1.0)
        assert server.active_sessions == 0


async def settled(server: AgiServer) -> None:
    async with asyncio.timeout(WAIT):
        while server.active_sessions:
            await asyncio.sleep(0.005)


# --- dialogues ------------------------------------------------------------------------------------


async def test_normal_dialogue(make_server: MakeServer, errors: list[str]) -> None:
    seen: list[Any] = []

    async def screen(session: AgiSession) -> None:
        seen.append(session.request)
        seen.append(await session.get_variable("SCREENER_LIST"))
        seen.append(await session.get_variable("UNSET"))
        await session.set_variable("SCREENER_VERDICT", "allow")
        seen.append(await session.command(Verbose("screener: verdict=allow", 3)))

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(b'GET VARIABLE "SCREENER_LIST"\n', b"200 result=1 (vip)\n", fenced=True)
    await asterisk.expect(b'GET VARIABLE "UNSET"\n', b"200 result=0\n", fenced=True)
    await asterisk.expect(b'SET VARIABLE "SCREENER_VERDICT" "allow"\n', b"200 result=1\n")
    await asterisk.expect(b'VERBOSE "screener: verdict=allow" 3\n', b"200 result=1\n")
    assert await asterisk.rest() == b""
    await asterisk.close()

    request, listed, unset, verbose = seen
    assert isinstance(request, AgiRequest)
    assert (request.script, request.args, request.suspicious) == ("screen", (ARG,), ())
    assert request.uniqueid == "1732368000.7"
    assert (listed, unset) == ("vip", None)
    assert verbose == AgiReply(200, "1", None, "result=1")
    assert errors == []


async def test_route_with_query(make_server: MakeServer, errors: list[str]) -> None:
    seen: list[AgiRequest] = []

    async def screen(session: AgiSession) -> None:
        seen.append(session.request)

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake(environment(script="screen?hotline=sales"))
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert dict(seen[0].params) == {"hotline": "sales"}
    assert errors == []


async def test_unknown_route(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        raise AssertionError("not this route")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake(environment(script="admin"))
    await asterisk.expect(
        f'SET VARIABLE "{ERROR_VARIABLE}" "no-route"\n'.encode(), b"200 result=1\n"
    )
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert errors == ["no_route"]


async def test_refused_set_variable(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        with pytest.raises(RemoteAgiError):
            await session.set_variable("V", "1")
        with pytest.raises(RemoteAgiError):
            await session.get_variable("V")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(b'SET VARIABLE "V" "1"\n', b"510 Invalid or unknown command\n")
    await asterisk.expect(b'GET VARIABLE "V"\n', b"510 Invalid or unknown command\n", fenced=True)
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert errors == []


async def test_slow_command_with_its_own_timeout(
    make_server: MakeServer, errors: list[str]
) -> None:
    replies: list[AgiReply] = []

    async def screen(session: AgiSession) -> None:
        replies.append(await session.command(StreamFile("notice", "#"), timeout=2.0))

    server = await make_server({"screen": screen}, read_timeout=0.1)
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    assert await asterisk.line() == b'STREAM FILE "notice" "#"\n'
    await asyncio.sleep(0.3)  # longer than read_timeout: the prompt plays
    await asterisk.send(b"200 result=0 endpos=38400\n")
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert replies[0].result == "0"
    assert errors == []


# --- hangups ------------------------------------------------------------------------------------


async def test_hangup_line_then_dead_channel(make_server: MakeServer, errors: list[str]) -> None:
    seen: list[Any] = []

    async def screen(session: AgiSession) -> None:
        seen.append(await session.command(StreamFile("notice")))
        await session.set_variable("SCREENER_VERDICT", "allow")  # allowed on a dead channel
        seen.append(session.hung_up)
        try:
            await session.command(Answer())  # needs a live channel: not even sent
        except AgiHangupError as e:
            seen.append(e)
            raise

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(b'STREAM FILE "notice" ""\n', b"200 result=-1 endpos=5280\nHANGUP\n")
    await asterisk.expect(b'SET VARIABLE "SCREENER_VERDICT" "allow"\n', b"200 result=1\n")
    assert await asterisk.rest() == b""  # no ANSWER: the server knew
    await asterisk.close()
    assert seen[0].result == "-1"
    assert seen[1] is True
    assert isinstance(seen[2], AgiHangupError)
    assert errors == []


async def test_hangup_before_the_reply(make_server: MakeServer, errors: list[str]) -> None:
    raised: list[AgiHangupError] = []

    async def screen(session: AgiSession) -> None:
        try:
            await session.command(StreamFile("notice"))
        except AgiHangupError as e:
            raised.append(e)

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(b'STREAM FILE "notice" ""\n', b"HANGUP\n200 result=-1 endpos=0\n")
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert raised[0].reply is not None and raised[0].reply.result == "-1"
    assert errors == []


async def test_511_is_a_hangup(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.command(Answer())

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(
        b"ANSWER\n", b"511 Command Not Permitted on a dead channel or intercept routine\n"
    )
    assert await asterisk.rest() == b""
    await asterisk.close()
    await settled(server)
    assert errors == []


async def test_asterisk_closes_mid_dialogue(make_server: MakeServer, errors: list[str]) -> None:
    raised: list[BaseException] = []

    async def screen(session: AgiSession) -> None:
        try:
            await session.set_variable("V", "1")
        except AgiHangupError as e:
            raised.append(e)
        with pytest.raises(AgiHangupError):
            await session.set_variable("V", "2")  # closed: not sent

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    assert await asterisk.line() == b'SET VARIABLE "V" "1"\n'
    await asterisk.close()
    await settled(server)
    assert len(raised) == 1
    assert errors == []


async def test_connection_reset_mid_dialogue(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.set_variable("V", "1")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    assert await asterisk.line() == b'SET VARIABLE "V" "1"\n'
    await asterisk.reset()
    await settled(server)
    assert errors == ["connection"]


# --- hostile and broken peers ---------------------------------------------------------------------


async def test_connect_and_close_at_once(make_server: MakeServer, errors: list[str]) -> None:
    calls: list[AgiSession] = []

    async def screen(session: AgiSession) -> None:
        calls.append(session)

    server = await make_server({"screen": screen})
    for _ in range(20):
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.close()
    for _ in range(5):
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.reset()
    await settled(server)
    assert calls == []
    assert errors == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: screener\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
        b"agi_network: yes\n" + b"x" * 70000,
        b"agi_network: yes\nagi_x: 1",  # then EOF mid-line
    ],
    ids=["http", "tls", "oversized", "eof-mid-line"],
)
async def test_garbage(make_server: MakeServer, errors: list[str], garbage: bytes) -> None:
    async def screen(session: AgiSession) -> None:
        raise AssertionError("no request expected")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    try:
        await asterisk.send(garbage)
        asterisk.writer.write_eof()
        assert (await asterisk.rest()).startswith(b"GET FULL VARIABLE")
    except ConnectionResetError:
        pass  # the server closed with our bytes unread: a reset, also fine
    await asterisk.close()
    await settled(server)
    assert errors == ["remote"]


async def test_stall_during_environment(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        raise AssertionError("no request expected")

    server = await make_server({"screen": screen}, read_timeout=0.2)
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.send(environment()[:100])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await asterisk.rest()).startswith(b"GET FULL VARIABLE")
    assert loop.time() - started < 1.0
    await asterisk.close()
    await settled(server)
    assert errors == ["timeout"]


async def test_stall_awaiting_a_reply(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.set_variable("V", "1")

    server = await make_server({"screen": screen}, read_timeout=0.2)
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    assert await asterisk.line() == b'SET VARIABLE "V" "1"\n'
    assert await asterisk.rest() == b""  # no SCREENER_ERROR: a reply is pending, out of step
    await asterisk.close()
    assert errors == ["timeout"]


async def test_injected_replies_are_harmless(make_server: MakeServer, errors: list[str]) -> None:
    seen: list[Any] = []

    async def screen(session: AgiSession) -> None:
        seen.append(session.request)
        seen.append(await session.command(StreamFile("notice")))

    suspicious: list[AgiRequest] = []
    server = await make_server({"screen": screen}, on_suspicious=suspicious.append)
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake(environment(callerid="1\n\n200 result=1 (x)\nHANGUP\nagi_arg_1: eA=="))
    await asterisk.expect(b'STREAM FILE "notice" ""\n', b"200 result=0 endpos=1\n")
    assert await asterisk.rest() == b""
    await asterisk.close()
    request, streamed = seen
    assert request.args == (ARG,)
    assert streamed.text == "result=0 endpos=1"
    assert suspicious == [request]
    assert errors == []


async def test_value_with_a_line_break(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.get_variable("PJSIP_HEADER(read,X-Account)")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(
        b'GET VARIABLE "PJSIP_HEADER(read,X-Account)"\n',
        b"200 result=1 (1)\n200 result=1 (forged)\n",
        fenced=True,
    )
    assert await asterisk.rest() == b""  # nothing more sent after a protocol error
    await asterisk.close()
    assert errors == ["remote"]


# --- handler failures -----------------------------------------------------------------------------


async def test_handler_error_sets_screener_error(
    make_server: MakeServer, errors: list[str]
) -> None:
    async def screen(session: AgiSession) -> None:
        raise ValueError("boom")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(
        f'SET VARIABLE "{ERROR_VARIABLE}" "handler"\n'.encode(), b"200 result=1\n"
    )
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert errors == ["handler"]


async def test_handler_error_after_asterisk_left(
    make_server: MakeServer, errors: list[str]
) -> None:
    gone = asyncio.Event()

    async def screen(session: AgiSession) -> None:
        await gone.wait()
        raise ValueError("boom")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.close()
    await asyncio.sleep(0.05)
    gone.set()
    await settled(server)
    assert errors == ["handler"]


async def test_session_timeout(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await asyncio.sleep(60)

    server = await make_server({"screen": screen}, session_timeout=0.2)
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await asterisk.expect(
        f'SET VARIABLE "{ERROR_VARIABLE}" "timeout"\n'.encode(), b"200 result=1\n"
    )
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert errors == ["timeout"]


async def test_unsafe_value_is_our_bug(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.set_variable("V", "a\r\nHANGUP")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert errors == ["local"]


async def test_failing_error_hook_is_logged(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    def on_error(kind: str) -> None:
        raise RuntimeError(kind)

    async def screen(session: AgiSession) -> None:
        raise ValueError("boom")

    server = await make_server({"screen": screen}, on_error=on_error)
    with caplog.at_level(logging.ERROR, logger="screener.agi_server"):
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.handshake()
        await asterisk.expect(
            f'SET VARIABLE "{ERROR_VARIABLE}" "handler"\n'.encode(), b"200 result=1\n"
        )
        assert await asterisk.rest() == b""
        await asterisk.close()
    assert "on_error hook failed kind=handler" in caplog.text


# --- capacity and lifecycle -----------------------------------------------------------------------


async def test_many_concurrent_clients(make_server: MakeServer, errors: list[str]) -> None:
    done: list[str] = []

    async def screen(session: AgiSession) -> None:
        await session.set_variable("SCREENER_VERDICT", "allow")
        done.append(session.request.uniqueid)

    server = await make_server({"screen": screen})

    async def call() -> None:
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.handshake()
        await asterisk.expect(b'SET VARIABLE "SCREENER_VERDICT" "allow"\n', b"200 result=1\n")
        assert await asterisk.rest() == b""
        await asterisk.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(200):
            group.create_task(call())
    assert len(done) == 200
    await settled(server)
    assert errors == []


async def test_loop_stays_responsive(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.set_variable("V", "1")

    server = await make_server({"screen": screen}, read_timeout=0.3)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    async def quitter() -> None:
        await (await FakeAsterisk.connect(server.port)).close()

    async def staller() -> None:
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.send(b"agi_network: yes\n")
        await asterisk.rest()
        await asterisk.close()

    async def hanger() -> None:
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.handshake()
        await asterisk.line()
        await asterisk.close()

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.TaskGroup() as group:
        tick_task = group.create_task(ticker())
        clients = [group.create_task(f()) for f in (quitter, staller, hanger) * 20]
        await asyncio.gather(*clients)
        await settled(server)
        stop.set()
        await tick_task
    elapsed = loop.time() - started
    assert elapsed >= 0.3  # the stallers were held for read_timeout
    assert ticks >= elapsed / 0.01 * 0.5  # the loop kept turning meanwhile
    assert sorted(set(errors)) == ["timeout"]
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


async def test_max_connections(make_server: MakeServer, errors: list[str]) -> None:
    release = asyncio.Event()

    async def screen(session: AgiSession) -> None:
        await release.wait()

    server = await make_server({"screen": screen}, max_connections=1)
    first = await FakeAsterisk.connect(server.port)
    await first.handshake()
    second = await FakeAsterisk.connect(server.port)
    assert await second.rest() == b""  # refused: closed without a word
    await second.close()
    assert errors == ["overload"]
    release.set()
    assert await first.rest() == b""
    await first.close()


async def test_close_drains_then_cancels(errors: list[str]) -> None:
    release = asyncio.Event()
    outcomes: list[str] = []

    async def quick(session: AgiSession) -> None:
        await release.wait()
        await session.set_variable("V", "drained")
        outcomes.append("drained")

    async def stuck(session: AgiSession) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise

    server = AgiServer({"quick": quick, "stuck": stuck}, "127.0.0.1", 0, on_error=errors.append)
    await server.start()
    port = server.port
    a, b = await FakeAsterisk.connect(port), await FakeAsterisk.connect(port)
    await a.handshake(environment(script="quick"))
    await b.handshake(environment(script="stuck"))
    await settled_count(server, 2)

    closing = asyncio.create_task(server.close(drain_timeout=0.3))
    await asyncio.sleep(0.05)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer accepting
    release.set()
    await a.expect(b'SET VARIABLE "V" "drained"\n', b"200 result=1\n")
    assert await a.rest() == b""
    assert await b.rest() == b""
    await closing
    await a.close()
    await b.close()
    assert outcomes == ["drained", "cancelled"]
    assert server.active_sessions == 0
    assert errors == []


async def settled_count(server: AgiServer, count: int) -> None:
    async with asyncio.timeout(WAIT):
        while server.active_sessions != count:
            await asyncio.sleep(0.005)


async def test_context_manager_and_port() -> None:
    async def screen(session: AgiSession) -> None:
        pass

    server = AgiServer({"screen": screen}, port=0)
    with pytest.raises(RuntimeError):
        _ = server.port
    async with server:
        assert server.port > 0
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.handshake()
        assert await asterisk.rest() == b""
        await asterisk.close()
    await server.close()  # twice is fine


def test_handlers_must_be_async() -> None:
    def screen(session: AgiSession) -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        AgiServer({"screen": screen})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "options",
    [{"read_timeout": 0}, {"session_timeout": -1}, {"max_connections": 0}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    async def screen(session: AgiSession) -> None:
        pass

    with pytest.raises(ValueError):
        AgiServer({"screen": screen}, **options)


async def test_half_close_before_request_is_quiet(
    make_server: MakeServer, errors: list[str]
) -> None:
    async def screen(session: AgiSession) -> None:
        raise AssertionError("no request expected")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.send(environment()[:120].rpartition(b"\n")[0] + b"\n")
    asterisk.writer.write_eof()
    assert (await asterisk.rest()).startswith(b"GET FULL VARIABLE")
    await asterisk.close()
    await settled(server)
    assert errors == []


async def test_suspicious_request_without_hook(make_server: MakeServer, errors: list[str]) -> None:
    async def screen(session: AgiSession) -> None:
        await session.set_variable("V", "1")

    server = await make_server({"screen": screen})
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake(environment(callerid="1\r\nAction: Originate"))
    await asterisk.expect(b'SET VARIABLE "V" "1"\n', b"200 result=1\n")
    assert await asterisk.rest() == b""
    await asterisk.close()
    assert errors == []


async def test_errors_without_hook(caplog: pytest.LogCaptureFixture) -> None:
    async def screen(session: AgiSession) -> None:
        pass

    async with AgiServer({"screen": screen}, port=0) as server:
        with caplog.at_level(logging.ERROR, logger="screener.agi_server"):
            asterisk = await FakeAsterisk.connect(server.port)
            await asterisk.send(b"hello\n")
            await asterisk.rest()
            await asterisk.close()
    assert "agi protocol error outcome=remote-error" in caplog.text


async def test_close_before_start_and_drain_in_time() -> None:
    release = asyncio.Event()

    async def screen(session: AgiSession) -> None:
        await release.wait()

    await AgiServer({"screen": screen}).close()  # never started: nothing to do

    server = AgiServer({"screen": screen}, port=0)
    await server.start()
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.handshake()
    await settled_count(server, 1)
    asyncio.get_running_loop().call_later(0.05, release.set)
    await server.close(drain_timeout=2.0)
    assert await asterisk.rest() == b""
    await asterisk.close()


async def test_connection_accepted_while_closing_is_dropped(
    make_server: MakeServer, errors: list[str]
) -> None:
    async def screen(session: AgiSession) -> None:
        raise AssertionError("not while closing")

    server = await make_server({"screen": screen})
    # A connection the kernel accepted just before close() runs its callback afterwards; close()
    # no longer waits for it, so it must not start a session. Simulate that window.
    server._closing = True
    asterisk = await FakeAsterisk.connect(server.port)
    assert await asterisk.rest() == b""
    await asterisk.close()
    await settled(server)
    assert errors == []
