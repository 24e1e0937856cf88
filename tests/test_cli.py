"""Tests for screener.cli through click's CliRunner (real Redis for ``flags``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from prometheus_client import CollectorRegistry

from screener import __version__
from screener.cli import main
from screener.config import Settings, load
from screener.errors import AmiError, StoreError
from screener.http_api import HttpApi
from screener.metrics import Metrics
from screener.model import Flag
from screener.service import FlagService
from screener.spool import Spool
from screener.store import Store
from tests.factories import AT, make_flag
from tests.fakes import FakeAsterisk, FlakyStore, inbound_call
from tests.lab.net import free_port
from tests.lab.redis import RedisServer

VALID = """
[ami]
host = "10.0.0.5"
username = "screener"
secret = "ami-secret-value-42"

[redis]
prefix = "screener"

[flag]
key = "*9"

[hotlines]
"4008001234" = "service"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    err = result.stderr
    assert err.startswith("screener: ")
    assert err.count("\n") == 1
    assert "Traceback" not in result.output
    return err


# --- check ------------------------------------------------------------------------------------


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_check_valid_config(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path / "screener.toml", VALID)
    result = runner.invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "configuration ok"
    assert "screener@10.0.0.5:5038" in result.output
    assert "4008001234=service" in result.output
    assert "ami-secret-value-42" not in result.output


def test_check_reads_the_config_path_from_the_environment(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = write(tmp_path / "screener.toml", VALID)
    result = runner.invoke(main, ["check"], env={"SCREENER_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert "10.0.0.5" in result.output


def test_check_without_a_config_uses_defaults(runner: CliRunner) -> None:
    result = runner.invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "configuration ok" in result.output


@pytest.mark.parametrize(
    "text",
    [
        "[ami]\nport = 0\n[flag]\nkey = 'nope'\n",  # two problems, still one line
        "[ami\nport = 1\n",  # not TOML
        "[nonsense]\nx = 1\n",
    ],
)
def test_check_invalid_config_is_one_line_exit_2(
    runner: CliRunner, tmp_path: Path, text: str
) -> None:
    path = write(tmp_path / "screener.toml", text)
    result = runner.invoke(main, ["check", "--config", str(path)])
    err = assert_one_line_error(result, 2)
    assert "configuration ok" not in result.output
    assert "invalid configuration" in err or str(path) in err


def test_check_missing_config_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["check", "--config", str(tmp_path / "missing.toml")])
    err = assert_one_line_error(result, 2)
    assert "missing.toml" in err


def test_check_binary_config_is_one_line_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "screener.toml"
    path.write_bytes(b"\xff\xfe[ami]\n")
    assert_one_line_error(runner.invoke(main, ["check", "--config", str(path)]), 2)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``run`` applies dictConfig, which is process-wide: put the root logger back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.setLevel(level)
        root.handlers[:] = handlers


def test_run_configures_logging_and_serves(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    served: list[Settings] = []

    async def serve(settings: Settings) -> None:
        served.append(settings)

    monkeypatch.setattr("screener.daemon.serve", serve)
    result = runner.invoke(main, ["run", "--log-level", "WARNING"])
    assert result.exit_code == 0, result.output
    assert len(served) == 1
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(98, "Address already in use"), "Address already in use"),
        (StoreError("redis ping: Connection refused"), "redis ping"),
        (AmiError("AMI login failed after 5 retries"), "AMI login failed"),
    ],
)
def test_run_failure_is_one_line_exit_1(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
    error: Exception,
    message: str,
) -> None:
    async def serve(settings: Settings) -> None:
        raise error

    monkeypatch.setattr("screener.daemon.serve", serve)
    err = assert_one_line_error(runner.invoke(main, ["run"]), 1)
    assert message in err


def test_run_with_an_invalid_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path / "screener.toml", "[ami]\nport = 0\n")
    assert_one_line_error(runner.invoke(main, ["run", "--config", str(path)]), 2)


# --- flags ------------------------------------------------------------------------------------


@pytest.fixture
def redis_env(redis_server: RedisServer) -> Iterator[dict[str, str]]:
    """Environment for the CLI pointing at an empty test database."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    yield {"SCREENER_REDIS__URL": redis_server.url}


def seed(url: str, flags: list[Flag]) -> None:
    async def go() -> None:
        store = Store.from_url(url)
        try:
            for f in flags:
                await store.record_flag(f, 400)
        finally:
            await store.aclose()

    asyncio.run(go())


HOSTILE = "123\r\nAction: Originate\r\n"


@pytest.fixture
def seeded(redis_env: dict[str, str]) -> list[Flag]:
    flags = [
        make_flag("1700000000.1", at=AT),
        make_flag("1700000000.2", HOSTILE, at=AT + timedelta(minutes=1), agent="PJSIP/agent2"),
        make_flag("1700000000.3", "+12025550123", at=AT + timedelta(minutes=2), queue=""),
    ]
    seed(redis_env["SCREENER_REDIS__URL"], flags)
    return flags


def test_flags_table(runner: CliRunner, redis_env: dict[str, str], seeded: list[Flag]) -> None:
    result = runner.invoke(main, ["flags"], env=redis_env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "time", "caller", "presentation", "called", "hotline", "queue", "agent", "source",
    ]  # fmt: skip
    assert len(lines) == 4
    assert lines[1].split() == [
        "2024-03-06", "14:32:05", "+1202***0123", "allowed", "4008001234", "service", "-",
        "PJSIP/agent1", "feature",
    ]  # fmt: skip
    assert "PJSIP/agent2" in lines[2]
    assert "+86138****1234" in lines[3]
    assert "13812341234" not in result.output  # masked by default
    assert "Originate" not in result.output
    assert "\r" not in result.output
    # columns line up: every row starts its caller column where the header does
    column = lines[0].index("caller")
    assert {line[column - 2 : column] for line in lines} == {"  "}


def test_flags_limit(runner: CliRunner, redis_env: dict[str, str], seeded: list[Flag]) -> None:
    result = runner.invoke(main, ["flags", "--limit", "1"], env=redis_env)
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2


def test_flags_unmasked(runner: CliRunner, redis_env: dict[str, str], seeded: list[Flag]) -> None:
    result = runner.invoke(main, ["flags", "--unmasked"], env=redis_env)
    assert result.exit_code == 0, result.output
    assert "+8613812341234" in result.output
    assert "+12025550123" in result.output
    assert "123\\r\\nAction: Origina" in result.output  # escaped, cut at 24
    assert "\r" not in result.output


def test_flags_json(runner: CliRunner, redis_env: dict[str, str], seeded: list[Flag]) -> None:
    result = runner.invoke(main, ["flags", "--json"], env=redis_env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [Flag.from_json(line) for line in lines] == seeded[::-1]
    assert Flag.from_json(lines[1]).caller.raw == HOSTILE  # raw, exactly
    for line in lines:
        json.loads(line)


def test_flags_when_none(runner: CliRunner, redis_env: dict[str, str]) -> None:
    result = runner.invoke(main, ["flags"], env=redis_env)
    assert result.exit_code == 0, result.output
    assert result.output == "no flags recorded\n"
    result = runner.invoke(main, ["flags", "--json"], env=redis_env)
    assert result.exit_code == 0
    assert result.output == ""


def test_flags_when_redis_is_down_exits_1(runner: CliRunner) -> None:
    env = {
        "SCREENER_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
        "SCREENER_REDIS__TIMEOUT": "0.5",
    }
    err = assert_one_line_error(runner.invoke(main, ["flags"], env=env), 1)
    assert "redis recent_flags" in err


def test_flags_bad_limit_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["flags", "--limit", "0"])
    assert result.exit_code == 2


# --- flag -------------------------------------------------------------------------------------


def test_flag_without_a_token_exits_2(runner: CliRunner) -> None:
    err = assert_one_line_error(runner.invoke(main, ["flag", "PJSIP/agent1"]), 2)
    assert "http.token" in err


def test_flag_without_an_agent_is_a_usage_error(runner: CliRunner) -> None:
    assert runner.invoke(main, ["flag"]).exit_code == 2


def test_flag_when_the_daemon_is_not_running_exits_1(runner: CliRunner) -> None:
    env = {"SCREENER_HTTP__TOKEN": "t0ken", "SCREENER_HTTP__PORT": str(free_port())}
    err = assert_one_line_error(runner.invoke(main, ["flag", "PJSIP/agent1"], env=env), 1)
    assert "daemon not reachable" in err
    assert "t0ken" not in err


async def test_flag_through_a_running_daemon(runner: CliRunner, tmp_path: Path) -> None:
    settings = load(
        None,
        {
            "http": {"port": 0, "token": "t0ken"},
            "flag": {"spool_dir": str(tmp_path / "spool")},
        },
    )
    asterisk = FakeAsterisk()
    inbound_call(asterisk)
    metrics = Metrics(CollectorRegistry())
    spool = Spool(settings.flag.spool_dir)
    spool.open()
    store = FlakyStore()
    service = FlagService(settings, asterisk, store, spool, metrics)
    api = HttpApi(settings.http, metrics, service, Store.from_url("redis://127.0.0.1:1/0"), dict)
    await api.start()
    try:
        env = {"SCREENER_HTTP__TOKEN": "t0ken", "SCREENER_HTTP__PORT": str(api.port)}
        # the CLI runs its own event loop: give it a thread while this loop serves it
        result = await asyncio.to_thread(runner.invoke, main, ["flag", "PJSIP/agent1"], env=env)
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert body["outcome"] == "recorded"
        assert body["flag"]["agent"] == "PJSIP/agent1"
        assert len(store.flags) == 1
        again = await asyncio.to_thread(runner.invoke, main, ["flag", "PJSIP/agent1"], env=env)
        assert again.exit_code == 0
        assert json.loads(again.stdout)["outcome"] == "duplicate"
        idle = await asyncio.to_thread(runner.invoke, main, ["flag", "PJSIP/agent7"], env=env)
        assert idle.exit_code == 1
        assert json.loads(idle.stdout)["outcome"] == "not_inbound"
    finally:
        await api.close()
        await api.store.aclose()
