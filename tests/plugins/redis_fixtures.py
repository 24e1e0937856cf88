"""A real ``redis-server`` for the tests, and a clean :class:`~screener.store.Store` per test.

Load with ``pytest -p tests.plugins.redis_fixtures`` or ``pytest_plugins`` in ``conftest.py``.

- ``redis_server`` (session): one throw-away server (:class:`tests.lab.redis.RedisServer`) on a
  free loopback port, no persistence.
- ``store`` (function): a ``Store`` on that server, ``FLUSHDB`` before the test and ``aclose()``
  after (arq's pattern).
- ``redis_raw`` (function): a plain ``redis.asyncio`` client on the same database, for looking
  at what the store wrote (keys, TTLs) without going through the code under test.
- ``dead_redis`` (function): a dedicated server of its own, for tests that stop, kill or freeze
  Redis without touching the session one.

A missing ``redis-server`` binary skips these tests locally and fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from tests.lab.redis import RedisServer

if TYPE_CHECKING:
    from screener.store import Store

PREFIX = "screener"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_redis_server() -> None:
    """Skip (locally) or fail (in CI) when the ``redis-server`` binary is not on PATH."""
    if shutil.which("redis-server") is None:
        message = "redis-server not found on PATH (apt-get install redis-server)"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole session."""
    require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the test database (independent of ``Store``)."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_server: RedisServer, redis_raw: aioredis.Redis) -> AsyncIterator[Store]:
    """A Store on an empty database, closed after the test."""
    # imported here, not at the top: a -p plugin loads before pytest-cov starts measuring
    from screener.store import Store

    await redis_raw.flushdb()
    s = Store.from_url(redis_server.url, prefix=PREFIX, timeout=2.0)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def dead_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started server of the test's own, which the test may stop, kill or SIGSTOP."""
    require_redis_server()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()  # also SIGCONTs a frozen server first
