"""Redis persistence: the only module that imports ``redis``.

Every public method wraps its Redis calls in ``asyncio.timeout`` and turns ``RedisError`` (and
timeouts) into :class:`~screener.errors.StoreError`, so callers handle one error type. Writes that
touch several keys run as one Lua script: a flag is recorded completely or not at all, and
recording the same flag twice is a no-op (the flag id is the caller channel's Uniqueid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from screener.config import RedisSettings
from screener.errors import StoreError
from screener.keys import DAY, KeySpace
from screener.model import Flag, Presentation
from screener.rules import Match, Origin, Rule

logger = logging.getLogger(__name__)

T = TypeVar("T")

# KEYS: flag flags caller caller_agents caller_hours caller_weekdays callers hours weekdays week
#       hotlines day_hours day_callers day_hotlines anonymous_flags number_block blocks
# ARGV: json ttl ts flag_id agent hour weekday hotline masked kind region carrier area e164
#       caller_key anonymous('1'/'') block(''=none)
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
redis.call('HINCRBY', KEYS[12], ARGV[6], 1)
redis.call('ZINCRBY', KEYS[13], 1, ARGV[15])
redis.call('HINCRBY', KEYS[14], ARGV[8], 1)
for i = 12, 14 do redis.call('EXPIRE', KEYS[i], ttl) end
if ARGV[16] == '1' then redis.call('ZADD', KEYS[15], ARGV[3], ARGV[4]) end
if ARGV[17] ~= '' then
  redis.call('SADD', KEYS[16], ARGV[14])
  redis.call('EXPIRE', KEYS[16], ttl)
  redis.call('ZADD', KEYS[17], redis.call('SCARD', KEYS[16]), ARGV[17])
end
return 1
"""


# KEYS: rules seq index expiry audit guard autoblocks counts import-members
# ARGV: rule json starting '{"id":""' | expires_at or '' | guard ttl ms or '' | caller key |
#       by | action | why | now | counts field | import id or '' | index values...
# A rule added with an import id is staged: stored and indexed, but screening and listing ignore
# it until the import is committed (see _CANDIDATES and Store.import_rules).
_ADD_RULE = """
if ARGV[3] ~= '' then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[3]) then return false end
  redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
end
local id = 'r' .. redis.call('INCR', KEYS[2])
local head = '{"id":"' .. id .. '"'
if ARGV[10] ~= '' then
  head = head .. ',"import":"' .. ARGV[10] .. '"'
  redis.call('SADD', KEYS[9], id)
end
local json = head .. string.sub(ARGV[1], 9)
redis.call('HSET', KEYS[1], id, json)
redis.call('HINCRBY', KEYS[8], ARGV[9], 1)
for i = 11, #ARGV do
  local cur = redis.call('HGET', KEYS[3], ARGV[i])
  redis.call('HSET', KEYS[3], ARGV[i], cur and (cur .. ' ' .. id) or id)
end
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[4], ARGV[2], id) end
redis.call('XADD', KEYS[5], '*', 'at', ARGV[8], 'by', ARGV[5], 'action', ARGV[6],
           'rule', id, 'why', ARGV[7], 'data', json)
return id
"""

# KEYS: rules index expiry audit counts guard
# ARGV: id | the rule json as read (compare-and-delete) | by | action | why | now | counts field |
#       index values...   (guard: an automatic block's one-at-a-time key, deleted with it)
_REMOVE_RULE = """
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return 0 end
if json ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[5], ARGV[7], -1) <= 0 then redis.call('HDEL', KEYS[5], ARGV[7]) end
for i = 8, #ARGV do
  local cur = redis.call('HGET', KEYS[2], ARGV[i])
  if cur then
    local kept = {}
    for id in string.gmatch(cur, '%S+') do
      if id ~= ARGV[1] then kept[#kept + 1] = id end
    end
    if #kept == 0 then redis.call('HDEL', KEYS[2], ARGV[i])
    else redis.call('HSET', KEYS[2], ARGV[i], table.concat(kept, ' ')) end
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[6])
redis.call('XADD', KEYS[4], '*', 'at', ARGV[6], 'by', ARGV[3], 'action', ARGV[4],
           'rule', ARGV[1], 'why', ARGV[5], 'data', json)
return 1
"""

# KEYS: rules number-index prefix-index anonymous-index imports
# ARGV: number key | anonymous kind or '' | E.164 or '' (its prefixes +8, +86, ... are looked up)
# Rules staged by an import that is not committed are left out.
_CANDIDATES = """
local ids = {}
local function add(s)
  if s then for id in string.gmatch(s, '%S+') do ids[#ids + 1] = id end end
end
add(redis.call('HGET', KEYS[2], ARGV[1]))
local e164 = ARGV[3]
if #e164 > 1 then
  local prefixes = {}
  for n = 2, #e164 do prefixes[#prefixes + 1] = string.sub(e164, 1, n) end
  for _, s in ipairs(redis.call('HMGET', KEYS[3], unpack(prefixes))) do add(s) end
end
if ARGV[2] ~= '' then
  add(redis.call('HGET', KEYS[4], ARGV[2]))
  if ARGV[2] ~= 'any' then add(redis.call('HGET', KEYS[4], 'any')) end
end
if #ids == 0 then return {} end
local found = {}
local states = {}
for _, json in ipairs(redis.call('HMGET', KEYS[1], unpack(ids))) do
  if json then
    local import = string.match(json, '^{"id":"r%d+","import":"(i%d+)"')
    if import and states[import] == nil then
      states[import] = redis.call('HGET', KEYS[5], import) == 'committed'
    end
    if not import or states[import] then found[#found + 1] = json end
  end
end
return found
"""

# KEYS: a ZSET, then one key per member | ARGV: the members. Atomic, so a member flagged again
# meanwhile (its key back) is kept.
_PRUNE_GONE = """
local removed = 0
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""

_INDEX_KIND = {
    Match.NUMBER: "number",
    Match.PREFIX: "prefix",
    Match.RANGE: "prefix",
    Match.ANONYMOUS: "anonymous",
}


def number_block(e164: str) -> str:
    """The 100-number block of a number (its E.164 without the last two digits), the unit of
    prefix clusters: ``+8610123456`` for ``+861012345678``."""
    return e164[:-2] if len(e164) >= 9 else ""


def local_time(flag: Flag) -> datetime:
    """When the flag was raised, in its own time zone (``flag.tz``): the day, hour and weekday
    the aggregates are keyed by. ``flag.at`` as it is when ``tz`` is not a known zone."""
    try:
        return flag.at.astimezone(ZoneInfo(flag.tz))
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        return flag.at


def _count_field(rule: Rule) -> str:
    return f"{rule.list}:{rule.match}:{rule.origin}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to the rules, as the audit trail keeps it."""

    id: str  # the stream entry id (time-ordered)
    at: float
    by: str
    action: str  # add, import, remove, expire, auto
    rule: str
    why: str
    data: str  # the rule's JSON at that moment

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "by": self.by,
            "action": self.action,
            "rule": self.rule,
            "why": self.why,
            "data": json.loads(self.data) if self.data else None,
        }


@dataclass(frozen=True, slots=True)
class DayTotals:
    """One day's flags by hour of day and by hotline."""

    hours: dict[int, int]
    hotlines: dict[str, int]


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
    carrier: str = ""
    area: str = ""
    e164: str = ""


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

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        timeout: float = 1.0,
        wait_replicas: int = 0,
    ) -> None:
        self._redis = client
        self.wait_replicas = wait_replicas
        self.keys = keys
        self.timeout = timeout
        self._record = client.register_script(_RECORD_FLAG)
        self._add_rule = client.register_script(_ADD_RULE)
        self._remove_rule = client.register_script(_REMOVE_RULE)
        self._candidates = client.register_script(_CANDIDATES)
        self._prune_gone = client.register_script(_PRUNE_GONE)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> Store:
        """A store on Redis as configured: one server by URL, or the master that Redis
        Sentinel names (re-resolved on every reconnect, so a failover is followed)."""
        if not settings.sentinels:
            store = cls.from_url(
                settings.url.get_secret_value(), prefix=settings.prefix, timeout=settings.timeout
            )
            store.wait_replicas = settings.wait_replicas
            return store
        from redis.asyncio.sentinel import Sentinel

        url = urlsplit(settings.url.get_secret_value())
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses(),
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
        )
        client = sentinel.master_for(
            settings.master_name,
            redis_class=aioredis.Redis,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            decode_responses=True,
            password=url.password,
            db=int(url.path.strip("/") or 0),
        )
        return cls(client, KeySpace(settings.prefix), settings.timeout, settings.wait_replicas)

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

    def record_flag_call(self, flag: Flag, retention_days: int) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the record script for ``flag`` (bulk loaders pipeline it)."""
        k = self.keys
        ck = flag.caller.key
        info = flag.caller.info
        local = local_time(flag)
        day = local.strftime("%Y%m%d")
        block = number_block(info.e164) if info.valid else ""
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
            k.day_hours(day),
            k.day_callers(day),
            k.day_hotlines(day),
            k.anonymous_flags,
            k.number_block(block or "-"),
            k.blocks,
        ]
        args: list[Any] = [
            flag.to_json(),
            retention_days * DAY,
            f"{flag.at.timestamp():.6f}",
            flag.flag_id,
            flag.agent,
            local.hour,
            local.isoweekday(),
            flag.hotline,
            info.masked,
            info.kind,
            info.region,
            info.carrier,
            info.area,
            info.e164,
            ck,
            "1" if flag.caller.presentation is not Presentation.ALLOWED or not info.e164 else "",
            block,
        ]
        return keys, args

    async def record_flag(self, flag: Flag, retention_days: int) -> bool:
        """Store a flag and update every aggregate atomically; ``False`` if it was already stored.

        Raises:
            StoreError: Redis failed; nothing was written.
        """
        keys, args = self.record_flag_call(flag, retention_days)
        created = await self._call("record_flag", self._record(keys=keys, args=args))
        await self._replicated("record_flag")
        return bool(created)

    async def _replicated(self, what: str) -> None:
        """With ``wait_replicas``: wait until that many replicas have our writes.

        Raises:
            StoreError: not replicated within the timeout (the caller keeps its spool copy).
        """
        if not self.wait_replicas:
            return
        wanted = self.wait_replicas
        timeout_ms = int(self.timeout * 1000)
        got = await self._call(what, self._redis.wait(wanted, timeout_ms), self.timeout * 2)
        if int(got) < wanted:
            raise StoreError(f"redis {what}: written but on {got} of {wanted} replicas")

    async def record_flags(self, flags: Iterable[Flag], retention_days: int) -> int:
        """Store many flags in one pipelined round trip (each still atomic on its own); returns
        how many were new. For bulk loads; the daemon records flags one by one.

        Raises:
            StoreError: Redis failed; some of the flags may be stored (recording is idempotent,
                so retrying the same batch is safe).
        """
        batch = list(flags)
        if not batch:
            return 0
        async with self._redis.pipeline(transaction=False) as p:
            for flag in batch:
                keys, args = self.record_flag_call(flag, retention_days)
                await self._record(keys=keys, args=args, client=p)
            created = await self._call(
                "record_flags", p.execute(), max(self.timeout, len(batch) / 5_000)
            )
        return sum(1 for c in created if c)

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
            carrier=main.get("carrier", ""),
            area=main.get("area", ""),
            e164=main.get("e164", ""),
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
        indexes (all flags, anonymous flags) so they never point at expired records.

        Raises:
            StoreError: Redis failed.
        """
        async with self._redis.pipeline(transaction=False) as p:
            p.zremrangebyscore(self.keys.flags, "-inf", older_than)
            p.zremrangebyscore(self.keys.anonymous_flags, "-inf", older_than)
            removed, _ = await self._call("expire_flags", p.execute())
        # The rankings keep a member per caller (its number) and per number block: drop those
        # whose own aggregates have expired, so no number outlives its retention there.
        await self._prune(self.keys.callers, self.keys.caller)
        await self._prune(self.keys.blocks, self.keys.number_block)
        return int(removed)

    async def _prune(self, index: str, key_of: Callable[[str], str], batch: int = 500) -> int:
        """Remove the members of the ZSET ``index`` whose key ``key_of(member)`` is gone."""
        removed, cursor = 0, 0
        while True:
            cursor, items = await self._call(
                "expire_flags", self._redis.zscan(index, cursor, count=batch)
            )
            members = [str(m) for m, _ in items]
            if members:
                keys = [index, *(key_of(m) for m in members)]
                removed += int(
                    await self._call("expire_flags", self._prune_gone(keys=keys, args=members))
                )
            if not cursor:
                return removed

    # -- rules -------------------------------------------------------------------------------
    def _add_call(
        self,
        rule: Rule,
        by: str,
        action: str,
        now: float,
        guard: tuple[str, float] | None = None,
        import_id: str = "",
    ) -> tuple[list[str], list[Any]]:
        k = self.keys
        caller_key = guard[0] if guard else "-"
        keys = [
            k.rules,
            k.rules_seq,
            k.rule_index(_INDEX_KIND[rule.match]),
            k.rules_expiry,
            k.audit,
            k.autoblock_guard(caller_key),
            k.autoblocks,
            k.rule_counts,
            k.import_members(import_id or "i0"),
        ]
        body = rule.to_json()
        assert body.startswith('{"id":""'), "rules are added without an id"
        args: list[Any] = [
            body,
            "" if rule.expires_at is None else f"{rule.expires_at:.3f}",
            "" if guard is None else str(max(int(guard[1] * 1000), 1)),
            caller_key,
            by,
            action,
            rule.reason,
            f"{now:.6f}",
            _count_field(rule),
            import_id,
            *rule.index,
        ]
        return keys, args

    async def add_rules(
        self, rules: Iterable[Rule], *, by: str, action: str, now: float
    ) -> list[str]:
        """Store new rules (ids assigned here) in one transaction: all or none.

        Each addition goes to the audit trail as ``action`` (``add``). For big batches use
        :meth:`import_rules`, which does not hold Redis for the whole batch.

        Raises:
            StoreError: Redis failed; nothing was stored.
        """
        return await self._add_batch(list(rules), by, action, now, "")

    async def _add_batch(
        self, batch: list[Rule], by: str, action: str, now: float, import_id: str
    ) -> list[str]:
        if not batch:
            return []
        await self.ping()  # a pipeline is not retried: refresh a connection Redis closed
        async with self._redis.pipeline(transaction=True) as p:
            for rule in batch:
                keys, args = self._add_call(rule, by, action, now, import_id=import_id)
                await self._add_rule(keys=keys, args=args, client=p)
            ids = await self._call("add_rules", p.execute(), max(self.timeout, len(batch) / 10_000))
        return [str(i) for i in ids]

    async def import_rules(
        self, rules: Iterable[Rule], *, by: str, why: str, now: float, chunk: int = 5000
    ) -> list[str]:
        """Store many rules so that they take effect together, without stalling Redis.

        The rules are staged in transactions of ``chunk`` (screening and listing ignore staged
        rules), then one command commits the import: from then on they all apply. If anything
        fails, the staged rules are withdrawn (now, or by :meth:`abort_stale_imports` if Redis
        is gone) and none ever applied. The audit trail gets one ``import`` entry per rule and an
        ``import-commit`` (or ``import-abort``) entry for the import.

        Raises:
            StoreError: Redis failed; nothing applies.
        """
        k = self.keys
        number = await self._call("import_rules", self._redis.incr(k.imports_seq))
        import_id = f"i{number}"
        await self._call(
            "import_rules", self._redis.hset(k.imports, import_id, f"pending:{now:.0f}")
        )
        batch = list(rules)
        ids: list[str] = []
        try:
            for start in range(0, len(batch), chunk):
                part = batch[start : start + chunk]
                ids += await self._add_batch(part, by, "import", now, import_id)
            await self._call("import_rules", self._commit(import_id, by, why, len(ids), now))
        except StoreError:
            with contextlib.suppress(StoreError):
                await self.abort_import(import_id, by=by, why=f"failed: {why}", now=now)
            raise
        return ids

    async def _commit(self, import_id: str, by: str, why: str, count: int, now: float) -> None:
        k = self.keys
        async with self._redis.pipeline(transaction=True) as p:
            p.hset(k.imports, import_id, "committed")
            p.delete(k.import_members(import_id))
            p.xadd(
                k.audit,
                {
                    "at": f"{now:.6f}",
                    "by": by,
                    "action": "import-commit",
                    "rule": import_id,
                    "why": f"{count} rules: {why}"[:300],
                    "data": "",
                },
            )
            await p.execute()

    async def abort_import(self, import_id: str, *, by: str, why: str, now: float) -> int:
        """Withdraw the staged rules of an import that was not committed; returns how many.

        Raises:
            StoreError: Redis failed.
        """
        k = self.keys
        state = await self._call("abort_import", self._redis.hget(k.imports, import_id))
        if state is None or state == "committed":
            return 0
        members = await self._call(
            "abort_import", self._redis.smembers(k.import_members(import_id))
        )
        removed = 0
        for rule_id in sorted(members, key=lambda r: int(str(r)[1:])):
            if await self.remove_rule(str(rule_id), by=by, why=why, now=now, action="import-abort"):
                removed += 1
        await self._call("abort_import", self._redis.delete(k.import_members(import_id)))
        await self._call("abort_import", self._redis.hset(k.imports, import_id, "aborted"))
        return removed

    async def abort_stale_imports(self, now: float, older_than: float = 3600.0) -> int:
        """Withdraw imports left pending (a crashed importer) for more than ``older_than``
        seconds; returns how many rules were withdrawn.

        Raises:
            StoreError: Redis failed.
        """
        states = await self._call("abort_stale_imports", self._redis.hgetall(self.keys.imports))
        removed = 0
        for import_id, state in states.items():
            kind, _, since = str(state).partition(":")
            if kind == "pending" and since.isdigit() and now - int(since) > older_than:
                removed += await self.abort_import(
                    str(import_id), by="screener", why="import never committed", now=now
                )
        return removed

    async def add_auto_block(self, rule: Rule, *, caller_key: str, now: float) -> str | None:
        """Store an automatic block unless one of this caller's is still running; counts the
        caller's automatic blocks (the escalation step). ``None``: one was already running.

        Raises:
            StoreError: Redis failed.
        """
        duration = (rule.expires_at or now) - now
        keys, args = self._add_call(rule, "screener", "auto", now, (caller_key, duration))
        rule_id = await self._call("add_auto_block", self._add_rule(keys=keys, args=args))
        return str(rule_id) if rule_id else None

    async def auto_blocks_of(self, caller_key: str) -> int:
        """How many automatic blocks this caller has had.

        Raises:
            StoreError: Redis failed.
        """
        n = await self._call("auto_blocks_of", self._redis.hget(self.keys.autoblocks, caller_key))
        return int(n or 0)

    async def get_rule(self, rule_id: str) -> Rule | None:
        """The rule, or ``None``.

        Raises:
            StoreError: Redis failed.
        """
        raw = await self._call("get_rule", self._redis.hget(self.keys.rules, rule_id))
        return Rule.from_json(raw) if raw else None

    async def remove_rule(
        self, rule_id: str, *, by: str, why: str, now: float, action: str = "remove"
    ) -> Rule | None:
        """Delete a rule and its index entries, and audit it; ``None`` if there was none.

        Raises:
            StoreError: Redis failed, or the rule changed under us (try again).
        """
        raw = await self._call("remove_rule", self._redis.hget(self.keys.rules, rule_id))
        if not raw:
            return None
        rule = Rule.from_json(raw)
        k = self.keys
        guard = (
            k.autoblock_guard(rule.value)
            if rule.origin is Origin.AUTO and rule.match is Match.NUMBER
            else k.autoblock_guard("-")
        )
        keys = [
            k.rules,
            k.rule_index(_INDEX_KIND[rule.match]),
            k.rules_expiry,
            k.audit,
            k.rule_counts,
            guard,
        ]
        args = [rule_id, raw, by, action, why, f"{now:.6f}", _count_field(rule), *rule.index]
        done = await self._call("remove_rule", self._remove_rule(keys=keys, args=args))
        if done == -1:
            raise StoreError(f"rule {rule_id} changed while being removed; try again")
        return rule if done == 1 else None

    async def candidate_rules(
        self, number_key: str, anonymous_kind: str, e164: str, timeout: float | None = None
    ) -> list[Rule]:
        """Every rule a caller's identity could match, in one round trip: by number key, by
        every prefix of ``e164`` (prefix rules and the prefixes covering ranges), and by
        ``anonymous_kind``. Unfiltered by time, scope or expiry: that is the policy's job.

        Raises:
            StoreError: Redis failed or took longer than ``timeout``.
        """
        k = self.keys
        keys = [
            k.rules,
            k.rule_index("number"),
            k.rule_index("prefix"),
            k.rule_index("anonymous"),
            k.imports,
        ]
        raws = await self._call(
            "candidate_rules",
            self._candidates(keys=keys, args=[number_key, anonymous_kind, e164]),
            timeout,
        )
        return [Rule.from_json(r) for r in raws if r]

    async def all_rules(self) -> list[Rule]:
        """Every rule, oldest first (HSCAN; for listing and export).

        Raises:
            StoreError: Redis failed.
        """
        found: list[Rule] = []
        imports = await self._call("all_rules", self._redis.hgetall(self.keys.imports))

        async def scan() -> None:
            async for _, raw in self._redis.hscan_iter(self.keys.rules, count=1000):
                data = json.loads(raw)
                staged = data.get("import")
                if staged is None or imports.get(staged) == "committed":
                    found.append(Rule.from_dict(data))

        await self._call("all_rules", scan(), max(self.timeout, 60.0))
        found.sort(key=lambda r: (r.created_at, int(r.id[1:])))
        return found

    async def rule_counts(self) -> dict[tuple[str, str, str], int]:
        """(list, match, origin) -> number of rules (kept by the add and remove scripts).

        Raises:
            StoreError: Redis failed.
        """
        raw = await self._call("rule_counts", self._redis.hgetall(self.keys.rule_counts))
        counts: dict[tuple[str, str, str], int] = {}
        for name, n in raw.items():
            rule_list, match, origin = str(name).split(":")
            counts[(rule_list, match, origin)] = int(n)
        return counts

    async def expired_rule_ids(self, now: float, limit: int = 500) -> list[str]:
        """Ids of rules whose expiry has passed (oldest first).

        Raises:
            StoreError: Redis failed.
        """
        ids = await self._call(
            "expired_rule_ids",
            self._redis.zrangebyscore(self.keys.rules_expiry, "-inf", now, start=0, num=limit),
        )
        return [str(i) for i in ids]

    async def audit_trail(self, limit: int = 100, rule_id: str | None = None) -> list[AuditEntry]:
        """The latest changes, newest first (optionally of one rule only).

        Raises:
            StoreError: Redis failed.
        """
        since = "-"
        if rule_id is not None:
            # entries about a rule are never older than the rule (ids are never reused), so
            # only the stream since its creation is read
            raw = await self._call("audit_trail", self._redis.hget(self.keys.rules, rule_id))
            if raw:
                since = str(int((Rule.from_json(raw).created_at - 3600) * 1000))  # clock skew
        entries: Any = await self._call(
            "audit_trail",
            self._redis.xrevrange(
                self.keys.audit, min=since, count=limit if rule_id is None else None
            ),
            max(self.timeout, 10.0),
        )
        out = []
        for entry_id, f in entries:
            if rule_id is not None and f.get("rule") != rule_id:
                continue
            out.append(
                AuditEntry(
                    id=str(entry_id),
                    at=float(f.get("at", 0)),
                    by=f.get("by", ""),
                    action=f.get("action", ""),
                    rule=f.get("rule", ""),
                    why=f.get("why", ""),
                    data=f.get("data", ""),
                )
            )
            if len(out) >= limit:
                break
        return out

    async def agents_who_flagged(self, caller_key: str, since: float) -> dict[str, float]:
        """Agent -> time of their latest flag of this caller, for flags after ``since``.

        Raises:
            StoreError: Redis failed.
        """
        pairs: Any = await self._call(
            "agents_who_flagged",
            self._redis.zrangebyscore(
                self.keys.caller_agents(caller_key), since, "+inf", withscores=True
            ),
        )
        return {str(a): float(t) for a, t in pairs}

    # -- reports -----------------------------------------------------------------------------
    async def flags_between(
        self, since: float, until: float, *, anonymous: bool = False, limit: int | None = None
    ) -> list[Flag]:
        """Flags in ``[since, until)`` oldest first; only withheld/unavailable callers' flags
        with ``anonymous``. Read in batches of 1,000.

        Raises:
            StoreError: Redis failed.
        """
        index = self.keys.anonymous_flags if anonymous else self.keys.flags
        ids: Any = await self._call(
            "flags_between",
            self._redis.zrangebyscore(
                index, since, f"({until}", start=None if limit is None else 0, num=limit
            ),
            max(self.timeout, 30.0),
        )
        found: list[Flag] = []
        for start in range(0, len(ids), 1000):
            batch = [self.keys.flag(str(i)) for i in ids[start : start + 1000]]
            raws = await self._call("flags_between", self._redis.mget(batch))
            found += [Flag.from_json(r) for r in raws if r]
        return found

    async def day_totals(self, days: list[str]) -> dict[str, DayTotals]:
        """Per day (``YYYYMMDD``): flags by hour and by hotline.

        Raises:
            StoreError: Redis failed.
        """
        k = self.keys
        async with self._redis.pipeline(transaction=False) as p:
            for day in days:
                p.hgetall(k.day_hours(day))
                p.hgetall(k.day_hotlines(day))
            raw = await self._call("day_totals", p.execute())
        out = {}
        for n, day in enumerate(days):
            hours, hotlines = raw[2 * n], raw[2 * n + 1]
            out[day] = DayTotals(
                hours={int(h): int(c) for h, c in hours.items()},
                hotlines={str(name): int(c) for name, c in hotlines.items()},
            )
        return out

    async def top_callers(
        self, days: list[str], limit: int, min_flags: int = 2
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
        """Over ``days``: the ``limit`` most-flagged callers, the callers flagged at least
        ``min_flags`` times (repeat offenders, most first, at most ``limit``), and the number of
        distinct callers. One ZUNIONSTORE into a scratch key that expires by itself.

        Raises:
            StoreError: Redis failed.
        """
        if not days:
            return [], [], 0
        k = self.keys
        scratch = k.scratch(f"callers-{days[0]}-{days[-1]}-{time.monotonic_ns()}")
        async with self._redis.pipeline(transaction=False) as p:
            p.zunionstore(scratch, [k.day_callers(d) for d in days])
            p.expire(scratch, 60)
            p.zrevrange(scratch, 0, limit - 1, withscores=True)
            p.zrevrangebyscore(scratch, "+inf", min_flags, start=0, num=limit, withscores=True)
            p.delete(scratch)
            distinct, _, top, repeat, _ = await self._call(
                "top_callers", p.execute(), max(self.timeout, 30.0)
            )
        return (
            [(str(c), int(n)) for c, n in top],
            [(str(c), int(n)) for c, n in repeat],
            int(distinct),
        )

    async def clusters(self, min_numbers: int, limit: int) -> list[tuple[str, list[str]]]:
        """Number blocks with at least ``min_numbers`` distinct flagged numbers, most first:
        ``(block, numbers)``.

        Raises:
            StoreError: Redis failed.
        """
        blocks: Any = await self._call(
            "clusters",
            self._redis.zrevrangebyscore(self.keys.blocks, "+inf", min_numbers, start=0, num=limit),
        )
        async with self._redis.pipeline(transaction=False) as p:
            for block in blocks:
                p.smembers(self.keys.number_block(str(block)))
            members = await self._call("clusters", p.execute())
        return [
            (str(block), sorted(str(m) for m in numbers))
            for block, numbers in zip(blocks, members, strict=True)
            if len(numbers) >= min_numbers
        ]

    async def top_sources(self, limit: int) -> tuple[list[CallerStats], int]:
        """The ``limit`` most-flagged callers (all time within retention) with their details,
        and how many distinct callers were flagged.

        Raises:
            StoreError: Redis failed.
        """
        k = self.keys
        async with self._redis.pipeline(transaction=False) as p:
            p.zrevrange(k.callers, 0, limit - 1)
            p.zcard(k.callers)
            top, total = await self._call("top_sources", p.execute())
        stats = [await self.caller_stats(str(key)) for key in top]
        return [s for s in stats if s is not None], int(total)

    async def cluster_count(self, min_numbers: int) -> int:
        """How many number blocks have at least ``min_numbers`` distinct flagged numbers.

        Raises:
            StoreError: Redis failed.
        """
        n = await self._call(
            "cluster_count", self._redis.zcount(self.keys.blocks, min_numbers, "+inf")
        )
        return int(n)
