"""Detect the flag key sequence in a stream of DTMF digits, per channel (pure, no I/O).

Used by the DTMF detection mode, for PBXs whose dialplan cannot get the features.conf
application map. Digits older than ``timeout`` seconds before the next one start a new sequence,
like Asterisk's ``featuredigittimeout``.

>>> d = KeySequenceDetector("*9", timeout=1.5)
>>> d.feed("PJSIP/agent1-00000001", "*", 10.0)
False
>>> d.feed("PJSIP/agent1-00000001", "9", 10.4)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

_MAX_CHANNELS = 10_000


@dataclass(slots=True)
class _Progress:
    digits: str = ""
    last: float = 0.0


@dataclass(slots=True)
class KeySequenceDetector:
    """Tracks the digits each channel sent recently; bounded in memory."""

    key: str
    timeout: float
    _channels: dict[str, _Progress] = field(default_factory=dict)

    def feed(self, channel: str, digit: str, now: float) -> bool:
        """Record a digit; ``True`` when it completes the key sequence on that channel."""
        progress = self._channels.get(channel)
        if progress is None:
            if len(self._channels) >= _MAX_CHANNELS:
                self._evict(now)
            progress = self._channels[channel] = _Progress()
        if now - progress.last > self.timeout:
            progress.digits = ""
        progress.digits = (progress.digits + digit[:1])[-len(self.key) :]
        progress.last = now
        if progress.digits == self.key:
            del self._channels[channel]
            return True
        return False

    def _evict(self, now: float) -> None:
        stale = [c for c, p in self._channels.items() if now - p.last > self.timeout]
        for channel in stale or list(self._channels)[: _MAX_CHANNELS // 2]:
            del self._channels[channel]

    def __len__(self) -> int:
        return len(self._channels)
