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
from screener.admin import RuleAdmin
from screener.cli import main
from screener.config import Settings, load
from screener.errors import AmiError, StoreError
from screener.http_api import HttpApi
from screener.metrics import Metrics
from screener.model import Flag
from screener.rules import Mode, Origin, Rule, RuleList, Treatment, Verdict
from screener.service import FlagService
from screener.spool import Spool
from screener.store import AuditEntry, Store
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
    dead = Store.from_url("redis://127.0.0.1:1/0")
    api = HttpApi(settings.http, metrics, service, dead, dict, RuleAdmin(settings, dead))
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


# --- rules ------------------------------------------------------------------------------------

CALLER = "+8613812341234"


@pytest.fixture
def rules_env(redis_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """An empty test database and a config naming two hotlines."""
    config = write(
        tmp_path / "screener.toml",
        '[hotlines]\n"4008001234" = "service"\n"4008005678" = "sales"\n',
    )
    return {**redis_env, "SCREENER_CONFIG": str(config)}


def in_store(env: dict[str, str]) -> Store:
    return Store.from_url(env["SCREENER_REDIS__URL"])


def stored_rules(env: dict[str, str]) -> list[Rule]:
    async def go() -> list[Rule]:
        store = in_store(env)
        try:
            return await store.all_rules()
        finally:
            await store.aclose()

    return asyncio.run(go())


def audit_of(env: dict[str, str]) -> list[AuditEntry]:
    async def go() -> list[AuditEntry]:
        store = in_store(env)
        try:
            return await store.audit_trail()
        finally:
            await store.aclose()

    return asyncio.run(go())


def cli(runner: CliRunner, env: dict[str, str], *args: str) -> Result:
    return runner.invoke(main, ["rules", *args], env=env)


def test_rules_add(runner: CliRunner, rules_env: dict[str, str]) -> None:
    result = cli(
        runner, rules_env, "add", "13812341234", "--reason", "threats", "--treatment", "busy",
        "--hotline", "service", "--window", "mon-fri 22:00-06:00", "--by", "alice",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "added r1 block number +86138****1234 block/busy\n"
    (rule,) = stored_rules(rules_env)
    assert (rule.value, rule.treatment, rule.hotlines, rule.created_by) == (
        CALLER,
        Treatment.BUSY,
        ("service",),
        "alice",
    )
    assert [str(w) for w in rule.windows] == ["mon,tue,wed,thu,fri 22:00-06:00"]
    (entry,) = audit_of(rules_env)
    assert (entry.action, entry.by, entry.why) == ("add", "alice", "threats")


def test_rules_add_allow_shadow_and_expiry(runner: CliRunner, rules_env: dict[str, str]) -> None:
    assert cli(runner, rules_env, "add", CALLER, "--reason", "vip", "--allow").exit_code == 0
    result = cli(
        runner, rules_env, "add", "+86105*", "--reason", "trial", "--shadow", "--expires", "7d",
        "--action", "challenge",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "added r2 block prefix +86105 challenge shadow\n"
    allow, prefix = stored_rules(rules_env)
    assert (allow.list, allow.action) == (RuleList.ALLOW, Verdict.ALLOW)
    assert prefix.mode is Mode.SHADOW
    assert prefix.expires_at is not None
    assert prefix.expires_at - prefix.created_at == 7 * 86400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonsense", "--reason", "x"], "not a phone number"),
        ([CALLER, "--reason", " "], "reason is required"),
        ([CALLER, "--reason", "x", "--hotline", "nowhere"], "nowhere"),
        ([CALLER, "--reason", "x", "--window", "someday"], "someday"),
        ([CALLER, "--reason", "x", "--expires", "yesterday"], "expires"),
        ([CALLER, "--reason", "x", "--by", "bob smith"], "actor"),
        ([CALLER, "--reason", "x", "--allow", "--action", "block"], "allowlist"),
    ],
)
def test_rules_add_refuses_bad_input_with_one_line(
    runner: CliRunner, rules_env: dict[str, str], args: list[str], message: str
) -> None:
    err = assert_one_line_error(cli(runner, rules_env, "add", *args), 2)
    assert message in err
    assert stored_rules(rules_env) == []


def test_rules_add_needs_a_reason(runner: CliRunner, rules_env: dict[str, str]) -> None:
    result = cli(runner, rules_env, "add", CALLER)
    assert result.exit_code == 2
    assert "--reason" in result.output


def add_some(runner: CliRunner, env: dict[str, str]) -> None:
    for args in (
        [CALLER, "--reason", "threats"],
        ["+8613900000000", "--reason", "vip", "--allow"],
        ["+86105*", "--reason", "public phones", "--action", "analysis"],
    ):
        result = cli(runner, env, "add", *args, "--by", "alice")
        assert result.exit_code == 0, result.output


def test_rules_list(runner: CliRunner, rules_env: dict[str, str]) -> None:
    assert cli(runner, rules_env, "list").stdout == "no rules\n"
    add_some(runner, rules_env)
    result = cli(runner, rules_env, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "id", "list", "match", "value", "action", "hotlines", "windows", "expires", "mode",
        "origin", "by", "reason",
    ]  # fmt: skip
    assert [line.split()[:5] for line in lines[1:]] == [
        ["r1", "block", "number", CALLER, "block"],
        ["r2", "allow", "number", "+8613900000000", "allow"],
        ["r3", "block", "prefix", "+86105", "analysis"],
    ]
    allowed = cli(runner, rules_env, "list", "--list", "allow", "--json")
    assert [json.loads(line)["id"] for line in allowed.stdout.splitlines()] == ["r2"]
    by_value = cli(runner, rules_env, "list", "--value", "13812341234", "--json")
    assert [json.loads(line)["id"] for line in by_value.stdout.splitlines()] == ["r1"]
    assert len(cli(runner, rules_env, "list", "--limit", "1").stdout.splitlines()) == 2


def test_rules_show(runner: CliRunner, rules_env: dict[str, str]) -> None:
    add_some(runner, rules_env)
    result = cli(runner, rules_env, "show", "r1")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["rule"]["value"] == CALLER
    assert [(h["action"], h["by"], h["why"]) for h in body["history"]] == [
        ("add", "alice", "threats")
    ]
    assert "no rule r9" in assert_one_line_error(cli(runner, rules_env, "show", "r9"), 1)
    assert "rule id" in assert_one_line_error(cli(runner, rules_env, "show", "1"), 2)


def test_rules_remove(runner: CliRunner, rules_env: dict[str, str]) -> None:
    add_some(runner, rules_env)
    result = cli(runner, rules_env, "remove", "r1", "r3", "--reason", "wrong", "--by", "bob")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "removed r1 block number +86138****1234 block",
        "removed r3 block prefix +86105 analysis",
    ]
    assert [r.id for r in stored_rules(rules_env)] == ["r2"]
    removals = [(e.rule, e.by, e.why) for e in audit_of(rules_env) if e.action == "remove"]
    assert removals == [("r3", "bob", "wrong"), ("r1", "bob", "wrong")]


def test_rules_remove_of_an_unknown_rule(runner: CliRunner, rules_env: dict[str, str]) -> None:
    add_some(runner, rules_env)
    result = cli(runner, rules_env, "remove", "r1", "r9", "--reason", "cleanup", "--by", "bob")
    assert result.exit_code == 1
    assert result.stderr == "screener: no rule r9\n"
    # what was removed before the failure is said, not silently done
    assert result.stdout == "removed r1 block number +86138****1234 block\n"
    assert [r.id for r in stored_rules(rules_env)] == ["r2", "r3"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["r1", "--reason", " "], 2),
        (["x1", "--reason", "x"], 2),
        (["r1", "--reason", "x", "--by", "bob smith"], 2),
        (["r1"], 2),  # --reason is required
        (["--reason", "x"], 2),  # and at least one id
    ],
)
def test_rules_remove_bad_input_keeps_the_rule(
    runner: CliRunner, rules_env: dict[str, str], args: list[str], code: int
) -> None:
    add_some(runner, rules_env)
    assert cli(runner, rules_env, "remove", *args).exit_code == code
    assert len(stored_rules(rules_env)) == 3


GOOD_CSV = """value,reason,action,hotlines
+8613812341234,threats,block,service
'+86105*,public phones,challenge,
withheld,no caller id,analysis,service;sales
"""

BAD_CSV = """value,reason,action,hotlines
+8613812341234,threats,block,service
nonsense,x,block,
+8613900000000,,block,
+86105*,fine,block,nowhere
+8613700000000,ok,block,
"""


def test_rules_import(runner: CliRunner, rules_env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "rules.csv", GOOD_CSV)
    result = cli(runner, rules_env, "import", str(path), "--by", "carol")
    assert result.exit_code == 0, result.output
    assert result.stdout == "imported 3 rule(s): r1..r3\n"
    rules = stored_rules(rules_env)
    assert [(r.value, r.origin, r.created_by) for r in rules] == [
        (CALLER, Origin.IMPORT, "carol"),
        ("+86105", Origin.IMPORT, "carol"),
        ("withheld", Origin.IMPORT, "carol"),
    ]
    assert {(e.action, e.by) for e in audit_of(rules_env)} == {
        ("import", "carol"),
        ("import-commit", "carol"),
    }


def test_rules_import_with_bad_lines_exits_2_and_imports_nothing(
    runner: CliRunner, rules_env: dict[str, str], tmp_path: Path
) -> None:
    path = write(tmp_path / "rules.csv", BAD_CSV)
    result = cli(runner, rules_env, "import", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert err[0] == "screener: 3 bad line(s), nothing imported:"
    assert [line.split(":")[0] for line in err[1:]] == ["  line 3", "  line 4", "  line 5"]
    assert "not a phone number" in err[1]
    assert "reason is required" in err[2]
    assert "nowhere" in err[3]
    assert "Traceback" not in result.output
    assert stored_rules(rules_env) == []
    assert audit_of(rules_env) == []


def test_rules_import_json_by_suffix(
    runner: CliRunner, rules_env: dict[str, str], tmp_path: Path
) -> None:
    lines = [{"value": CALLER, "reason": "a"}, {"value": "any", "reason": "b"}]
    path = write(tmp_path / "rules.jsonl", "".join(json.dumps(d) + "\n" for d in lines))
    result = cli(runner, rules_env, "import", str(path))
    assert result.exit_code == 0, result.output
    assert [r.value for r in stored_rules(rules_env)] == [CALLER, "any"]
    bad = write(tmp_path / "bad.json", '{"value": "+8613900000000", "reason": "c"}\n{oops\n')
    result = cli(runner, rules_env, "import", str(bad))
    assert result.exit_code == 2
    assert "line 2:" in result.stderr
    assert len(stored_rules(rules_env)) == 2


def test_rules_import_of_an_unreadable_file(
    runner: CliRunner, rules_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "rules.csv"
    path.write_bytes(b"value,reason\n\xff\xfe,x\n")
    assert "cannot read" in assert_one_line_error(cli(runner, rules_env, "import", str(path)), 2)
    missing = cli(runner, rules_env, "import", str(tmp_path / "missing.csv"))
    assert missing.exit_code == 2


def test_rules_export_round_trip(
    runner: CliRunner, rules_env: dict[str, str], tmp_path: Path
) -> None:
    add_some(runner, rules_env)
    out = tmp_path / "out.csv"
    result = cli(runner, rules_env, "export", "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text == cli(runner, rules_env, "export").stdout
    assert text.splitlines()[1].startswith("r1,block,number,'+8613812341234,")
    before = [(r.list, r.value, r.action) for r in stored_rules(rules_env)]
    client = redis.Redis.from_url(rules_env["SCREENER_REDIS__URL"])
    try:
        client.flushdb()
    finally:
        client.close()
    assert cli(runner, rules_env, "import", str(out)).exit_code == 0
    assert [(r.list, r.value, r.action) for r in stored_rules(rules_env)] == before
    as_json = cli(runner, rules_env, "export", "--format", "json", "--list", "allow")
    assert [json.loads(line)["value"] for line in as_json.stdout.splitlines()] == ["+8613900000000"]


def test_rules_audit(runner: CliRunner, rules_env: dict[str, str]) -> None:
    assert cli(runner, rules_env, "audit").stdout == "no changes\n"
    add_some(runner, rules_env)
    assert cli(runner, rules_env, "remove", "r1", "--reason", "gone", "--by", "bob").exit_code == 0
    result = cli(runner, rules_env, "audit")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["time", "by", "action", "rule", "why"]
    assert [line.split()[2:5] for line in lines[1:]] == [
        ["bob", "remove", "r1"],
        ["alice", "add", "r3"],
        ["alice", "add", "r2"],
        ["alice", "add", "r1"],
    ]
    only = cli(runner, rules_env, "audit", "--rule", "r1", "--json")
    entries = [json.loads(line) for line in only.stdout.splitlines()]
    assert [(e["action"], e["why"]) for e in entries] == [("remove", "gone"), ("add", "threats")]
    assert len(cli(runner, rules_env, "audit", "--limit", "2").stdout.splitlines()) == 3


@pytest.mark.parametrize(
    "args",
    [["list"], ["show", "r1"], ["audit"], ["export"], ["remove", "r1", "--reason", "x"],
     ["add", CALLER, "--reason", "x"]],
)  # fmt: skip
def test_rules_when_redis_is_down_exits_1(runner: CliRunner, args: list[str]) -> None:
    env = {
        "SCREENER_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
        "SCREENER_REDIS__TIMEOUT": "0.5",
    }
    err = assert_one_line_error(runner.invoke(main, ["rules", *args], env=env), 1)
    assert err.startswith("screener: redis ")


# --- report -----------------------------------------------------------------------------------

REPORT_PERIOD = ["--since", "2024-03-04", "--until", "2024-03-10"]
REPORT_AGENT = '=HYPERLINK("http://evil.example","x")'


@pytest.fixture
def report_seeded(redis_env: dict[str, str]) -> list[Flag]:
    """Flags in the week of 2024-03-04 (UTC), one before it and one after it."""
    from screener.model import Presentation

    monday = AT - timedelta(days=2)  # 2024-03-04 14:30:05 UTC
    flags = [
        make_flag("1709000000.1", at=monday),
        make_flag("1709000000.2", at=monday + timedelta(hours=1)),
        make_flag("1709000000.3", "+12025550123", at=monday + timedelta(days=2)),
        make_flag(
            "1709000000.4",
            "anonymous",
            at=monday + timedelta(days=3),
            presentation=Presentation.WITHHELD,
            agent=REPORT_AGENT,
        ),
        make_flag("1709000000.5", at=monday - timedelta(days=1)),  # before the period
        make_flag("1709000000.6", at=monday + timedelta(days=7)),  # after it
    ]
    seed(redis_env["SCREENER_REDIS__URL"], flags)
    return flags


def test_report_table(
    runner: CliRunner, redis_env: dict[str, str], report_seeded: list[Flag]
) -> None:
    result = runner.invoke(main, ["report", *REPORT_PERIOD], env=redis_env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("screener report 2024-03-04 .. 2024-03-10 (UTC)\n")
    assert "4 flags from 3 distinct callers\n" in out
    assert "+86138****1234" in out
    assert "+8613812341234" not in out
    assert "+12025550123" not in out
    assert "2024-03-07T14:30:05+00:00  4008001234" in out  # the anonymous call, to the second
    assert result.stderr == ""


def test_report_unmasked(
    runner: CliRunner, redis_env: dict[str, str], report_seeded: list[Flag]
) -> None:
    result = runner.invoke(main, ["report", *REPORT_PERIOD, "--unmasked"], env=redis_env)
    assert result.exit_code == 0, result.output
    assert "+8613812341234" in result.stdout
    assert "+12025550123" in result.stdout
    assert "(numbers unmasked)" in result.stdout


def test_report_csv(
    runner: CliRunner, redis_env: dict[str, str], report_seeded: list[Flag]
) -> None:
    import csv
    import io

    result = runner.invoke(main, ["report", *REPORT_PERIOD, "--format", "csv"], env=redis_env)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0][0] == "section"
    assert rows[1] == ["period", "2024-03-04", "2024-03-10", "UTC", "4", "3"]
    calls = [row for row in rows if row[0] == "anonymous_call"]
    assert calls == [
        [
            "anonymous_call",
            "2024-03-07T14:30:05+00:00",
            "4008001234",
            "service",
            "withheld",
            "'" + REPORT_AGENT,
        ]
    ]
    for row in rows:
        assert all(cell[:1] not in ("=", "+", "-", "@") for cell in row), row
    assert "+8613812341234" not in result.stdout


def test_report_json(
    runner: CliRunner, redis_env: dict[str, str], report_seeded: list[Flag]
) -> None:
    result = runner.invoke(
        main, ["report", *REPORT_PERIOD, "--format", "json", "--top", "1"], env=redis_env
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["since"], data["until"], data["timezone"]) == ("2024-03-04", "2024-03-10", "UTC")
    assert data["total_flags"] == 4
    assert data["by_day"]["2024-03-04"] == 2
    assert data["heatmap"]["2024-03-04"][14:16] == [1, 1]
    assert [s["number"] for s in data["top_sources"]] == ["+86138****1234"]
    assert data["top_sources"][0]["flags"] == 2
    assert data["top_sources"][0]["total_flags"] == 4
    assert data["anonymous_calls"][0]["agent"] == REPORT_AGENT  # JSON is not a spreadsheet
    assert "+8613812341234" not in result.stdout


def test_report_anonymous_limit(
    runner: CliRunner, redis_env: dict[str, str], report_seeded: list[Flag]
) -> None:
    from screener.model import Presentation

    extra = make_flag(
        "1709000000.7",
        "anonymous",
        at=AT + timedelta(days=2),
        presentation=Presentation.UNAVAILABLE,
    )
    seed(redis_env["SCREENER_REDIS__URL"], [extra])
    args = ["report", *REPORT_PERIOD, "--format", "json", "--anonymous-limit", "1"]
    data = json.loads(runner.invoke(main, args, env=redis_env).stdout)
    assert data["anonymous_truncated"] is True
    assert [a["at"] for a in data["anonymous_calls"]] == ["2024-03-07T14:30:05+00:00"]


def test_report_png(
    runner: CliRunner, redis_env: dict[str, str], report_seeded: list[Flag], tmp_path: Path
) -> None:
    from PIL import Image

    png = tmp_path / "week.png"
    result = runner.invoke(main, ["report", *REPORT_PERIOD, "--png", str(png)], env=redis_env)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"heatmap written to {png}\n"
    assert "screener report" in result.stdout
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == (804, 40 + 7 * 16 + 50)


def test_report_png_unwritable_exits_1(
    runner: CliRunner, redis_env: dict[str, str], tmp_path: Path
) -> None:
    png = tmp_path / "missing" / "week.png"
    result = runner.invoke(main, ["report", *REPORT_PERIOD, "--png", str(png)], env=redis_env)
    err = assert_one_line_error(result, 1)
    assert err.startswith(f"screener: cannot write {png}")
    assert not png.exists()


def test_report_default_period_is_the_last_seven_local_days(
    runner: CliRunner, redis_env: dict[str, str]
) -> None:
    from datetime import UTC, date, datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Asia/Shanghai")
    now = datetime.now(UTC)
    seed(
        redis_env["SCREENER_REDIS__URL"],
        [
            make_flag("1.1", at=now - timedelta(days=2), tz="Asia/Shanghai"),
            make_flag("1.2", at=now - timedelta(days=10), tz="Asia/Shanghai"),
        ],
    )
    env = {**redis_env, "SCREENER_NUMBERS__TIMEZONE": "Asia/Shanghai"}
    before = datetime.now(zone).date()
    result = runner.invoke(main, ["report", "--format", "json"], env=env)
    after = datetime.now(zone).date()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    today = date.fromisoformat(data["until"])
    assert today in (before, after)
    assert date.fromisoformat(data["since"]) == today - timedelta(days=6)
    assert len(data["by_day"]) == 7
    assert data["timezone"] == "Asia/Shanghai"
    assert data["total_flags"] == 1


def test_report_since_alone_ends_today(runner: CliRunner, redis_env: dict[str, str]) -> None:
    from datetime import UTC, date, datetime

    today = datetime.now(UTC).date()
    since = (today - timedelta(days=1)).isoformat()
    result = runner.invoke(main, ["report", "--since", since, "--format", "json"], env=redis_env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["since"] == since
    assert date.fromisoformat(data["until"]) >= today


def test_report_period_ending_before_it_starts_exits_2(
    runner: CliRunner, redis_env: dict[str, str]
) -> None:
    args = ["report", "--since", "2024-03-10", "--until", "2024-03-04"]
    err = assert_one_line_error(runner.invoke(main, args, env=redis_env), 2)
    assert err == "screener: the period ends before it starts\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "2024-13-01"],
        ["--until", "04/03/2024"],
        ["--format", "xml"],
        ["--top", "0"],
        ["--anonymous-limit", "0"],
    ],
)
def test_report_bad_options_are_usage_errors(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(main, ["report", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_report_when_redis_is_down_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    env = {
        "SCREENER_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
        "SCREENER_REDIS__TIMEOUT": "0.5",
    }
    png = tmp_path / "week.png"
    result = runner.invoke(main, ["report", *REPORT_PERIOD, "--png", str(png)], env=env)
    err = assert_one_line_error(result, 1)
    assert err.startswith("screener: redis ")
    assert result.stdout == ""
    assert not png.exists()
