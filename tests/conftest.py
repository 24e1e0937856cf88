"""Shared fixtures. The lab ones (real redis-server, Asterisk, SIPp) come from ``tests/lab``.

Redis fixtures (``redis_server``, ``store``, ``redis_raw``, ``dead_redis``) live in the plugin
``tests/plugins/redis_fixtures.py``, loaded here. Lab fixtures:

- ``lab_required`` (session): skip locally / fail when ``CI=true`` if a lab part is missing
- ``lab_prompts`` (session): the screener prompts, built once
- ``asterisk_session`` / ``asterisk``: one lab Asterisk for the session; ``asterisk`` makes sure
  it runs (SIGCONT, restart) before each test and hangs every channel up after it
- ``ami_observer``: the full-privilege ``lab`` AMI user, recording everything
- ``sipp``: a :class:`~tests.lab.sipp.SippFactory`; its processes are killed at teardown

Diagnostics (Asterisk log of the test, SIPp traces) are printed at teardown: pytest shows them
only for failing tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.lab import in_ci, missing
from tests.lab.ami import AmiObserver
from tests.lab.asterisk import AsteriskLab
from tests.lab.daemon import ScreenerDaemon
from tests.lab.prompts import install_lab_prompts
from tests.lab.redis import RedisServer
from tests.lab.sipp import SippFactory

pytest_plugins = ("tests.plugins.redis_fixtures",)


def require_lab(problems: list[str]) -> None:
    """Skip (locally) or fail (CI) when a lab part is missing."""
    if not problems:
        return
    message = "lab unavailable: " + "; ".join(problems)
    if in_ci():
        pytest.fail(message + " (CI=true: lab tests are never skipped)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def lab_required() -> None:
    """Skip (locally) or fail (CI) unless every lab part is present."""
    require_lab(missing())


@pytest.fixture(scope="session")
def lab_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The screener prompts, built once (see :func:`tests.lab.prompts.install_lab_prompts`)."""
    out = tmp_path_factory.mktemp("prompts")
    install_lab_prompts(out)
    return out


@pytest.fixture(scope="session")
def asterisk_session(lab_required: None, lab_prompts: Path) -> Iterator[AsteriskLab]:
    lab = AsteriskLab(prompts=lab_prompts)
    lab.start()
    print(f"lab asterisk {lab.id}: started in {lab.startup_seconds:.2f}s, dir {lab.dir}")
    yield lab
    lab.stop()
    if os.environ.get("SCREENER_LAB_KEEP") != "1":
        shutil.rmtree(lab.dir, ignore_errors=True)


@pytest.fixture
def asterisk(asterisk_session: AsteriskLab) -> Iterator[AsteriskLab]:
    """The session's Asterisk, running and without channels; its log tail printed at teardown."""
    lab = asterisk_session
    lab.sigcont()
    if not lab.running():
        lab.start()
    log_start = lab.full_log.stat().st_size if lab.full_log.exists() else 0
    yield lab
    lab.sigcont()
    if lab.running():
        lab.hangup_all()
    print(f"--- asterisk full log of this test ({lab.full_log}) ---")
    with lab.full_log.open("rb") as log:
        log.seek(log_start)
        print(log.read()[-20000:].decode(errors="replace"))


@pytest.fixture
async def ami_observer(asterisk: AsteriskLab) -> AsyncIterator[AmiObserver]:
    """A connected AMI client logged in as ``lab`` (read=all, write=all), recording everything."""
    observer = AmiObserver(
        asterisk.ami_port, asterisk.secrets.lab_user, asterisk.secrets.lab_secret
    )
    await observer.connect()
    yield observer
    await observer.close()


@pytest.fixture
def sipp(asterisk: AsteriskLab, tmp_path: Path) -> Iterator[SippFactory]:
    """Starts SIPp callers/agents against ``asterisk``; all are killed at teardown."""
    factory = SippFactory(asterisk, tmp_path / "sipp")
    yield factory
    # Hang calls up while the SIPp processes still answer: a BYE to a dead SIPp is resent for
    # half a minute and lands on the next test's SIPp listening on the same port.
    if asterisk.running():
        asterisk.sigcont()
        asterisk.hangup_all()
    factory.close()
    print(factory.describe())


ANALYSIS_SECONDS = 2


@pytest.fixture
async def fast_analysis(ami_observer: AmiObserver) -> AsyncIterator[int]:
    """Shorten the analysis queue wait (global SCREENER_ANALYSIS_SECONDS) for this test."""
    name = "SCREENER_ANALYSIS_SECONDS"
    reply = await ami_observer.action({"Action": "Getvar", "Variable": name})
    old = reply.get("Value") or "15"
    await ami_observer.action(
        {"Action": "Setvar", "Variable": name, "Value": str(ANALYSIS_SECONDS)}
    )
    yield ANALYSIS_SECONDS
    await ami_observer.action({"Action": "Setvar", "Variable": name, "Value": old})


class DaemonFactory:
    """Starts ``screener run`` against the lab Asterisk and Redis; stops them at teardown."""

    def __init__(self, asterisk: AsteriskLab, redis: RedisServer, base: Path) -> None:
        self.asterisk = asterisk
        self.redis = redis
        self.base = base
        self.daemons: list[ScreenerDaemon] = []

    def __call__(
        self, *, lab_user: bool = False, env: dict[str, str] | None = None
    ) -> ScreenerDaemon:
        """A started daemon; ``lab_user`` logs in as the unfiltered full-privilege user (a PBX
        that did not install the shipped least-privilege user) instead of ``screener``."""
        daemon = ScreenerDaemon.on_lab(
            self.base / f"daemon-{len(self.daemons)}",
            self.asterisk,
            self.redis.url,
            lab_user=lab_user,
            env=env,
        )
        self.daemons.append(daemon)
        daemon.start()
        return daemon


@pytest.fixture
def screener(
    asterisk: AsteriskLab, redis_server: RedisServer, store: object, tmp_path: Path
) -> Iterator[DaemonFactory]:
    """A factory of real screener daemons (``screener run``) on the lab; Redis flushed first."""
    factory = DaemonFactory(asterisk, redis_server, tmp_path)
    yield factory
    for daemon in factory.daemons:
        daemon.stop()
        print(f"--- screener log ({daemon.log}) ---")
        print(daemon.tail(200))
