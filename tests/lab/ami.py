"""A tiny raw asyncio AMI client for tests: it records every byte and every message.

Not panoramisk, on purpose: the lab must see exactly what Asterisk sends (including events forged
by a caller ID containing CR LF), so framing is the plain AMI rule, a message ends at a blank
line, and nothing is interpreted beyond ``Key: Value`` lines.

    ami = AmiObserver(port, "lab", secret)
    await ami.connect()
    flag = await ami.wait_for(where(Event="UserEvent", UserEvent="ScreenerFlag"), timeout=10)
    reply = await ami.action({"Action": "Getvar", "Channel": ..., "Variable": "BRIDGEPEER"})
    await ami.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Predicate = Callable[["AmiMessage"], bool]


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI message: its header lines in order, when it arrived, and its raw bytes."""

    headers: tuple[tuple[str, str], ...]
    received_at: float
    raw: bytes

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive)."""
        key = key.lower()
        return next((v for k, v in self.headers if k.lower() == key), default)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def getall(self, key: str) -> list[str]:
        key = key.lower()
        return [v for k, v in self.headers if k.lower() == key]

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    def __str__(self) -> str:
        return " | ".join(f"{k}: {v}" for k, v in self.headers)


def parse_message(raw: bytes, received_at: float) -> AmiMessage:
    """Split one blank-line-terminated AMI message into ``Key: Value`` pairs."""
    headers = []
    for line in raw.decode("utf-8", errors="replace").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        headers.append((key.strip(), value.strip()) if sep else ("", line))
    return AmiMessage(tuple(headers), received_at, raw)


def where(**expected: str) -> Predicate:
    """A predicate: every given header equals the given value, e.g. ``where(Event="Hangup")``."""

    def match(message: AmiMessage) -> bool:
        return all(message.get(key) == value for key, value in expected.items())

    return match


class AmiError(RuntimeError):
    """Login failed, the connection dropped, or a wait timed out (with what was seen)."""


class AmiObserver:
    """Logs in, then keeps every message: ``events``, ``responses``, and ``chunks`` of raw bytes.

    ``events=False`` logs in with ``Events: off`` (actions only).
    """

    def __init__(
        self, port: int, username: str, secret: str, *, host: str = "127.0.0.1", events: bool = True
    ) -> None:
        self.host, self.port = host, port
        self.username, self._secret = username, secret
        self.want_events = events
        self.banner = b""
        self.messages: list[AmiMessage] = []
        self.chunks: list[tuple[float, bytes]] = []
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._lists: dict[str, list[AmiMessage]] = {}
        self._changed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed_at: float | None = None

    @property
    def events(self) -> list[AmiMessage]:
        return [m for m in self.messages if "Event" in m]

    @property
    def raw(self) -> bytes:
        """Everything received after the banner, byte for byte."""
        return b"".join(chunk for _, chunk in self.chunks)

    async def connect(self, timeout: float = 5.0) -> None:
        """Open the connection, read the banner and log in.

        Raises:
            AmiError: the login was refused.
        """
        async with asyncio.timeout(timeout):
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self.banner = await self._reader.readline()
        self._task = asyncio.create_task(self._read_loop(), name=f"ami-observer-{self.port}")
        reply = await self.action(
            {
                "Action": "Login",
                "Username": self.username,
                "Secret": self._secret,
                "Events": "on" if self.want_events else "off",
            },
            timeout=timeout,
        )
        if reply.response != "Success":
            raise AmiError(f"AMI login as {self.username} failed: {reply}")

    async def _read_loop(self) -> None:
        assert self._reader is not None
        buffer = b""
        try:
            while chunk := await self._reader.read(65536):
                now = time.monotonic()
                self.chunks.append((now, chunk))
                buffer += chunk
                while (end := buffer.find(b"\r\n\r\n")) >= 0:
                    raw, buffer = buffer[: end + 4], buffer[end + 4 :]
                    self._dispatch(parse_message(raw, now))
        finally:
            self.closed_at = time.monotonic()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(AmiError("AMI connection closed"))
            self._changed.set()

    def _dispatch(self, message: AmiMessage) -> None:
        self.messages.append(message)
        action_id = message.get("ActionID")
        if action_id is not None:
            if "Event" in message and action_id in self._lists:
                self._lists[action_id].append(message)
            future = self._pending.get(action_id)
            is_list = action_id in self._lists
            complete = message.get("EventList") == "Complete" or (
                "Response" in message and (not is_list or message.response != "Success")
            )
            if future is not None and not future.done() and complete:
                future.set_result(message)
        self._changed.set()

    async def action(self, fields: Mapping[str, str], timeout: float = 5.0) -> AmiMessage:
        """Send an action and return its response (matched by a fresh ActionID)."""
        action_id = f"lab-{next(self._ids)}"
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            self._send({**fields, "ActionID": action_id})
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(action_id, None)

    async def action_list(
        self, fields: Mapping[str, str], timeout: float = 5.0
    ) -> list[AmiMessage]:
        """Send a list action (``CoreShowChannels``, ``Status``...): return its events."""
        action_id = f"lab-{next(self._ids)}"
        self._lists[action_id] = []
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            self._send({**fields, "ActionID": action_id})
            async with asyncio.timeout(timeout):
                await future
            return [m for m in self._lists[action_id] if m.get("EventList") != "Complete"]
        finally:
            self._pending.pop(action_id, None)
            self._lists.pop(action_id, None)

    async def getvar(self, channel: str, variable: str, timeout: float = 5.0) -> str | None:
        """``Getvar`` on a channel; None if the action failed (e.g. the channel is gone)."""
        reply = await self.action(
            {"Action": "Getvar", "Channel": channel, "Variable": variable}, timeout
        )
        return reply.get("Value") if reply.response == "Success" else None

    def _send(self, fields: Mapping[str, str]) -> None:
        if self._writer is None or self.closed_at is not None:
            raise AmiError("AMI connection is not open")
        text = "".join(f"{key}: {value}\r\n" for key, value in fields.items()) + "\r\n"
        self._writer.write(text.encode())

    def find(self, predicate: Predicate, since: int = 0) -> list[AmiMessage]:
        """Messages (from index ``since``) that satisfy ``predicate``."""
        return [m for m in self.messages[since:] if predicate(m)]

    def mark(self) -> int:
        """An index to pass as ``since``: only messages received after this call count."""
        return len(self.messages)

    async def wait_for(
        self, predicate: Predicate, timeout: float = 10.0, *, since: int = 0
    ) -> AmiMessage:
        """The first message (from index ``since``) satisfying ``predicate``, waiting if needed.

        Raises:
            AmiError: nothing matched within ``timeout``; lists the last events seen.
        """
        cursor = since
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for message in self.messages[cursor:]:
                        if predicate(message):
                            return message
                    cursor = len(self.messages)
                    if self.closed_at is not None:
                        raise AmiError("AMI connection closed while waiting")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = "\n".join(str(m) for m in self.messages[-15:])
            raise AmiError(
                f"no matching AMI message within {timeout}s; last seen:\n{seen}"
            ) from None

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                if self.closed_at is None:
                    self._send({"Action": "Logoff"})
                self._writer.close()
                await asyncio.wait_for(self._writer.wait_closed(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
