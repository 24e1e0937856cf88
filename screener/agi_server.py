"""FastAGI server: `asyncio.start_server`, one `AgiConnection` per call, one error boundary each.

Asterisk runs `AGI(agi://127.0.0.1:4573/screen,${BASE64_ENCODE(${CALLERID(num)})})`; the server
writes the first fence at once, waits for the `AgiRequest`, routes on its script name (the path
before any `?`) and awaits the route's handler with an `AgiSession`. When the handler returns,
the server closes the socket and the dialplan goes on.

Fail-safe: the server never decides a verdict by itself. When it cannot run a handler to its end
it sets the channel variable `SCREENER_ERROR` (`no-route`, `handler` or `timeout`) if the dialogue
is still in step, and always closes the connection; the dialplan treats a missing verdict as its
documented default. After a protocol error nothing more is sent: the stream is not trusted.
"""

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Self

from screener.agi_protocol import (
    CLOSED,
    NEED_DATA,
    AgiCommand,
    AgiConnection,
    AgiHangup,
    AgiHangupError,
    AgiReply,
    AgiRequest,
    AgiState,
    Event,
    GetVariable,
    Sentinel,
    SetVariable,
)
from screener.errors import AgiProtocolError, RemoteAgiError

logger = logging.getLogger(__name__)

ERROR_VARIABLE: Final = "SCREENER_ERROR"
"""Channel variable set when the server could not run a handler to its end."""

_READ_SIZE: Final = 65536
_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)
_CLOSE_TIMEOUT: Final = 1.0

Handler = Callable[["AgiSession"], Awaitable[None]]
ErrorHook = Callable[[str], None]
SuspiciousHook = Callable[[AgiRequest], None]


class _Wire:
    """The codec bound to one socket, every wait bounded by `read_timeout`."""

    def __init__(
        self,
        conn: AgiConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        read_timeout: float,
    ) -> None:
        self.conn = conn
        self._reader = reader
        self._writer = writer
        self.read_timeout = read_timeout
        sock = writer.get_extra_info("socket")
        self._quickack = sock if _QUICKACK is not None and sock is not None else None

    def _ack_at_once(self) -> None:
        """Ask Linux to acknowledge the next segments at once.

        Asterisk writes its environment one line per write(), without TCP_NODELAY, so each line
        waits (Nagle) for our ACK of the one before. Having written our fence, Linux would
        delay that ACK by up to 40 ms, hoping to piggyback it on data we never send; measured,
        this cost ~45 ms per call. TCP_QUICKACK is not sticky, so it is renewed before each read.
        """
        if self._quickack is not None:
            with contextlib.suppress(OSError):
                self._quickack.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        async with asyncio.timeout(self.read_timeout):
            await self._writer.drain()

    async def next_event(self, timeout: float) -> Event | Sentinel:
        """The next event or CLOSED (never NEED_DATA).

        Raises:
            TimeoutError: Asterisk sent nothing for `timeout` seconds.
        """
        while (event := self.conn.next_event()) is NEED_DATA:
            self._ack_at_once()
            async with asyncio.timeout(timeout):
                data = await self._reader.read(_READ_SIZE)
            self.conn.receive_data(data)
        return event

    async def handshake(self) -> AgiRequest | None:
        """Write the first fence and read the environment; None if the peer left first."""
        try:
            await self.write(self.conn.start())
            event = await self.next_event(self.read_timeout)
        except ConnectionError:
            # A peer that leaves before its request (probe, health check) is not an error; a
            # reset is only a matter of timing against our fence write.
            return None
        if event is CLOSED:
            return None
        assert isinstance(event, AgiRequest), event  # the codec emits nothing else first
        return event


class AgiSession:
    """One call's FastAGI dialogue, as a route handler sees it.

    Usage::

        async def screen(session: AgiSession) -> None:
            number = base64.b64decode(session.request.args[0])
            await session.set_variable("SCREENER_VERDICT", "allow")
    """

    def __init__(self, request: AgiRequest, wire: _Wire) -> None:
        self._request = request
        self._wire = wire
        self._hung_up = False

    @property
    def request(self) -> AgiRequest:
        return self._request

    @property
    def hung_up(self) -> bool:
        """Asterisk said `HANGUP`: only dead-channel commands (SET VARIABLE...) still run."""
        return self._hung_up

    @property
    def in_step(self) -> bool:
        """A command may be sent now (no reply pending, no error, not closed)."""
        return self._wire.conn.state is AgiState.IDLE

    async def command(self, command: AgiCommand, *, timeout: float | None = None) -> AgiReply:
        """Send one command and return Asterisk's reply (any code; check `reply.ok`).

        `timeout` overrides the server's read timeout for commands that wait for the caller
        (STREAM FILE, GET DATA).

        Raises:
            AgiHangupError: the channel is gone and the command needs it (511 or HANGUP), or
                Asterisk closed the connection.
            RemoteAgiError, LocalAgiError: see `AgiConnection`.
            TimeoutError: no reply in time.
        """
        if self._wire.conn.state is AgiState.CLOSED:
            raise AgiHangupError("Asterisk closed the connection")
        if self._hung_up and not command.allowed_on_dead_channel:
            raise AgiHangupError(f"channel hung up; not sending {type(command).__name__}")
        await self._wire.write(self._wire.conn.send(command))
        wait = self._wire.read_timeout if timeout is None else timeout
        while True:
            event = await self._wire.next_event(wait)
            if isinstance(event, AgiReply):
                break
            if event is CLOSED:
                raise AgiHangupError("Asterisk closed the connection while a command was pending")
            assert isinstance(event, AgiHangup), event  # the codec emits nothing else here
            self._hung_up = True
        if event.code == 511 or (self._hung_up and not command.allowed_on_dead_channel):
            raise AgiHangupError(f"channel hung up during {type(command).__name__}", event)
        return event

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable.

        Raises:
            RemoteAgiError: Asterisk refused it. And as `command()`.
        """
        reply = await self.command(SetVariable(name, value))
        if not reply.ok:
            raise RemoteAgiError(f"SET VARIABLE {name} failed: {reply.code} {reply.text[:80]}")

    async def get_variable(self, name: str) -> str | None:
        """A channel variable's value, or None if it is unset.

        Raises:
            RemoteAgiError: Asterisk refused it, or the value held a line break. And as
                `command()`.
        """
        reply = await self.command(GetVariable(name))
        if not reply.ok:
            raise RemoteAgiError(f"GET VARIABLE {name} failed: {reply.code} {reply.text[:80]}")
        return reply.data if reply.result == "1" else None


class AgiServer:
    """FastAGI server routing each call by script name to an `async def handler(session)`.

    Usage::

        server = AgiServer({"screen": screen}, "127.0.0.1", 4573, on_error=count_error)
        await server.start()
        ...
        await server.close(drain_timeout=5)

    `on_error(kind)` is called once per failed connection, kind in `remote` (peer broke the
    protocol), `local` (our bug), `timeout`, `handler` (handler raised), `no_route`,
    `overload` (over `max_connections`), `connection` (socket error). Hangups are not errors.
    `on_suspicious(request)` is called for each request whose environment had anomalies.
    """

    def __init__(
        self,
        routes: Mapping[str, Handler],
        host: str = "127.0.0.1",
        port: int = 4573,
        *,
        read_timeout: float = 5.0,
        session_timeout: float = 30.0,
        max_connections: int = 500,
        on_error: ErrorHook | None = None,
        on_suspicious: SuspiciousHook | None = None,
    ) -> None:
        for name, handler in routes.items():
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"AGI route {name!r}: handler must be an async def function")
        if read_timeout <= 0 or session_timeout <= 0 or max_connections < 1:
            raise ValueError("timeouts must be positive and max_connections at least 1")
        self._routes = dict(routes)
        self._host = host
        self._port = port
        self._read_timeout = read_timeout
        self._session_timeout = session_timeout
        self._max_connections = max_connections
        self._on_error = on_error
        self._on_suspicious = on_suspicious
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("AgiServer is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active_sessions(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Listen. Raises OSError if the address is taken."""
        # A backlog as deep as the session limit: a burst of calls must not wait for SYN retries.
        self._server = await asyncio.start_server(
            self._on_connect, self._host, self._port, backlog=self._max_connections
        )
        logger.info("agi listening host=%s port=%d", self._host, self.port)

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, let sessions finish for up to `drain_timeout`, then cancel the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("agi cancelled sessions=%d after drain", len(pending))
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("agi closed")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- per connection --

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._closing:
                return
            if len(self._tasks) > self._max_connections:
                logger.warning("agi connection refused sessions=%d", len(self._tasks) - 1)
                self._report("overload")
                return
            wire = _Wire(AgiConnection(), reader, writer, self._read_timeout)
            await self._boundary(wire)
        finally:
            self._tasks.discard(task)
            await _close(writer)

    async def _boundary(self, wire: _Wire) -> None:
        """The per-connection error boundary: log, count, fail safe; never raise."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        session: AgiSession | None = None
        outcome = "ok"
        try:
            async with asyncio.timeout(self._session_timeout):
                request = await wire.handshake()
                if request is None:
                    outcome = "no-request"
                else:
                    session = AgiSession(request, wire)
                    outcome = await self._dispatch(session)
        except AgiHangupError as e:
            outcome = "hangup"
            logger.info("agi hangup detail=%s", e)
        except TimeoutError:
            outcome = "timeout"
            logger.warning("agi timeout state=%s", wire.conn.state)
            self._report("timeout")
            await _fail_safe(session, "timeout")
        except AgiProtocolError as e:
            outcome = "remote-error" if isinstance(e, RemoteAgiError) else "local-error"
            logger.exception("agi protocol error outcome=%s hint=%s", outcome, e.hint)
            self._report("remote" if isinstance(e, RemoteAgiError) else "local")
        except ConnectionError:
            outcome = "connection-lost"
            logger.warning("agi connection lost state=%s", wire.conn.state)
            self._report("connection")
        except Exception:
            outcome = "handler-error"
            logger.exception("agi handler failed")
            self._report("handler")
            await _fail_safe(session, "handler")
        logger.info(
            "agi session script=%r uniqueid=%r outcome=%s duration_ms=%.0f",
            session.request.script if session else None,
            session.request.uniqueid if session else None,
            outcome,
            (loop.time() - started) * 1000,
        )

    async def _dispatch(self, session: AgiSession) -> str:
        request = session.request
        if request.suspicious:
            logger.warning(
                "agi suspicious environment uniqueid=%r reasons=%s",
                request.uniqueid,
                ",".join(request.suspicious),
            )
            if self._on_suspicious is not None:
                self._on_suspicious(request)
        handler = self._routes.get(request.script)
        if handler is None:
            logger.warning("agi no route script=%r routes=%s", request.script, sorted(self._routes))
            self._report("no_route")
            await session.set_variable(ERROR_VARIABLE, "no-route")
            return "no-route"
        await handler(session)
        return "ok"

    def _report(self, kind: str) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(kind)
        except Exception:
            logger.exception("agi on_error hook failed kind=%s", kind)


async def _fail_safe(session: AgiSession | None, kind: str) -> None:
    """Tell the dialplan through SCREENER_ERROR, if the dialogue is still in step; best effort."""
    if session is None or not session.in_step:
        return
    try:
        await session.set_variable(ERROR_VARIABLE, kind)
    except (AgiHangupError, RemoteAgiError, TimeoutError, ConnectionError) as e:
        logger.info("agi could not set %s detail=%r", ERROR_VARIABLE, e)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The peer may have reset or vanished; the socket is closed either way.
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
