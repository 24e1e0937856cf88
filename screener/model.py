"""Value types shared by the core and the edges: frozen, slotted, free of I/O.

Everything that crosses a module boundary is one of these. Caller-controlled text (the caller
number and name) only ever lives in a :class:`CallerId`, whose ``raw`` field keeps the exact value
Asterisk saw and whose other fields are derived, safe forms.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from screener.number import ANONYMOUS_WORDS, NumberInfo


class Presentation(StrEnum):
    """Caller-ID presentation, as the centre sees it (collapsed from Asterisk's eight values)."""

    ALLOWED = "allowed"
    WITHHELD = "withheld"
    UNAVAILABLE = "unavailable"

    @classmethod
    def from_asterisk(cls, pres: str, number: str) -> Presentation:
        """Map ``CALLERID(pres)`` (``allowed_not_screened``, ``prohib``, ``unavailable``...)."""
        value = pres.strip().lower()
        if value.startswith("prohib"):
            return cls.WITHHELD
        if value.startswith("unavailable") or number.strip(" ").lower() in ANONYMOUS_WORDS:
            return cls.UNAVAILABLE
        return cls.ALLOWED


class FlagSource(StrEnum):
    """How the agent raised the flag."""

    FEATURE = "feature"  # the features.conf applicationmap key (recommended)
    DTMF = "dtmf"  # the same key sequence seen in DTMFEnd events
    API = "api"  # the HTTP endpoint or CLI, for an agent-desktop button


@dataclass(frozen=True, slots=True)
class CallerId:
    """A caller's identity as received, plus its normalised forms.

    ``raw`` and ``raw_name`` are the attacker-controlled values exactly as Asterisk had them
    (decoded from the base64 the dialplan hands over). Never put them in a key, a log line, a
    metric label or an AMI action; use ``key`` (safe for Redis keys) and ``masked`` instead.
    """

    raw: str
    raw_name: str
    presentation: Presentation
    info: NumberInfo

    @property
    def key(self) -> str:
        """The identity used in Redis keys: E.164, ``anonymous``, or a hash of the raw value."""
        return self.info.key

    @property
    def masked(self) -> str:
        return self.info.masked


@dataclass(frozen=True, slots=True)
class Flag:
    """One agent's flag of one call: everything recorded about it.

    ``flag_id`` is the caller channel's Uniqueid, so a replayed or repeated press of the same call
    is the same flag (idempotent everywhere: spool, Redis, metrics).
    """

    flag_id: str
    caller: CallerId
    called: str
    hotline: str
    queue: str
    agent: str
    agent_channel: str
    caller_channel: str
    uniqueid: str
    linkedid: str
    source: FlagSource
    at: datetime
    tz: str = field(default="UTC")

    @property
    def hour(self) -> int:
        return self.at.hour

    @property
    def weekday(self) -> int:
        """ISO weekday, Monday = 1 ... Sunday = 7."""
        return self.at.isoweekday()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the inverse of :meth:`from_dict`."""
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["hour"] = self.hour
        data["weekday"] = self.weekday
        data["caller"]["presentation"] = str(self.caller.presentation)
        data["source"] = str(self.source)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=True, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Flag:
        caller = data["caller"]
        return cls(
            flag_id=data["flag_id"],
            caller=CallerId(
                raw=caller["raw"],
                raw_name=caller["raw_name"],
                presentation=Presentation(caller["presentation"]),
                info=NumberInfo(**caller["info"]),
            ),
            called=data["called"],
            hotline=data["hotline"],
            queue=data["queue"],
            agent=data["agent"],
            agent_channel=data["agent_channel"],
            caller_channel=data["caller_channel"],
            uniqueid=data["uniqueid"],
            linkedid=data["linkedid"],
            source=FlagSource(data["source"]),
            at=datetime.fromisoformat(data["at"]),
            tz=data.get("tz", "UTC"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Flag:
        return cls.from_dict(json.loads(text))


class FlagOutcome(StrEnum):
    """What became of a flag request: one value per log line and metric sample."""

    RECORDED = "recorded"  # caller moved and flag stored (or spooled)
    DUPLICATE = "duplicate"  # this call was already flagged: nothing more done
    NOT_INBOUND = "not_inbound"  # internal or outbound call: nobody moved
    CALLER_GONE = "caller_gone"  # the caller hung up before we could move them
    REJECTED = "rejected"  # failed verification (a forged or stale request): counted as attack
    FAILED = "failed"  # Asterisk did not answer in time or refused the redirect


# --- AMI domain events: what ami.py hands to the service (only hints, never trusted alone) ---


@dataclass(frozen=True, slots=True)
class FlagRequested:
    """A ``UserEvent: ScreenerFlag`` from the screener-flag Gosub. Only a claim until verified."""

    agent_channel: str
    token: str
    received_at: float  # time.monotonic() when the event was read


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A ``DTMFEnd`` event (direction Received): a digit an endpoint sent to Asterisk."""

    channel: str
    uniqueid: str
    digit: str
    received_at: float


@dataclass(frozen=True, slots=True)
class AmiConnected:
    """Login succeeded (first time or after a reconnect)."""


@dataclass(frozen=True, slots=True)
class AmiDisconnected:
    """The AMI connection was lost or declared dead by the watchdog."""

    reason: str


AmiEvent = FlagRequested | DtmfReceived | AmiConnected | AmiDisconnected
