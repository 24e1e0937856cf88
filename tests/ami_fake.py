"""A fake Asterisk Manager Interface server on loopback, for fast tests of ``screener.ami``.

It speaks the AMI framing (``\\r\\n`` lines, blank-line message ends), answers Login, Ping,
Getvar, Setvar, Redirect and CoreShowChannels from an in-memory channel table, and can push raw
bytes (recorded transcripts, forged events) or stop answering (a hung Asterisk).
The real Asterisk is exercised by the end-to-end tests in tests/e2e.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class FakeChannel:
    name: str
    uniqueid: str
    variables: dict[str, str] = field(default_factory=dict)


class FakeAmi:
    """A loopback AMI server. ``actions`` records every action received (as dicts)."""

    def __init__(self, secret: str = "s3cret") -> None:
        self.secret = secret
        self.channels: list[FakeChannel] = []
        self.actions: list[dict[str, str]] = []
        self.hung = False
        self.writers: list[asyncio.StreamWriter] = []
        self.logins = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def find(self, name: str) -> FakeChannel | None:
        for ch in self.channels:
            if name in (ch.name, ch.uniqueid):
                return ch
        return None

    async def push(self, raw: bytes) -> None:
        """Send raw bytes to every connected client (events, forgeries, transcripts)."""
        for w in self.writers:
            w.write(raw)
            await w.drain()

    async def drop_clients(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                message = _parse(block)
                self.actions.append(message)
                if self.hung:
                    continue
                writer.write(self._answer(message))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    def _answer(self, m: dict[str, str]) -> bytes:
        action = m.get("Action", "").lower()
        aid = m.get("ActionID", "")
        if action == "login":
            if m.get("Secret") != self.secret:
                return _msg(Response="Error", ActionID=aid, Message="Authentication failed")
            self.logins += 1
            return _msg(Response="Success", ActionID=aid, Message="Authentication accepted") + _msg(
                Event="FullyBooted", Privilege="system,all", Status="Fully Booted"
            )
        if action == "ping":
            return _msg(Response="Success", ActionID=aid, Ping="Pong", Timestamp="1.0")
        if action == "getvar":
            ch = self.find(m.get("Channel", ""))
            if ch is None:
                return _msg(Response="Error", ActionID=aid, Message="No such channel")
            var = m.get("Variable", "")
            value = {"UNIQUEID": ch.uniqueid, "CHANNEL(name)": ch.name}.get(var)
            if value is None:
                value = ch.variables.get(var, "")
            return _msg(Response="Success", ActionID=aid, Variable=var, Value=value)
        if action == "setvar":
            ch = self.find(m.get("Channel", ""))
            if ch is None:
                return _msg(Response="Error", ActionID=aid, Message="No such channel")
            ch.variables[m.get("Variable", "")] = m.get("Value", "")
            return _msg(Response="Success", ActionID=aid, Message="Variable Set")
        if action == "redirect":
            return self._redirect(m, aid)
        if action == "coreshowchannels":
            out = _msg(
                Response="Success",
                ActionID=aid,
                EventList="start",
                Message="Channels will follow",
            )
            for ch in self.channels:
                out += _msg(Event="CoreShowChannel", ActionID=aid, Channel=ch.name)
            return out + _msg(
                Event="CoreShowChannelsComplete",
                ActionID=aid,
                EventList="Complete",
                ListItems=str(len(self.channels)),
            )
        return _msg(Response="Error", ActionID=aid, Message="Invalid/unknown command")

    def _redirect(self, m: dict[str, str], aid: str) -> bytes:
        first = self.find(m.get("Channel", ""))
        if first is None:
            return _msg(
                Response="Error", ActionID=aid, Message=f"Channel does not exist: {m['Channel']}"
            )
        extra = m.get("ExtraChannel")
        if extra is not None and self.find(extra) is None:
            return _msg(
                Response="Error", ActionID=aid, Message=f"ExtraChannel does not exist: {extra}"
            )
        first.variables["_context"] = m.get("Context", "")
        if extra is not None:
            second = self.find(extra)
            assert second is not None
            second.variables["_context"] = m.get("ExtraContext", "")
            return _msg(Response="Success", ActionID=aid, Message="Dual Redirect successful")
        return _msg(Response="Success", ActionID=aid, Message="Redirect successful")


def _parse(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode().split("\r\n"):
        if ": " in line:
            k, v = line.split(": ", 1)
            out[k] = v
    return out


def _msg(**headers: str) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"


def event(**headers: str) -> bytes:
    """An AMI event message as Asterisk frames it."""
    return _msg(**headers)
