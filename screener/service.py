"""Use cases: what happens when an agent flags a call. No library I/O of its own.

The service talks to Asterisk and Redis through the :class:`Asterisk` and :class:`FlagStore`
protocols (implemented by ``ami.AmiClient`` and ``store.Store``), so the same code runs against
the real parts and against recorded transcripts.

A flag request is a claim, never a fact: an event may be forged by a hostile caller ID (see
``ami.py``). Before anyone is moved, the claim is checked against live channel state with AMI
actions whose replies cannot be forged (unguessable ActionIDs):

* a feature-key request must carry the token the screener-flag Gosub stored on the very channel
  it names (compared in constant time);
* a DTMF sequence must come from a channel matching the configured agent patterns, and each
  event's Uniqueid must be that live channel's Uniqueid;
* the caller is the channel whose Uniqueid is the agent channel's Linkedid (this holds for direct
  PJSIP members, Local-channel members and blind-transferred calls alike), and, with the shipped
  dialplan, it must carry the ``SCREENER_INBOUND`` mark set on hotline entry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from screener.config import Settings
from screener.errors import AmiError, ChannelNotFound, StoreError
from screener.keyseq import KeySequenceDetector
from screener.metrics import Metrics
from screener.model import (
    AmiEvent,
    CallerId,
    DtmfReceived,
    Flag,
    FlagOutcome,
    FlagRequested,
    FlagSource,
    Presentation,
)
from screener.number import is_dialable, normalise
from screener.spool import Spool

logger = logging.getLogger(__name__)

CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_@;.:+#-]{0,127}")
UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TOKEN = re.compile(r"[0-9a-f]{40}")
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])?$")
MAX_RAW = 1024  # characters of a raw caller ID kept (Asterisk itself cuts at 79)
_RECENT = 4096


class Asterisk(Protocol):
    """What the service needs from Asterisk (``ami.AmiClient`` implements it)."""

    async def getvar(self, channel: str, variable: str) -> str: ...

    async def redirect(
        self, channel: str, context: str, extra_channel: str = "", extra_context: str = ""
    ) -> None: ...

    async def channels(self) -> list[str]: ...


class FlagStore(Protocol):
    """What the service needs from Redis (``store.Store`` implements it)."""

    async def record_flag(self, flag: Flag, retention_days: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class FlagResult:
    """The outcome of one flag request, with the flag when one was made."""

    outcome: FlagOutcome
    flag: Flag | None = None
    reason: str = ""


def printable(text: str, limit: int = 48) -> str:
    """An attacker-controlled string made safe for one log line (escaped, bounded)."""
    return ascii(text[:limit])[1:-1] + ("..." if len(text) > limit else "")


def agent_interface(channel: str) -> str:
    """``PJSIP/agent1-0000001a`` -> ``PJSIP/agent1`` (the queue member interface)."""
    return _CHANNEL_SUFFIX.sub("", channel)


def decode_b64(value: str) -> str:
    """Decode a base64 channel variable written by the dialplan; ``""`` if absent or broken."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.decode("utf-8", "replace")[:MAX_RAW]


class FlagService:
    """Turns flag requests (feature key, DTMF, API) into moved callers and recorded flags."""

    def __init__(
        self,
        settings: Settings,
        asterisk: Asterisk,
        store: FlagStore,
        spool: Spool,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.asterisk = asterisk
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.detector = KeySequenceDetector(settings.flag.key, settings.flag.dtmf_timeout)
        patterns = settings.flag.dtmf_channels
        self._dtmf_channels = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
            if settings.flag.detect_dtmf and patterns
            else None
        )
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()
        self.on_recorded: Callable[[Flag], Awaitable[object]] | None = None
        """Called once per flag newly stored in Redis (automatic blocks hang here)."""

    # -- entry points ------------------------------------------------------------------------
    async def handle(self, event: AmiEvent) -> FlagResult | None:
        """Act on one AMI event (the per-event boundary is the caller's)."""
        if isinstance(event, FlagRequested):
            return await self.on_flag_requested(event)
        if isinstance(event, DtmfReceived):
            return await self.on_dtmf(event)
        return None

    async def on_flag_requested(self, event: FlagRequested) -> FlagResult:
        """A ScreenerFlag UserEvent: verify its token on the live channel, then flag."""
        if not CHANNEL.fullmatch(event.agent_channel) or not TOKEN.fullmatch(event.token):
            return self._finish(
                FlagResult(FlagOutcome.REJECTED, reason="malformed flag event"),
                FlagSource.FEATURE,
                event.agent_channel,
                event.received_at,
            )
        return await self._flag(
            event.agent_channel, FlagSource.FEATURE, event.received_at, token=event.token
        )

    def dtmf_completes(self, event: DtmfReceived) -> bool:
        """Feed a received digit to the key detector (cheap, synchronous: called for every
        DTMFEnd); ``True`` when it completes the key on an agent channel."""
        if self._dtmf_channels is None or not self._dtmf_channels.match(event.channel):
            return False
        stream = f"{event.channel}\x00{event.uniqueid}"
        return self.detector.feed(stream, event.digit, event.received_at)

    async def on_dtmf(self, event: DtmfReceived) -> FlagResult | None:
        """A received digit: flag when it completes the key on an agent channel."""
        if not self.dtmf_completes(event):
            return None
        return await self.flag_dtmf(event)

    async def flag_dtmf(self, event: DtmfReceived) -> FlagResult:
        """The key was completed by DTMF: verify the events' channel and Uniqueid, then flag."""
        if not CHANNEL.fullmatch(event.channel) or not UNIQUEID.fullmatch(event.uniqueid):
            return self._finish(
                FlagResult(FlagOutcome.REJECTED, reason="malformed dtmf event"),
                FlagSource.DTMF,
                event.channel,
                event.received_at,
            )
        return await self._flag(
            event.channel, FlagSource.DTMF, event.received_at, uniqueid=event.uniqueid
        )

    async def flag_agent(self, target: str) -> FlagResult:
        """Flag the call an agent is on, by channel (``PJSIP/agent1-0000001a``) or interface
        (``PJSIP/agent1``): the agent-desktop button.

        Raises:
            AmiError: Asterisk did not answer the channel listing.
        """
        started = time.monotonic()
        if not CHANNEL.fullmatch(target):
            raise ValueError("agent must be a channel or interface name like PJSIP/agent1")
        channel = target
        if agent_interface(target) == target:
            live = await self.asterisk.channels()
            matches = [c for c in live if c != target and agent_interface(c) == target]
            if not matches:
                return self._finish(
                    FlagResult(FlagOutcome.NOT_INBOUND, reason="agent has no active call"),
                    FlagSource.API,
                    target,
                    started,
                )
            channel = matches[-1]
        return await self._flag(channel, FlagSource.API, started)

    # -- the flag itself ---------------------------------------------------------------------
    async def _flag(
        self,
        agent_channel: str,
        source: FlagSource,
        started: float,
        *,
        token: str | None = None,
        uniqueid: str | None = None,
    ) -> FlagResult:
        try:
            result = await self._verify_and_move(agent_channel, source, started, token, uniqueid)
        except AmiError as e:
            result = FlagResult(FlagOutcome.FAILED, reason=str(e))
        return self._finish(result, source, agent_channel, started)

    async def _verify_and_move(
        self,
        agent_channel: str,
        source: FlagSource,
        started: float,
        token: str | None,
        uniqueid: str | None,
    ) -> FlagResult:
        if agent_channel.startswith("Local/"):
            # Agents are devices. A Local channel's DTMF comes from its other half, which can
            # be the caller's side: never let a caller flag through one.
            return FlagResult(FlagOutcome.REJECTED, reason="key pressed on a Local channel")
        get = self.asterisk.getvar
        try:
            agent_uid, linkedid, live_token = await asyncio.gather(
                get(agent_channel, "UNIQUEID"),
                get(agent_channel, "CHANNEL(linkedid)"),
                get(agent_channel, "SCREENER_FLAG_TOKEN") if token is not None else _none(),
            )
        except ChannelNotFound:
            if source is FlagSource.API:
                return FlagResult(FlagOutcome.NOT_INBOUND, reason="agent channel is gone")
            return FlagResult(FlagOutcome.REJECTED, reason="named agent channel does not exist")
        if token is not None and not (
            live_token and hmac.compare_digest(live_token.encode(), token.encode())
        ):
            return FlagResult(FlagOutcome.REJECTED, reason="token does not match the channel")
        if uniqueid is not None and uniqueid != agent_uid:
            return FlagResult(FlagOutcome.REJECTED, reason="uniqueid does not match the channel")
        if not UNIQUEID.fullmatch(linkedid) or not UNIQUEID.fullmatch(agent_uid):
            return FlagResult(FlagOutcome.FAILED, reason="asterisk returned an unusable id")
        if linkedid == agent_uid:
            return FlagResult(FlagOutcome.NOT_INBOUND, reason="the agent placed this call")
        if linkedid in self._recent or linkedid in self._in_flight:
            return FlagResult(FlagOutcome.DUPLICATE, reason="call already flagged")
        self._in_flight.add(linkedid)
        try:
            return await self._move(agent_channel, agent_uid, linkedid, source, started)
        finally:
            self._in_flight.discard(linkedid)

    async def _caller_vars(self, linkedid: str) -> dict[str, str]:
        names = (
            "CHANNEL(name)",
            "SCREENER_INBOUND",
            "SCREENER_ANALYSED",
            "SCREENER_CID_B64",
            "SCREENER_CNAM_B64",
            "SCREENER_CID_PRES",
            "SCREENER_DID",
            "SCREENER_QUEUE",
        )
        values = await asyncio.gather(*(self.asterisk.getvar(linkedid, n) for n in names))
        found = dict(zip(names, values, strict=True))
        if found["SCREENER_INBOUND"] != "1" and not self.settings.flag.require_inbound_marker:
            # A PBX without the screener-inbound Gosub: read what Asterisk itself knows.
            # Getvar of a raw CALLERID(num) is cut at the first CR/LF by the AMI framing.
            extra = ("CALLERID(num)", "CALLERID(name)", "CALLERID(pres)", "CALLERID(dnid)")
            num, name, pres, dnid = await asyncio.gather(
                *(self.asterisk.getvar(linkedid, n) for n in extra)
            )
            found |= {
                "SCREENER_INBOUND": "1",
                "SCREENER_CID_B64": base64.b64encode(num.encode()).decode(),
                "SCREENER_CNAM_B64": base64.b64encode(name.encode()).decode(),
                "SCREENER_CID_PRES": pres,
                "SCREENER_DID": dnid,
            }
        return found

    async def _move(
        self,
        agent_channel: str,
        agent_uid: str,
        linkedid: str,
        source: FlagSource,
        started: float,
    ) -> FlagResult:
        try:
            v = await self._caller_vars(linkedid)
        except ChannelNotFound:
            return FlagResult(FlagOutcome.CALLER_GONE, reason="caller hung up")
        caller_channel = v["CHANNEL(name)"]
        if v["SCREENER_INBOUND"] != "1" or not CHANNEL.fullmatch(caller_channel):
            return FlagResult(FlagOutcome.NOT_INBOUND, reason="not a hotline call")
        if v["SCREENER_ANALYSED"]:
            return FlagResult(FlagOutcome.DUPLICATE, reason="caller already in analysis")
        flag = self._build_flag(v, agent_channel, agent_uid, linkedid, caller_channel, source)
        if not self.spool.put(flag):
            return FlagResult(FlagOutcome.DUPLICATE, flag, reason="flag already spooled")
        try:
            await self.asterisk.redirect(
                caller_channel,
                self.settings.flag.analysis_context,
                agent_channel,
                self.settings.flag.wrapup_context,
            )
        except ChannelNotFound:
            self.spool.remove(flag.flag_id)
            return FlagResult(FlagOutcome.CALLER_GONE, flag, reason="caller hung up")
        except AmiError:
            self.spool.remove(flag.flag_id)
            raise
        self.metrics.flag_redirect_seconds.observe(time.monotonic() - started)
        self._remember(linkedid)
        await self._persist(flag)
        return FlagResult(FlagOutcome.RECORDED, flag)

    def _build_flag(
        self,
        v: dict[str, str],
        agent_channel: str,
        agent_uid: str,
        linkedid: str,
        caller_channel: str,
        source: FlagSource,
    ) -> Flag:
        cfg = self.settings
        raw = decode_b64(v["SCREENER_CID_B64"])
        info = normalise(raw, cfg.numbers.default_region)
        called = v["SCREENER_DID"] if is_dialable(v["SCREENER_DID"]) else ""
        queue = (
            v["SCREENER_QUEUE"] if re.fullmatch(r"[A-Za-z0-9_-]{0,64}", v["SCREENER_QUEUE"]) else ""
        )
        return Flag(
            flag_id=f"{cfg.ami.node}-{linkedid}" if cfg.ami.node else linkedid,
            caller=CallerId(
                raw=raw,
                raw_name=decode_b64(v["SCREENER_CNAM_B64"]),
                presentation=Presentation.from_asterisk(v["SCREENER_CID_PRES"], raw),
                info=info,
            ),
            called=called,
            hotline=cfg.hotline_name(called),
            queue=queue,
            agent=(
                f"{agent_interface(agent_channel)}@{cfg.ami.node}"
                if cfg.ami.node
                else agent_interface(agent_channel)
            ),
            agent_channel=agent_channel,
            caller_channel=caller_channel,
            uniqueid=linkedid,
            linkedid=linkedid,
            source=source,
            at=datetime.now(cfg.numbers.zone),
            tz=cfg.numbers.timezone,
        )

    def _remember(self, flag_id: str) -> None:
        self._recent[flag_id] = None
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    async def _persist(self, flag: Flag) -> bool:
        """Write a spooled flag to Redis; on failure it stays spooled for :meth:`flush_spool`."""
        try:
            created = await self.store.record_flag(flag, self.settings.flag.retention_days)
        except StoreError as e:
            self.metrics.redis_up.set(0)
            self.metrics.errors.labels(component="redis").inc()
            self.metrics.spool_pending.set(len(self.spool))
            logger.warning("flag spooled, redis unavailable flag=%s error=%s", flag.flag_id, e)
            return False
        self.metrics.redis_up.set(1)
        self.spool.remove(flag.flag_id)
        if created and self.on_recorded is not None:
            try:
                await self.on_recorded(flag)
            except StoreError as e:
                self.metrics.errors.labels(component="redis").inc()
                logger.warning("after-flag step skipped flag=%s error=%s", flag.flag_id, e)
        return True

    async def flush_spool(self) -> int:
        """Write every spooled flag to Redis; returns how many were written.

        Stops at the first Redis failure (the rest stay spooled for the next round).
        """
        written = 0
        for flag in self.spool.pending():
            if not await self._persist(flag):
                break
            written += 1
        self.metrics.spool_pending.set(len(self.spool))
        if written:
            logger.info("spool flushed to redis flags=%d", written)
        return written

    def _finish(
        self, result: FlagResult, source: FlagSource, agent_channel: str, started: float
    ) -> FlagResult:
        m = self.metrics
        m.flag_requests.labels(outcome=str(result.outcome)).inc()
        ms = (time.monotonic() - started) * 1000
        if result.outcome is FlagOutcome.REJECTED:
            kind = "forged_dtmf" if source is FlagSource.DTMF else "forged_flag"
            m.attacks.labels(kind=kind).inc()
            logger.warning(
                "flag refused outcome=rejected source=%s agent=%s reason=%s",
                source,
                printable(agent_channel),
                result.reason,
            )
            return result
        flag = result.flag
        if result.outcome is FlagOutcome.RECORDED and flag is not None:
            info = flag.caller.info
            m.flags.labels(
                hotline=flag.hotline,
                queue=flag.queue or "none",
                presentation=str(flag.caller.presentation),
                source=str(source),
                kind=info.kind,
                region=info.region or "unknown",
            ).inc()
        logger.info(
            "flag outcome=%s source=%s agent=%s caller=%s hotline=%s ms=%.1f reason=%s",
            result.outcome,
            source,
            printable(agent_channel),
            flag.caller.masked if flag else "-",
            flag.hotline if flag else "-",
            ms,
            result.reason or "-",
        )
        return result


async def _none() -> str:
    return ""
