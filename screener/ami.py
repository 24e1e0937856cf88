"""The Asterisk Manager Interface edge: the only module that imports panoramisk.

Theory of operation
-------------------
panoramisk parses the AMI stream and matches replies to actions, but it has no timeouts, replays
unanswered actions after a reconnect, reconnects forever, never notices a hung Asterisk, and lets
an exception in an event callback tear down the TCP connection. :class:`AmiClient` wraps it so
that none of that reaches the rest of screener:

* Event callbacks only translate a message into a model event and ``put_nowait`` it on a queue
  the daemon owns; they never raise (a per-event boundary counts and logs the error).
* Every action goes through :meth:`AmiClient.action`: values are checked for characters that
  would change the action's meaning, each action carries an unguessable ActionID (a caller who
  injects text into events cannot forge the reply), and the wait is bounded by a timeout.
* On disconnect, panoramisk's queue of actions to replay is emptied: a late replayed Redirect
  could move a caller twice. Callers of ``action`` see a timeout instead and decide themselves.
* :meth:`AmiClient.watchdog` pings Asterisk; when a ping is not answered in time (Asterisk hung,
  SIGSTOP, half-open TCP) the transport is aborted, which makes panoramisk reconnect.

Events are only *claims*: a caller can forge whole AMI events through an unescaped caller ID
(see the lab notes), so the service verifies every claim with actions before it acts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol

from screener.config import AmiSettings
from screener.errors import AmiError, ChannelNotFound, UnsafeValueError
from screener.metrics import Metrics
from screener.model import (
    AmiConnected,
    AmiDisconnected,
    AmiEvent,
    DtmfReceived,
    FlagRequested,
)

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# Asterisk's error texts for a channel that is gone (main/manager.c): Getvar/Setvar say "No such
# channel", Redirect "Channel does not exist: X" / "ExtraChannel does not exist: X" / "... not up".
_CHANNEL_GONE = ("no such channel", "does not exist", "not up")
_NEVER = 10**7  # seconds: disables panoramisk's own pinger (the watchdog replaces it)


class ActionFailed(AmiError):
    """Asterisk answered the action with an error."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action} failed: {message}")
        self.message = message


def check_value(value: str) -> str:
    """Return ``value`` if it can be sent as an AMI header value.

    Raises:
        UnsafeValueError: it contains CR, LF or another control character.
    """
    if _UNSAFE.search(value):
        raise UnsafeValueError(f"refusing control characters in an AMI value: {value[:40]!r}")
    return value


def _text(value: Any) -> str:
    """A header value as one string (panoramisk turns a repeated header into a list)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)  # multi-valued: can never pass validation
    return "" if value is None else str(value)


def _headers(message: Mapping[str, Any]) -> dict[str, Any]:
    """Lower-cased header name -> (name, value), panoramisk's own storage when it is one."""
    store = getattr(message, "_store", None)
    if isinstance(store, dict):
        return store
    return {str(k).lower(): (k, v) for k, v in message.items()}


def _get(store: dict[str, Any], name: str) -> str:
    item = store.get(name)
    return "" if item is None else _text(item[1])


def to_dtmf(store: dict[str, Any], now: float) -> DtmfReceived | None:
    """A ``DTMFEnd`` (direction Received) as a model event; other directions are ignored."""
    if _get(store, "direction") != "Received":
        return None
    return DtmfReceived(
        channel=_get(store, "channel"),
        uniqueid=_get(store, "uniqueid"),
        digit=_get(store, "digit"),
        received_at=now,
    )


def to_flag_request(store: dict[str, Any], now: float) -> FlagRequested | None:
    """A ``UserEvent: ScreenerFlag`` as a model event; other user events are ignored."""
    if _get(store, "userevent") != "ScreenerFlag":
        return None
    return FlagRequested(
        agent_channel=_get(store, "agentchannel"), token=_get(store, "token"), received_at=now
    )


def to_event(message: Mapping[str, Any], now: float) -> AmiEvent | None:
    """Translate an AMI event message into a model event, or ``None`` if screener ignores it."""
    store = _headers(message)
    name = _get(store, "event")
    if name == "UserEvent":
        return to_flag_request(store, now)
    if name == "DTMFEnd":
        return to_dtmf(store, now)
    return None


class _GuardedProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol, where a message it cannot handle costs that message only.

    A caller ID holding CR LF adds header lines to every event that carries it, so one message
    can hold ``Event`` or ``ActionID`` twice; panoramisk turns a repeated header into a list and
    then raises on it (``'list' object has no attribute 'lower'``, ``unhashable type: 'list'``)
    inside ``data_received``, where asyncio answers by dropping the AMI connection, and every
    other message of that chunk with it. Such a message is dropped and counted instead.
    """

    def handle_message(self, message: Any) -> None:
        try:
            super().handle_message(message)
        except Exception as e:
            hook = getattr(self.factory, "on_bad_message", None)
            if hook is not None:
                hook(e)


class _GuardedManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with its pinger off, login failures kept, and no late reconnects."""

    closing = False
    login_error = ""
    on_bad_message: Any = None

    def ping(self) -> None:
        """Replaced by :meth:`AmiClient.watchdog`."""

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closing:
            return None
        return super().connect(*args, **kwargs)

    def login(self, future: asyncio.Future[Any]) -> bool:
        ok: bool = super().login(future)
        if not ok:
            self.login_error = _text(future.result().get("Message")) or "login refused"
        return ok


class AmiClient:
    """A guarded AMI connection that feeds model events into ``events``."""

    def __init__(
        self,
        settings: AmiSettings,
        events: asyncio.Queue[AmiEvent],
        metrics: Metrics,
        *,
        dtmf: bool = False,
    ) -> None:
        """``dtmf``: also take in DTMFEnd events (only the DTMF detection mode needs them)."""
        self.settings = settings
        self._subscribed = ("UserEvent", "DTMFEnd") if dtmf else ("UserEvent",)
        self.events = events
        self.metrics = metrics
        self._logged_in = asyncio.Event()
        self._last_state_change = time.monotonic()
        self._manager: _GuardedManager | None = None
        self.connections = 0
        self._seen = {name: metrics.ami_events.labels(event=name) for name in self._subscribed}

    @property
    def connected(self) -> bool:
        return self._logged_in.is_set()

    def _build(self) -> _GuardedManager:
        secret = self.settings.resolved_secret()
        manager = _GuardedManager(
            host=self.settings.host,
            port=self.settings.port,
            username=self.settings.username,
            secret=secret.get_secret_value() if secret else "",
            ping_delay=_NEVER,
            reconnect_timeout=max(1, round(self.settings.reconnect_delay)),
            loop=asyncio.get_running_loop(),
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
            forgetable_actions=("ping", "login", "getvar", "setvar", "redirect"),
            protocol_factory=_GuardedProtocol,
        )
        manager.log = logging.getLogger("screener.ami.panoramisk")
        manager.on_bad_message = self._on_bad_message
        for name in self._subscribed:
            manager.register_event(name, self._on_message)
        return manager

    # -- panoramisk callbacks: enqueue only, never raise ---------------------------------------
    def _on_message(self, _manager: Any, message: Any) -> None:
        try:
            store = _headers(message)
            name = _get(store, "event")
            counter = self._seen.get(name)
            if counter is None:
                return
            counter.inc()
            event = (to_dtmf if name == "DTMFEnd" else to_flag_request)(store, time.monotonic())
            if event is not None:
                self.events.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.errors.labels(component="ami_queue_full").inc()
            logger.error("ami event queue full, event dropped")
        except Exception:
            self.metrics.errors.labels(component="ami_event").inc()
            logger.exception("ami event could not be handled")

    def _on_bad_message(self, error: Exception) -> None:
        # Repeated headers are the mark of a forged event (see _GuardedProtocol); the message
        # text holds caller text, so only the error type is logged.
        self.metrics.attacks.labels(kind="ami_malformed").inc()
        logger.warning(
            "ami message dropped, panoramisk cannot handle it error=%s", type(error).__name__
        )

    def _on_login(self, _manager: Any) -> None:
        self.connections += 1
        self._logged_in.set()
        self._last_state_change = time.monotonic()
        self.metrics.ami_connected.set(1)
        logger.info(
            "ami logged in host=%s port=%s connection=%d",
            self.settings.host,
            self.settings.port,
            self.connections,
        )
        self.events.put_nowait(AmiConnected())

    def _on_disconnect(self, manager: Any, exc: Any) -> None:
        # panoramisk would replay these after the next login; a late Redirect could move a
        # caller twice, so drop them: their awaiting callers time out and decide themselves.
        manager.awaiting_actions.clear()
        was_connected = self._logged_in.is_set()
        self._logged_in.clear()
        self._last_state_change = time.monotonic()
        self.metrics.ami_connected.set(0)
        if was_connected:
            reason = "lost" if exc is None or isinstance(exc, Exception) else "shutdown"
            self.metrics.ami_reconnects.labels(reason=reason).inc()
            logger.warning("ami connection lost, reconnecting")
            self.events.put_nowait(AmiDisconnected(reason))

    # -- lifecycle ---------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect and log in, retrying a bounded number of times.

        Raises:
            AmiError: Asterisk refused the login, or was unreachable after every retry.
        """
        self._manager = self._build()
        self._manager.connect()
        wait = self.settings.action_timeout + self.settings.reconnect_delay
        retries = self.settings.startup_retries
        while True:
            try:
                async with asyncio.timeout(wait):
                    await self._logged_in.wait()
                return
            except TimeoutError:
                pass
            if self._manager.login_error:
                await self.close()
                raise AmiError(f"AMI login refused: {self._manager.login_error}")
            if retries <= 0:
                await self.close()
                raise AmiError(
                    f"AMI at {self.settings.host}:{self.settings.port} not ready "
                    f"after {self.settings.startup_retries} retries"
                )
            retries -= 1
            logger.warning("ami not ready, retrying retries_left=%d", retries)

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        if self._manager is not None:
            self._manager.closing = True
            self._manager.close()
        self._logged_in.clear()
        self.metrics.ami_connected.set(0)

    def abort(self, reason: str) -> None:
        """Drop the TCP connection now; panoramisk reconnects after ``reconnect_delay``."""
        manager = self._manager
        protocol = getattr(manager, "protocol", None)
        transport = getattr(protocol, "transport", None)
        if manager is None or transport is None:
            return
        was_connected = self._logged_in.is_set()
        logger.warning("ami connection declared dead reason=%s", reason)
        if was_connected:
            self.metrics.ami_reconnects.labels(reason=reason).inc()
            self._logged_in.clear()
            self.metrics.ami_connected.set(0)
            self.events.put_nowait(AmiDisconnected(reason))
        self._last_state_change = time.monotonic()
        transport.abort()

    async def watchdog(self) -> None:
        """Run forever: ping Asterisk, and abort a connection that stopped answering."""
        s = self.settings
        while True:
            await asyncio.sleep(s.ping_interval)
            if not self.connected:
                if time.monotonic() - self._last_state_change > s.watchdog_timeout:
                    self.abort("login_timeout")
                continue
            try:
                await self.action({"Action": "Ping"}, timeout=s.watchdog_timeout)
            except AmiError:
                self.abort("watchdog")

    # -- actions -----------------------------------------------------------------------------
    async def action(self, fields: Mapping[str, str], timeout: float | None = None) -> Any:
        """Send one action and return its (single) reply message.

        Raises:
            UnsafeValueError: a value contains control characters (nothing was sent).
            AmiError: not connected, no reply in time, or an error reply (:class:`ActionFailed`,
                :class:`~screener.errors.ChannelNotFound`).
        """
        for key, value in fields.items():
            check_value(key)
            check_value(value)
        name = fields.get("Action", "?")
        manager = self._manager
        if manager is None or not self.connected:
            raise AmiError(f"{name}: not connected to Asterisk")
        action_id = "scr-" + secrets.token_hex(12)
        action = manager.send_action({**fields, "ActionID": action_id})
        try:
            async with asyncio.timeout(timeout or self.settings.action_timeout):
                reply = await asyncio.shield(action)
        except TimeoutError:
            action.cancel()
            responses = getattr(manager.protocol, "responses", {})
            responses.pop(action_id, None)
            wait = timeout or self.settings.action_timeout
            raise AmiError(f"{name}: no reply within {wait}s") from None
        if isinstance(reply, list):
            reply = reply[0]
        if _text(reply.get("Response")) != "Success":
            message = _text(reply.get("Message"))
            lowered = message.lower()
            if any(m in lowered for m in _CHANNEL_GONE):
                raise ChannelNotFound(f"{name}: {message}")
            raise ActionFailed(name, message)
        return reply

    async def channels(self) -> list[str]:
        """Names of all live channels (``CoreShowChannels``; needs write=reporting).

        Raises:
            AmiError: see :meth:`action`.
        """
        fields = {"Action": "CoreShowChannels", "ActionID": "scr-" + secrets.token_hex(12)}
        manager = self._manager
        if manager is None or not self.connected:
            raise AmiError("CoreShowChannels: not connected to Asterisk")
        action = manager.send_action(fields, as_list=True)
        try:
            async with asyncio.timeout(self.settings.action_timeout):
                replies = await asyncio.shield(action)
        except TimeoutError:
            action.cancel()
            raise AmiError("CoreShowChannels: no complete reply in time") from None
        return [
            _text(r.get("Channel")) for r in replies if _text(r.get("Event")) == "CoreShowChannel"
        ]

    async def getvar(self, channel: str, variable: str) -> str:
        """Read a channel variable or function (``""`` when unset).

        Raises:
            ChannelNotFound: the channel is gone.
            AmiError: see :meth:`action`.
        """
        reply = await self.action({"Action": "Getvar", "Channel": channel, "Variable": variable})
        return _text(reply.get("Value"))

    async def setvar(self, channel: str, variable: str, value: str) -> None:
        """Set a channel variable.

        Raises:
            AmiError: see :meth:`action`.
        """
        await self.action(
            {"Action": "Setvar", "Channel": channel, "Variable": variable, "Value": value}
        )

    async def redirect(
        self, channel: str, context: str, extra_channel: str = "", extra_context: str = ""
    ) -> None:
        """Send ``channel`` (and optionally ``extra_channel``) to ``context``,s,1 in one action.

        Raises:
            ChannelNotFound: a channel is gone.
            AmiError: see :meth:`action`.
        """
        fields = {
            "Action": "Redirect",
            "Channel": channel,
            "Context": context,
            "Exten": "s",
            "Priority": "1",
        }
        if not extra_channel:
            await self.action(fields)
            return
        try:
            await self.action(
                fields
                | {
                    "ExtraChannel": extra_channel,
                    "ExtraContext": extra_context,
                    "ExtraExten": "s",
                    "ExtraPriority": "1",
                }
            )
        except ChannelNotFound as e:
            # Asterisk moves neither channel when the extra one is gone (the agent hung up
            # right after pressing the key): the caller must still be moved.
            if "extrachannel" not in str(e).lower() and "extra channel" not in str(e).lower():
                raise
            logger.info("extra channel gone, redirecting the first channel alone")
            await self.action(fields)
