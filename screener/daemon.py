"""The composition root: builds every part, runs them, and shuts them down in order.

Theory of operation
-------------------
Start-up fails loudly: Redis and AMI are each retried a bounded number of times (the retries
left are logged), then the daemon exits with the reason. At run time it degrades instead:

* AMI events arrive on a bounded queue (filled by panoramisk callbacks that only enqueue). One
  consumer task reads it and starts a tracked task per flag request, each its own error boundary,
  so a slow Asterisk reply never holds up the next event.
* Flags go to the local spool before the caller is moved, and leave it once Redis has them; a
  flusher task retries spooled flags every ``SPOOL_FLUSH_INTERVAL`` seconds while Redis is away.
* A watchdog pings Asterisk and forces a reconnect when it stops answering.
* A retention task trims the flag index once an hour.
* The FastAGI server answers the dialplan's screening requests (each connection its own error
  boundary; see ``agi_server.py``), a learning task refreshes the high-risk hours, and a sweeper
  deletes expired rules and refreshes the blocklist gauges.
* Each flag newly stored in Redis is checked for an automatic block (quorum of agents).
* Under systemd (``Type=notify``, ``WatchdogSec=``) the daemon reports ``READY=1`` once serving
  and ``WATCHDOG=1`` from its event loop at a third of the watchdog period: a frozen loop (which
  would hold callers in the screening AGI) stops the pings, and systemd kills and restarts it.

Shutdown (SIGTERM, or SIGINT; a second SIGINT exits at once): stop taking FastAGI connections
(the dialplan then fails open: calls go to agents), stop the HTTP server, let flag
tasks finish for up to ``shutdown_timeout`` seconds, cancel the rest, flush the spool once more,
close Redis, then close AMI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from screener import statistics
from screener.admin import RuleAdmin
from screener.agi_server import AgiServer
from screener.ami import AmiClient
from screener.config import Settings, systemd_notify
from screener.errors import StoreError
from screener.http_api import HttpApi
from screener.keys import DAY
from screener.metrics import Metrics
from screener.model import AmiEvent, DtmfReceived, FlagRequested
from screener.screening import ScreeningService
from screener.service import FlagService
from screener.spool import Spool
from screener.store import Store

logger = logging.getLogger(__name__)

SPOOL_FLUSH_INTERVAL = 2.0
RETENTION_INTERVAL = 3600.0
EVENT_QUEUE_SIZE = 10_000
MAX_FLAG_TASKS = 256


async def connect_redis(store: Store, retries: int, delay: float = 1.0) -> None:
    """Ping Redis until it answers, at most ``retries`` more times.

    Raises:
        StoreError: still unreachable after the last retry.
    """
    while True:
        try:
            await store.ping()
            return
        except StoreError as e:
            if retries <= 0:
                raise
            logger.warning("redis not ready, retrying retries_left=%d error=%s", retries, e)
            retries -= 1
            await asyncio.sleep(delay)


class Daemon:
    """screener run: AMI intake, flag handling, spool, HTTP API and metrics."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(registry or CollectorRegistry())
        self.store = Store.from_settings(settings.redis)
        self.spool = Spool(settings.flag.spool_dir)
        self.events: asyncio.Queue[AmiEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self.ami = AmiClient(
            settings.ami, self.events, self.metrics, dtmf=settings.flag.detect_dtmf
        )
        self.service = FlagService(settings, self.ami, self.store, self.spool, self.metrics)
        self.screening = ScreeningService(settings, self.store, self.metrics)
        self.service.on_recorded = self.screening.consider_auto_block
        self.agi = AgiServer(
            {"screen": self.screening.handle_agi},
            settings.agi.host,
            settings.agi.port,
            read_timeout=settings.agi.read_timeout,
            max_connections=settings.agi.max_connections,
            on_error=self.screening.on_agi_error,
            on_suspicious=self.screening.on_suspicious,
        )
        self.http = HttpApi(
            settings.http,
            self.metrics,
            self.service,
            self.store,
            self.health,
            RuleAdmin(settings, self.store),
        )
        self._flag_tasks: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(MAX_FLAG_TASKS)
        self.ready = asyncio.Event()

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports: ok while logged in to AMI."""
        return {
            "ok": self.ami.connected,
            "ami": self.ami.connected,
            "spooled_flags": len(self.spool),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, serve until ``stop`` is set, then shut down gracefully.

        Raises:
            StoreError: Redis unreachable at start-up.
            AmiError: Asterisk unreachable or login refused at start-up.
            OSError: the spool directory or a listening port is unusable.
        """
        s = self.settings
        self.spool.open()
        self.metrics.spool_pending.set(len(self.spool))
        try:
            await connect_redis(self.store, s.redis.startup_retries)
            self.metrics.redis_up.set(1)
            await self.ami.connect()
            await self.http.start()
            await self.agi.start()
        except BaseException:
            await self.http.close()
            await self._close_edges()
            raise
        tasks = [
            asyncio.create_task(self.ami.watchdog(), name="ami-watchdog"),
            asyncio.create_task(self._consume(), name="ami-consumer"),
            asyncio.create_task(self._flush_loop(), name="spool-flusher"),
            asyncio.create_task(self._retention_loop(), name="retention"),
            asyncio.create_task(
                self._every(s.screening.learn_interval, "learn", self._learn), name="learn"
            ),
            asyncio.create_task(
                self._every(s.screening.sweep_interval, "sweep", self._sweep), name="sweep"
            ),
        ]
        logger.info(
            "screener running ami=%s:%d http=%s:%d agi=%s:%d",
            s.ami.host,
            s.ami.port,
            s.http.host,
            self.http.port,
            s.agi.host,
            self.agi.port,
        )
        self.ready.set()
        try:
            await stop.wait()
        finally:
            logger.info("screener stopping")
            await self.agi.close(drain_timeout=1.0)
            await self.http.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._drain(s.shutdown_timeout)
            with contextlib.suppress(StoreError):
                await self.service.flush_spool()
            await self._close_edges()
            logger.info("screener stopped spooled_flags=%d", len(self.spool))

    async def _close_edges(self) -> None:
        await self.store.aclose()
        await self.ami.close()

    async def _drain(self, timeout: float) -> None:
        if not self._flag_tasks:
            return
        _, pending = await asyncio.wait(self._flag_tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._guarded(coro))
        self._flag_tasks.add(task)
        task.add_done_callback(self._flag_tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> None:
        async with self._slots:
            try:
                await coro
            except Exception:
                self.metrics.errors.labels(component="flag").inc()
                logger.exception("flag handling failed; the call goes on unchanged")

    async def _consume(self) -> None:
        while True:
            event = await self.events.get()
            if isinstance(event, FlagRequested):
                self._spawn(self.service.on_flag_requested(event))
            elif isinstance(event, DtmfReceived) and self.service.dtmf_completes(event):
                # every digit is fed to the detector here, in order; only a completed key
                # costs a task
                self._spawn(self.service.flag_dtmf(event))

    async def _flush_loop(self) -> None:
        while True:
            if len(self.spool):
                try:
                    await self.service.flush_spool()
                except Exception:
                    self.metrics.errors.labels(component="spool").inc()
                    logger.exception("spool flush failed")
            await asyncio.sleep(SPOOL_FLUSH_INTERVAL)

    async def _learn(self) -> None:
        """Statistics gauges and high-risk hours, from one read of the flag patterns."""
        patterns = await statistics.refresh(self.store, self.metrics)
        self.screening.learn(patterns.hours)

    async def _sweep(self) -> None:
        await self.screening.sweep_expired()
        await self.screening.refresh_gauges()

    async def _every(
        self, interval: float, what: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``job`` now and then every ``interval`` seconds; a failure is logged and counted,
        never fatal."""
        while True:
            try:
                await job()
                self.metrics.redis_up.set(1)
            except StoreError as e:
                self.metrics.redis_up.set(0)
                self.metrics.errors.labels(component="redis").inc()
                logger.warning("%s skipped, redis unavailable error=%s", what, e)
            except Exception:
                self.metrics.errors.labels(component=what).inc()
                logger.exception("%s failed", what)
            await asyncio.sleep(interval)

    async def _retention_loop(self) -> None:
        while True:
            cutoff = time.time() - self.settings.flag.retention_days * DAY
            try:
                removed = await self.store.expire_flags(cutoff)
                if removed:
                    logger.info("retention removed flags=%d", removed)
            except StoreError as e:
                self.metrics.redis_up.set(0)
                self.metrics.errors.labels(component="redis").inc()
                logger.warning("retention skipped, redis unavailable error=%s", e)
            await asyncio.sleep(RETENTION_INTERVAL)


class SystemdNotifier:
    """The sd_notify datagram protocol (a dozen lines; the PyPI clients are unmaintained)."""

    def __init__(self, path: str | None) -> None:
        self._address = None if path is None else ("\0" + path[1:] if path[0] == "@" else path)

    def notify(self, state: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as e:
            logger.warning("systemd notify failed state=%s error=%s", state.split("=")[0], e)


async def _watchdog_pings(notifier: SystemdNotifier, period: float) -> None:
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(period / 3)


async def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM/SIGINT (a second SIGINT exits immediately)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupts = 0

    def on_signal(signum: int) -> None:
        nonlocal interrupts
        if signum == signal.SIGINT:
            interrupts += 1
            if interrupts > 1:
                logger.error("second interrupt, exiting now")
                os._exit(130)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    path, period = systemd_notify()
    notifier = SystemdNotifier(path)
    daemon = Daemon(settings)

    async def announce() -> None:
        await daemon.ready.wait()
        notifier.notify("READY=1")
        if period is not None:
            await _watchdog_pings(notifier, period)

    announcer = asyncio.create_task(announce(), name="systemd")
    try:
        await daemon.run(stop)
    finally:
        notifier.notify("STOPPING=1")
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer
