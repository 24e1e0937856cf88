"""Tests for ``screener bills match`` through click's CliRunner, on a real Redis.

Flags are recorded with ``Store.record_flag``; the carrier bill is a CSV file. Two harassers
withhold their number: A calls on three nights, B twice around noon.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner, Result

from screener.cli import main
from screener.model import Flag, Presentation
from screener.rules import Match, Origin, Rule, RuleList
from screener.store import Store
from tests.factories import make_flag
from tests.lab.net import free_port
from tests.lab.redis import RedisServer

ZONE = ZoneInfo("Asia/Shanghai")
NIGHT = datetime(2024, 3, 6, 2, 0, tzinfo=ZONE)
NOON = datetime(2024, 3, 6, 12, 15, tzinfo=ZONE)
A, B = "+8613700001111", "+8615900002222"


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


def flags() -> list[Flag]:
    """A: withheld on three nights; B: unavailable at noon on two days; one withheld flag with
    no call on the bill; one flag with the caller's number (not matched)."""
    found = [
        make_flag(
            f"a{d}", "anonymous", at=NIGHT + timedelta(days=d), presentation=Presentation.WITHHELD
        )
        for d in range(3)
    ]
    found += [
        make_flag(f"b{d}", "", at=NOON + timedelta(days=d), presentation=Presentation.UNAVAILABLE)
        for d in range(2)
    ]
    found.append(
        make_flag(
            "lost", "anonymous", at=NIGHT + timedelta(hours=10), presentation=Presentation.WITHHELD
        )
    )
    found.append(make_flag("known", "13812341234", at=NIGHT + timedelta(hours=5)))
    return found


def bill_rows() -> list[tuple[datetime, str, str, int]]:
    """Every call to the hotline over five days: the harassers' (on the carrier's clock,
    the flag 40 s into the call) and those of 400 other callers, away from the flags."""
    rows = [
        (NIGHT + timedelta(days=d, seconds=-40), "13700001111", "4008001234", 90) for d in range(3)
    ]
    rows += [
        (NOON + timedelta(days=d, seconds=-40), "+86 159 0000 2222", "+864008001234", 80)
        for d in range(2)
    ]
    rows.append((NIGHT + timedelta(days=3), "008613700001111", "4008001234", 30))  # not flagged
    flagged = [f.at for f in flags()]
    others = (NIGHT + timedelta(minutes=37 + 13 * i) for i in range(500))
    others = (at for at in others if all(abs(at - f) > timedelta(minutes=6) for f in flagged))
    rows += [(at, f"139{i:08d}", "04008001234", 120) for i, at in enumerate(islice(others, 400))]
    return sorted(rows)


def bill_text(rows: list[tuple[datetime, str, str, int]] | None = None) -> str:
    lines = ["Start Time,Calling Number,Called Number,Duration"]
    lines += [f"{at:%Y-%m-%d %H:%M:%S},{a},{b},{d}" for at, a, b, d in rows or bill_rows()]
    return "\n".join(lines) + "\n"


def record(url: str, found: list[Flag]) -> None:
    async def go() -> None:
        store = Store.from_url(url)
        try:
            for f in found:
                assert await store.record_flag(f, 30)
        finally:
            await store.aclose()

    asyncio.run(go())


def stored_rules(env: dict[str, str]) -> list[Rule]:
    async def go() -> list[Rule]:
        store = Store.from_url(env["SCREENER_REDIS__URL"])
        try:
            return await store.all_rules()
        finally:
            await store.aclose()

    return asyncio.run(go())


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An empty test database holding the flags, and a config in Shanghai time."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    record(redis_server.url, flags())
    config = write(
        tmp_path / "screener.toml",
        '[numbers]\ntimezone = "Asia/Shanghai"\n[hotlines]\n"4008001234" = "service"\n',
    )
    yield {"SCREENER_REDIS__URL": redis_server.url, "SCREENER_CONFIG": str(config)}


@pytest.fixture
def bill(tmp_path: Path) -> Path:
    return write(tmp_path / "bill.csv", bill_text())


def match(runner: CliRunner, env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return runner.invoke(main, ["bills", "match", *args], env=env, input=input)


def assert_one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("screener: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    return result.stderr


# --- output -------------------------------------------------------------------------------------


def test_table(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    result = match(runner, env, str(bill))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "withheld or unavailable flags from 2024-03-06 01:57:20 to 2024-03-09 18:26:01: 6, "
        "5 with a call on the bill within 120 s"
    )
    assert lines[1] == "carrier bill: 406 calls, 402 numbers called the flagged hotlines"
    assert lines[2] == "proposals: 2 (review before blocking)"
    assert lines[4].split()[:3] == ["rank", "number", "flags"]
    assert lines[5].split() == ["1", A, "3", "2.9", "4", "1", "+40", "s"]
    assert lines[6].split()[:5] == ["2024-03-06", "02:00:00", "flag", "a0", "service"]
    assert lines[9].split()[:4] == ["2", B, "2", "2.0"]
    assert len(lines) == 12
    assert "known" not in result.stdout and "lost" not in result.stdout
    assert result.stderr == ""
    assert stored_rules(env) == []


def test_csv(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    result = match(runner, env, str(bill), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["rank"], r["number"], r["flag_id"]) for r in rows] == [
        ("1", "'" + A, "a0"),
        ("1", "'" + A, "a1"),
        ("1", "'" + A, "a2"),
        ("2", "'" + B, "b0"),
        ("2", "'" + B, "b1"),
    ]
    assert rows[0]["flag_at"] == "2024-03-06T02:00:00+08:00"
    assert rows[0]["call_at"] == "2024-03-06T01:59:20+08:00"
    assert rows[0]["offset"] == "40.0"


def test_json(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    result = match(runner, env, str(bill), "--format", "json", "--tolerance", "60")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["summary"]["flags"] == 6
    assert body["summary"]["matched"] == 5
    assert body["summary"]["tolerance"] == 60
    assert body["summary"]["since"] == "2024-03-06T01:58:20+08:00"
    assert [(p["number"], p["raw"], p["flags"], p["calls"]) for p in body["proposals"]] == [
        (A, "13700001111", 3, 4),
        (B, "+86 159 0000 2222", 2, 2),
    ]
    assert [e["flag_id"] for e in body["proposals"][1]["evidence"]] == ["b0", "b1"]


def test_min_flags_since_and_until(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    only_a = match(runner, env, str(bill), "--min-flags", "3", "--format", "json")
    assert [p["number"] for p in json.loads(only_a.stdout)["proposals"]] == [A]
    since = (NIGHT + timedelta(days=1, hours=-1)).isoformat()
    result = match(
        runner, env, str(bill), "--since", since, "--until", "2024-03-08", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["summary"]["flags"] == 2  # a1 and b1
    assert body["summary"]["until"] == "2024-03-08T00:00:00+08:00"
    assert [(p["number"], p["flags"]) for p in body["proposals"]] == [(A, 1), (B, 1)]


def test_a_bill_in_another_zone(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    utc_rows = [(at.astimezone(UTC), a, b, d) for at, a, b, d in bill_rows()]
    path = write(tmp_path / "utc.csv", bill_text(utc_rows))
    result = match(runner, env, str(path), "--zone", "UTC", "--format", "json")
    assert [p["number"] for p in json.loads(result.stdout)["proposals"]] == [A, B]
    shifted = match(runner, env, str(path), "--format", "json")  # read as Shanghai time
    assert {p["number"] for p in json.loads(shifted.stdout)["proposals"]}.isdisjoint({A, B})


def test_a_gbk_bill_with_chinese_headers(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    text = bill_text().replace(
        "Start Time,Calling Number,Called Number,Duration", "开始时间,主叫号码,被叫号码,通话时长"
    )
    path = tmp_path / "bill-gbk.csv"
    path.write_bytes(text.encode("gbk"))
    result = match(runner, env, str(path), "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["proposals"]) == 2


# --- proposals to rules -------------------------------------------------------------------------


def test_proposals_out_can_be_imported(
    runner: CliRunner, env: dict[str, str], bill: Path, tmp_path: Path
) -> None:
    out = tmp_path / "proposals.csv"
    result = match(runner, env, str(bill), "--proposals-out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"wrote 2 proposal(s) to {out}: review it, then `screener rules import {out}`\n"
    )
    assert stored_rules(env) == []  # nothing blocked by matching
    imported = runner.invoke(main, ["rules", "import", str(out), "--by", "carol"], env=env)
    assert imported.exit_code == 0, imported.output
    rules = stored_rules(env)
    assert [(r.list, r.match, r.value, r.origin, r.created_by) for r in rules] == [
        (RuleList.BLOCK, Match.NUMBER, A, Origin.IMPORT, "carol"),
        (RuleList.BLOCK, Match.NUMBER, B, Origin.IMPORT, "carol"),
    ]
    assert rules[0].reason == (
        "carrier bill 2024-03-06..2024-03-09: on the bill at 3 flagged withheld call(s), "
        "flags a0, a1, a2"
    )


def test_proposals_out_unwritable(
    runner: CliRunner, env: dict[str, str], bill: Path, tmp_path: Path
) -> None:
    out = tmp_path / "missing" / "proposals.csv"
    err = assert_one_line_error(match(runner, env, str(bill), "--proposals-out", str(out)), 1)
    assert "cannot write" in err


def test_apply_adds_only_the_confirmed(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    result = match(runner, env, str(bill), "--apply", "--by", "alice", input="y\nn\n")
    assert result.exit_code == 0, result.output
    assert (
        f"1. block {A}? on the bill at 3 flagged withheld call(s); 1 other call(s)" in result.stderr
    )
    assert (
        f"2. block {B}? on the bill at 2 flagged withheld call(s); 0 other call(s)" in result.stderr
    )
    assert "added r1 block number +86137****1111 block" in result.stderr
    (rule,) = stored_rules(env)
    assert (rule.list, rule.value, rule.origin, rule.created_by) == (
        RuleList.BLOCK,
        A,
        Origin.ADMIN,
        "alice",
    )
    assert "flags a0, a1, a2" in rule.reason


def test_apply_defaults_to_no(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    result = match(runner, env, str(bill), "--apply", "--format", "json", input="\nn\n")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["proposals"]) == 2  # prompts stay off stdout
    assert result.stderr.endswith("nothing blocked\n")
    assert stored_rules(env) == []


def test_apply_needs_a_valid_actor(runner: CliRunner, env: dict[str, str], bill: Path) -> None:
    err = assert_one_line_error(match(runner, env, str(bill), "--apply", "--by", "a b"), 2)
    assert "--by" in err
    assert stored_rules(env) == []


# --- bad input ----------------------------------------------------------------------------------


def test_a_malformed_bill_exits_2_and_applies_nothing(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    lines = bill_text().splitlines()
    lines[2] = "yesterday,13700001111,4008001234,90"
    lines[4] = "2024-03-06 12:14:20,,4008001234,80"
    lines[6] = "2024-03-06 12:14:20,13700001111"
    path = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    out = tmp_path / "p.csv"
    result = match(runner, env, str(path), "--apply", "--proposals-out", str(out), input="y\ny\n")
    assert result.exit_code == 2
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert err[0] == f"screener: 3 bad line(s) in {path}, nothing matched:"
    assert err[1].startswith("  line 3: time 'yesterday': use YYYY-MM-DD")
    assert err[2] == "  line 5: the calling number is missing"
    assert err[3] == "  line 7: 2 cells where the header has 4"
    assert len(err) == 4
    assert stored_rules(env) == []
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "line 0: the file is empty"),
        (b"\xff\xfe\x00\x00garbage\xff", "cannot read"),
        (b"a,b,c\n1,2,3\n", "line 1: no header naming a time"),
    ],
)
def test_unreadable_bills(
    runner: CliRunner, env: dict[str, str], tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bill.csv"
    path.write_bytes(content)
    result = match(runner, env, str(path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_too_large_bill(
    runner: CliRunner, env: dict[str, str], bill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("screener.cli.MAX_BILL_BYTES", 100)
    assert "is larger than 100 bytes" in assert_one_line_error(match(runner, env, str(bill)), 2)


def test_an_unreadable_bill(
    runner: CliRunner, env: dict[str, str], bill: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root reads any file: refuse for it
    err = assert_one_line_error(match(runner, env, str(bill)), 2)
    assert f"cannot read {bill}: [Errno 13] Permission denied" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--since", "last week"], "--since: time 'last week'"),
        (["--until", "2024-02-30"], "--until: time '2024-02-30'"),
        (["--since", "2024-03-08", "--until", "2024-03-07"], "--since must be before --until"),
    ],
)
def test_bad_options_are_one_line_exit_2(
    runner: CliRunner, env: dict[str, str], bill: Path, args: list[str], message: str
) -> None:
    assert message in assert_one_line_error(match(runner, env, str(bill), *args), 2)


def test_usage_errors(runner: CliRunner, env: dict[str, str], bill: Path, tmp_path: Path) -> None:
    assert match(runner, env, str(tmp_path / "missing.csv")).exit_code == 2
    assert match(runner, env, str(bill), "--tolerance", "-1").exit_code == 2
    assert match(runner, env, str(bill), "--min-flags", "0").exit_code == 2
    assert match(runner, env, str(bill), "--format", "xml").exit_code == 2


def test_when_redis_is_down_exits_1(runner: CliRunner, bill: Path) -> None:
    env = {
        "SCREENER_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
        "SCREENER_REDIS__TIMEOUT": "0.5",
    }
    err = assert_one_line_error(match(runner, env, str(bill)), 1)
    assert "redis flags_between" in err
