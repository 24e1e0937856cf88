"""Redis persistence: the only module that imports ``redis``.

Every public method wraps its Redis calls in ``asyncio.timeout`` and turns ``RedisError`` (and
timeouts) into :class:`~screener.errors.StoreError`, so callers handle one error type. Writes that
touch several keys run as one Lua script: a flag is recorded completely or not at all, and
recording the same flag twice is a no-op (the flag id is the caller channel's Uniqueid).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from screener.errors import StoreError
from screener.keys import DAY, KeySpace
from screener.model import Flag

logger = logging.getLogger(__name__)

T = TypeVar("T")

# KEYS: flag flags caller caller_agents caller_hours caller_weekdays callers hours weekdays week
#       hotlines
# ARGV: json ttl ts flag_id agent hour weekday hotline masked kind region carrier area e164
#       caller_key
_RECORD_FLAG = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
local ttl = ARGV[2]
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[3], 'count', 1)
local ts = tonumber(ARGV[3])
local first = tonumber(redis.call('HGET', KEYS[3], 'first'))
if not first or ts < first then redis.call('HSET', KEYS[3], 'first', ARGV[3]) end
local last = tonumber(redis.call('HGET', KEYS[3], 'last'))
if not last or ts >= last then
  redis.call('HSET', KEYS[3], 'last', ARGV[3], 'last_flag', ARGV[4])
end
redis.call('HSET', KEYS[3], 'masked', ARGV[9], 'kind', ARGV[10], 'region', ARGV[11],
           'carrier', ARGV[12], 'area', ARGV[13], 'e164', ARGV[14])
redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[5])
redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
redis.call('HINCRBY', KEYS[6], ARGV[7], 1)
for i = 3, 6 do redis.call('EXPIRE', KEYS[i], ttl) end
redis.call('ZINCRBY', KEYS[7], 1, ARGV[15])
redis.call('HINCRBY', KEYS[8], ARGV[6], 1)
redis.call('HINCRBY', KEYS[9], ARGV[7], 1)
redis.call('HINCRBY', KEYS[10], ARGV[7] .. ':' .. ARGV[6], 1)
redis.call('HINCRBY', KEYS[11], ARGV[8], 1)
return 1
"""


@dataclass(frozen=True, slots=True)
class CallerStats:
    """Per-caller aggregates as stored (``agents`` = distinct agents who flagged)."""

    key: str
    count: int
    first: float
    last: float
    agents: int
    masked: str
    kind: str
    region: str
    hours: dict[int, int]
    weekdays: dict[int, int]


@dataclass(frozen=True, slots=True)
class Patterns:
    """Overall time patterns: hour of day, ISO weekday, and the weekday x hour heatmap."""

    hours: dict[int, int]
    weekdays: dict[int, int]
    week: dict[tuple[int, int], int]
    hotlines: dict[str, int]


class Store:
    """Typed access to screener's Redis data.

    >>> store = Store.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> await store.record_flag(flag, retention_days=400)  # doctest: +SKIP
    True
    """

    def __init__(self, client: aioredis.Redis, keys: KeySpace, timeout: float = 1.0) -> None:
        self._redis = client
        self.keys = keys
        self.timeout = timeout
        self._record = client.register_script(_RECORD_FLAG)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "screener", timeout: float = 1.0) -> Store:
        """Build a store on a lazily connecting client (no I/O until the first call)."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            health_check_interval=30,
        )
        return cls(client, KeySpace(prefix), timeout)

    async def _call(self, what: str, op: Awaitable[T], timeout: float | None = None) -> T:
        try:
            async with asyncio.timeout(timeout or self.timeout):
                return await op
        except TimeoutError:
            raise StoreError(f"redis {what}: timed out") from None
        except RedisError as e:
            raise StoreError(f"redis {what}: {e}") from e

    async def ping(self, timeout: float | None = None) -> None:
        """Check Redis answers.

        Raises:
            StoreError: Redis is unreachable or too slow.
        """
        await self._call("ping", self._redis.ping(), timeout)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def record_flag(self, flag: Flag, retention_days: int) -> bool:
        """Store a flag and update every aggregate atomically; ``False`` if it was already stored.

        Raises:
            StoreError: Redis failed; nothing was written.
        """
        k = self.keys
        ck = flag.caller.key
        info = flag.caller.info
        keys = [
            k.flag(flag.flag_id),
            k.flags,
            k.caller(ck),
            k.caller_agents(ck),
            k.caller_hours(ck),
            k.caller_weekdays(ck),
            k.callers,
            k.hours,
            k.weekdays,
            k.week,
            k.hotlines,
        ]
        args: list[Any] = [
            flag.to_json(),
            retention_days * DAY,
            f"{flag.at.timestamp():.6f}",
            flag.flag_id,
            flag.agent,
            flag.hour,
            flag.weekday,
            flag.hotline,
            info.masked,
            info.kind,
            info.region,
            info.carrier,
            info.area,
            info.e164,
            ck,
        ]
        created = await self._call("record_flag", self._record(keys=keys, args=args))
        return bool(created)

    async def get_flag(self, flag_id: str) -> Flag | None:
        """The stored flag, or ``None``.

        Raises:
            StoreError: Redis failed.
        """
        raw = await self._call("get_flag", self._redis.get(self.keys.flag(flag_id)))
        return Flag.from_json(raw) if raw else None

    async def recent_flags(self, limit: int = 50, since: float | None = None) -> list[Flag]:
        """The latest flags, newest first (at most ``limit``, optionally only after ``since``).

        Raises:
            StoreError: Redis failed.
        """
        lo = f"({since}" if since is not None else "-inf"
        ids = await self._call(
            "recent_flags",
            self._redis.zrevrangebyscore(self.keys.flags, "+inf", lo, start=0, num=limit),
        )
        if not ids:
            return []
        raws = await self._call(
            "recent_flags", self._redis.mget([self.keys.flag(str(i)) for i in ids])
        )
        return [Flag.from_json(r) for r in raws if r]

    async def caller_stats(self, caller_key: str) -> CallerStats | None:
        """Aggregates for one caller, or ``None`` if never flagged (or expired).

        Raises:
            StoreError: Redis failed.
        """
        k = self.keys
        async with self._redis.pipeline(transaction=False) as p:
            p.hgetall(k.caller(caller_key))
            p.zcard(k.caller_agents(caller_key))
            p.hgetall(k.caller_hours(caller_key))
            p.hgetall(k.caller_weekdays(caller_key))
            main, agents, hours, weekdays = await self._call("caller_stats", p.execute())
        if not main:
            return None
        return CallerStats(
            key=caller_key,
            count=int(main.get("count", 0)),
            first=float(main.get("first", 0)),
            last=float(main.get("last", 0)),
            agents=int(agents),
            masked=main.get("masked", ""),
            kind=main.get("kind", ""),
            region=main.get("region", ""),
            hours={int(h): int(n) for h, n in hours.items()},
            weekdays={int(d): int(n) for d, n in weekdays.items()},
        )

    async def patterns(self) -> Patterns:
        """Overall hour-of-day, weekday, heatmap and hotline counts.

        Raises:
            StoreError: Redis failed.
        """
        k = self.keys
        async with self._redis.pipeline(transaction=False) as p:
            p.hgetall(k.hours)
            p.hgetall(k.weekdays)
            p.hgetall(k.week)
            p.hgetall(k.hotlines)
            hours, weekdays, week, hotlines = await self._call("patterns", p.execute())
        heat: dict[tuple[int, int], int] = {}
        for cell, n in week.items():
            d, h = cell.split(":")
            heat[(int(d), int(h))] = int(n)
        return Patterns(
            hours={int(h): int(n) for h, n in hours.items()},
            weekdays={int(d): int(n) for d, n in weekdays.items()},
            week=heat,
            hotlines={name: int(n) for name, n in hotlines.items()},
        )

    async def expire_flags(self, older_than: float) -> int:
        """Drop flags older than ``older_than`` (epoch) from the event log; returns how many.

        The flag records themselves expire on their own (``EX`` at write time); this trims the
        index so it never points at expired records.

        Raises:
            StoreError: Redis failed.
        """
        removed = await self._call(
            "expire_flags", self._redis.zremrangebyscore(self.keys.flags, "-inf", older_than)
        )
        return int(removed)
