"""In-memory doubles for the service's seams (``service.Asterisk``, ``service.FlagStore``).

They keep the semantics the service relies on, not just canned answers: Asterisk resolves a
channel by name *or* Uniqueid, reads functions such as ``CHANNEL(linkedid)``, answers unknown
channels with ``ChannelNotFound`` and redirects both channels of a call in one action.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from screener.errors import AmiError, ChannelNotFound, StoreError
from screener.model import Flag


@dataclass
class FakeChannel:
    name: str
    uniqueid: str
    linkedid: str
    vars: dict[str, str] = field(default_factory=dict)
    context: str = "from-trunk"


@dataclass(frozen=True)
class Redirect:
    channel: str
    context: str
    extra_channel: str
    extra_context: str


class FakeAsterisk:
    """Live channels, their variables, and the redirects asked for."""

    def __init__(self) -> None:
        self.live: dict[str, FakeChannel] = {}
        self.redirects: list[Redirect] = []
        self.getvars: list[tuple[str, str]] = []
        self.hang_up_on_redirect: set[str] = set()  # callers who hang up as they are moved
        self.fail_with: AmiError | None = None  # every action fails with this

    # -- building the scene ---------------------------------------------------------------
    def add(
        self, name: str, uniqueid: str, linkedid: str | None = None, **variables: str
    ) -> FakeChannel:
        channel = FakeChannel(name, uniqueid, linkedid or uniqueid, dict(variables))
        self.live[name] = channel
        return channel

    def hangup(self, name_or_uid: str) -> None:
        del self.live[self._find(name_or_uid).name]

    def _find(self, name_or_uid: str) -> FakeChannel:
        if name_or_uid in self.live:
            return self.live[name_or_uid]
        for channel in self.live.values():
            if channel.uniqueid == name_or_uid:
                return channel
        raise ChannelNotFound(f"Getvar: Channel {name_or_uid[:40]!r} does not exist.")

    # -- service.Asterisk -----------------------------------------------------------------
    async def getvar(self, channel: str, variable: str) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.getvars.append((channel, variable))
        ch = self._find(channel)
        functions = {
            "UNIQUEID": ch.uniqueid,
            "CHANNEL(linkedid)": ch.linkedid,
            "CHANNEL(name)": ch.name,
        }
        if variable in functions:
            return functions[variable]
        return ch.vars.get(variable, "")

    async def redirect(
        self, channel: str, context: str, extra_channel: str = "", extra_context: str = ""
    ) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        caller = self._find(channel)
        if caller.name in self.hang_up_on_redirect:
            self.hangup(caller.name)
            raise ChannelNotFound("Redirect: Channel specified does not exist")
        agent = self._find(extra_channel) if extra_channel else None
        self.redirects.append(Redirect(channel, context, extra_channel, extra_context))
        caller.context = context
        if agent is not None:
            agent.context = extra_context

    async def channels(self) -> list[str]:
        if self.fail_with is not None:
            raise self.fail_with
        return list(self.live)


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()


@dataclass
class Call:
    """One hotline call, answered by an agent: the two channels the service looks at."""

    caller: FakeChannel
    agent: FakeChannel
    token: str


def inbound_call(
    asterisk: FakeAsterisk,
    *,
    n: int = 1,
    agent: str = "PJSIP/agent1",
    number: str = "13812341234",
    name: str = "Caller Name",
    pres: str = "allowed_not_screened",
    did: str = "4008001234",
    queue: str = "hotline",
    marked: bool = True,
) -> Call:
    """A caller on the trunk bridged to ``agent``, as the shipped dialplan leaves them."""
    caller_uid = f"1700000000.{2 * n - 1}"
    agent_uid = f"1700000000.{2 * n}"
    caller_vars = {
        "SCREENER_CID_B64": b64(number),
        "SCREENER_CNAM_B64": b64(name),
        "SCREENER_CID_PRES": pres,
        "SCREENER_DID": did,
        "SCREENER_QUEUE": queue,
    }
    if marked:
        caller_vars["SCREENER_INBOUND"] = "1"
    caller = asterisk.add(f"PJSIP/trunk-{2 * n - 1:08x}", caller_uid, **caller_vars)
    token = secrets.token_hex(20)
    agent_ch = asterisk.add(
        f"{agent}-{2 * n:08x}", agent_uid, caller_uid, SCREENER_FLAG_TOKEN=token
    )
    return Call(caller, agent_ch, token)


class FlakyStore:
    """A ``service.FlagStore`` in memory that can be taken down (raises ``StoreError``)."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.flags: dict[str, Flag] = {}
        self.calls = 0

    async def record_flag(self, flag: Flag, retention_days: int) -> bool:
        self.calls += 1
        if self.down:
            raise StoreError("redis record_flag: Connection refused")
        if flag.flag_id in self.flags:
            return False
        self.flags[flag.flag_id] = flag
        return True
