"""Security properties, without the lab: the admin API's token, bind address and error answers,
secrets kept out of logs, the read-only audit trail, masked numbers, and flag retention.

Real parts throughout: aiohttp servers on loopback, redis-server (the session one, or a
dedicated one with ``requirepass``), the daemon's own objects; Asterisk is the loopback fake
(``tests/ami_fake.py``) or the in-memory double (``tests/fakes.py``). The shipped AMI user's
permissions are proved on the real Asterisk in ``tests/e2e/test_ami_permissions.py``.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import os
import re
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from screener import statistics
from screener.cli import main
from screener.config import HttpSettings, Settings, load
from screener.daemon import Daemon
from screener.errors import AmiError, StoreError
from screener.http_api import HttpApi
from screener.keys import DAY
from screener.model import FlagRequested, Presentation
from screener.screening import ScreeningService
from screener.store import Store
from tests.ami_fake import FakeAmi
from tests.factories import make_flag, make_rule
from tests.fakes import b64, inbound_call
from tests.lab import REPO
from tests.lab.redis import RedisServer
from tests.test_http_api import AUTH, TOKEN, Server, make_settings

NUMBER = "13812341234"
E164 = "+8613812341234"
MASKED = "+86138****1234"
# Every way the number could be written into a log line or a label
NUMBER_FORMS = (NUMBER, E164[1:], "138 1234 1234", "138-1234-1234")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


class Logs(logging.Handler):
    """Every record of every logger, formatted with its traceback, from DEBUG up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[Logs]:
    """All logging at DEBUG, panoramisk's too (stricter than the shipped config, which keeps
    panoramisk at CRITICAL)."""
    handler = Logs()
    root = logging.getLogger()
    names = ("", "screener", "screener.ami.panoramisk", "panoramisk", "aiohttp", "redis")
    levels = {name: logging.getLogger(name).level for name in names}
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def json_error(resp: aiohttp.ClientResponse) -> str:
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    body = await resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return str(body["error"])


def admin_routes(api: HttpApi) -> list[tuple[str, str]]:
    """Every (method, path) under /api/ the app serves, ``{rule_id}`` filled in."""
    routes = []
    for route in api.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith("/api/") and route.method != "HEAD":
            routes.append((route.method, path.replace("{rule_id}", "r1")))
    return sorted(set(routes))


@pytest.fixture
async def server(tmp_path: Path, store: Store) -> AsyncIterator[Server]:
    """The admin API on a real aiohttp server and the session's Redis (token ``TOKEN``)."""
    async with Server(make_settings(tmp_path), store) as s:
        yield s


# --- the admin API's token ----------------------------------------------------------------------

BAD_AUTH = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN[:-1]}X"},  # same length, last character wrong
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN}{TOKEN}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"X-Api-Token": TOKEN},
]


async def test_every_admin_route_refuses_a_missing_or_wrong_token(
    server: Server, store: Store, redis_raw: aioredis.Redis
) -> None:
    inbound_call(server.asterisk)
    routes = admin_routes(server.api)
    assert len(routes) >= 9, routes
    for method, path in routes:
        for headers in BAD_AUTH:
            query = f"?token={TOKEN}&reason=x&by=x"  # a token in the URL is not a token
            async with server.client.request(
                method, path + query, json={"agent": "PJSIP/agent1"}, headers=headers
            ) as resp:
                assert resp.status == 401, (method, path, headers)
                assert await json_error(resp) == "missing or wrong bearer token"
    assert server.asterisk.redirects == []
    assert await redis_raw.keys("*") == []  # nothing read into or written to Redis


async def test_the_token_is_compared_in_constant_time(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Bearer attempt goes through ``hmac.compare_digest`` against the configured token,
    whatever its length (no early exit on a length or prefix mismatch)."""
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    attempts = ["", "x", TOKEN[:-1], TOKEN[:-1] + "X", TOKEN + "x", "é" * 40, TOKEN]
    for attempt in attempts:
        headers = {"Authorization": f"Bearer {attempt}"}
        async with server.client.get("/api/v1/flags", headers=headers) as resp:
            assert resp.status == (200 if attempt == TOKEN else 401)
    assert len(calls) == len(attempts)
    assert all(isinstance(a, bytes) and b == TOKEN.encode() for a, b in calls)
    source = inspect.getsource(HttpApi._auth)
    assert "compare_digest" in source
    assert not re.search(r"==\s*self\._token|self\._token\s*==", source)


async def test_the_admin_api_is_off_without_a_configured_token(
    tmp_path: Path, store: Store
) -> None:
    async with Server(make_settings(tmp_path, token=None), store) as s:
        for method, path in admin_routes(s.api):
            async with s.client.request(method, path, json={}, headers=AUTH) as resp:
                assert resp.status == 503, (method, path)
                assert "admin API disabled" in await json_error(resp)
        for path in ("/healthz", "/metrics"):
            async with s.client.get(path) as resp:
                assert resp.status == 200


def _outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_the_http_and_agi_servers_bind_to_localhost_by_default(
    tmp_path: Path, store: Store
) -> None:
    assert HttpSettings().host == "127.0.0.1"
    defaults = load(None)
    assert (defaults.http.host, defaults.agi.host, defaults.ami.host) == ("127.0.0.1",) * 3
    shipped = tomllib.loads((REPO / "deploy" / "screener.toml").read_text())
    assert shipped["http"]["host"] == "127.0.0.1"
    settings = load(
        None, {"http": {"port": 0, "token": TOKEN}, "flag": {"spool_dir": str(tmp_path)}}
    )
    async with Server(settings, store) as s:
        assert s.api._runner is not None
        assert [a[0] for a in s.api._runner.addresses] == ["127.0.0.1"]
        outside = _outside_address()
        if outside is not None:
            with pytest.raises(OSError):
                socket.create_connection((outside, s.api.port), timeout=1).close()


# --- secrets never reach logs -------------------------------------------------------------------

AMI_SECRET = "ami-S3cret-q7Zx41"
API_TOKEN = "api-T0ken-Wm82kd"
REDIS_PASSWORD = "redis-Pa55-Lp09vc"
SECRETS = (AMI_SECRET, API_TOKEN, REDIS_PASSWORD)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked:\n{text[-3000:]}"


def test_settings_never_show_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text(API_TOKEN + "\n")
    monkeypatch.setenv("SCREENER_AMI__SECRET", AMI_SECRET)
    monkeypatch.setenv("SCREENER_REDIS__URL", f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0")
    monkeypatch.setenv("SCREENER_HTTP__TOKEN_FILE", str(tmp_path / "token"))
    s = load(None)
    token = s.http.resolved_token()
    assert token is not None and token.get_secret_value() == API_TOKEN  # really loaded
    assert s.redis.url.get_secret_value().endswith("@127.0.0.1:6379/0")
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), repr(s.ami)):
        assert_no_secret(text)


def test_screener_check_never_prints_secrets(tmp_path: Path) -> None:
    (tmp_path / "ami").write_text(AMI_SECRET)
    (tmp_path / "token").write_text(API_TOKEN)
    runner = CliRunner()
    envs = [
        {
            "SCREENER_AMI__SECRET": AMI_SECRET,
            "SCREENER_HTTP__TOKEN": API_TOKEN,
            "SCREENER_REDIS__URL": f"redis://user:{REDIS_PASSWORD}@127.0.0.1:6379/0",
        },
        {
            "SCREENER_AMI__SECRET_FILE": str(tmp_path / "ami"),
            "SCREENER_HTTP__TOKEN_FILE": str(tmp_path / "token"),
            "SCREENER_REDIS__URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
        },
    ]
    for env in envs:
        ok = runner.invoke(main, ["check"], env=env)
        assert ok.exit_code == 0, ok.output
        assert "configuration ok" in ok.output
        assert_no_secret(ok.output)
        bad = runner.invoke(main, ["check"], env={**env, "SCREENER_AMI__PORT": "not-a-port"})
        assert bad.exit_code == 2
        assert "ami.port" in bad.output
        assert_no_secret(bad.output)


@pytest.fixture
def auth_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own where only user ``screener`` with ``REDIS_PASSWORD`` may
    do anything (the default user may only PING, which the harness uses to see it is up)."""
    acl = (
        "--user", "default", "on", "nopass", "+ping",
        "--user", "screener", "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all",
    )  # fmt: skip
    server = RedisServer(tmp_path / "redis-auth", extra_args=acl)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def daemon_settings(tmp_path: Path, ami_port: int, redis_port: int, password: str) -> Settings:
    (tmp_path / "token").write_text(API_TOKEN)
    return load(
        None,
        {
            "ami": {
                "port": ami_port,
                "secret": AMI_SECRET,
                "startup_retries": 0,
                "reconnect_delay": 0.1,
                "action_timeout": 0.5,
            },
            "redis": {
                "url": f"redis://screener:{password}@127.0.0.1:{redis_port}/0",
                "startup_retries": 1,
                "timeout": 0.5,
            },
            "http": {"port": 0, "token_file": str(tmp_path / "token")},
            "agi": {"port": 0},
            "flag": {"spool_dir": str(tmp_path / "spool")},
        },
    )


@pytest.mark.timeout(30)
async def test_the_daemon_never_logs_its_secrets(
    tmp_path: Path, auth_redis: RedisServer, logs: Logs
) -> None:
    """A daemon at DEBUG (every logger, panoramisk's included): start-up, API calls with the right
    and a wrong token, a flag, shutdown; then start-ups refused by Redis and by Asterisk."""
    fake = FakeAmi(secret=AMI_SECRET)
    await fake.start()
    try:
        daemon = Daemon(daemon_settings(tmp_path, fake.port, auth_redis.port, REDIS_PASSWORD))
        stop = asyncio.Event()
        run = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 10)
        base = f"http://127.0.0.1:{daemon.http.port}"
        async with aiohttp.ClientSession(base_url=base) as http:
            for token in (API_TOKEN, "wrong", API_TOKEN[:-1]):
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(
                    "/api/v1/rules", json={"value": NUMBER, "reason": "prank"}, headers=headers
                ) as resp:
                    assert resp.status == (201 if token == API_TOKEN else 401)
                async with http.post(
                    "/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=headers
                ) as resp:
                    assert resp.status in (401, 409)
        stop.set()
        await asyncio.wait_for(run, 10)

        # start-ups refused: by Redis (a wrong password), then by Asterisk (a wrong secret)
        broken = Daemon(daemon_settings(tmp_path, fake.port, auth_redis.port, "wrong-password"))
        with pytest.raises(StoreError):
            await broken.run(asyncio.Event())
        fake.secret = "another-secret"
        refused = Daemon(daemon_settings(tmp_path, fake.port, auth_redis.port, REDIS_PASSWORD))
        with pytest.raises(AmiError, match="login refused"):
            await refused.run(asyncio.Event())
    finally:
        await fake.close()
    assert "screener running" in logs.text and "ami logged in" in logs.text
    assert "redis not ready" in logs.text  # Redis's refusal is logged, without the password
    assert_no_secret(logs.text)
    assert "wrong-password" not in logs.text and "another-secret" not in logs.text
    assert len(logs.lines) > 10


# --- the audit trail is read-only ---------------------------------------------------------------


async def test_the_audit_trail_has_no_write_route(server: Server, store: Store) -> None:
    routes = [(r.method, r.resource.canonical) for r in server.api.app.router.routes()]
    audit = {method for method, path in routes if "audit" in path}
    assert audit == {"GET", "HEAD"}, routes
    rule = make_rule(E164)
    await store.add_rules([rule], by="alice", action="add", now=time.time())
    before = await store.audit_trail()
    assert len(before) == 1
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/api/v1/audit", f"/api/v1/audit?id={before[0].id}"):
            async with server.client.request(method, path, json={}, headers=AUTH) as resp:
                assert resp.status == 405, (method, path)
                assert resp.headers["Allow"] == "GET,HEAD"
                assert "Method Not Allowed" in await json_error(resp)
        async with server.client.request(
            method, f"/api/v1/audit/{before[0].id}", headers=AUTH
        ) as resp:
            assert resp.status in (404, 405)
            await json_error(resp)
    assert await store.audit_trail() == before


async def test_no_route_rewrites_past_audit_entries(
    server: Server, store: Store, redis_raw: aioredis.Redis
) -> None:
    """Drive every admin route (adds, an import, a removal, reads, a failing import): the
    stream only grows, and what was in it stays byte for byte."""
    inbound_call(server.asterisk)

    async def stream() -> list[tuple[str, dict[str, str]]]:
        return [(i, dict(f)) for i, f in await redis_raw.xrange(store.keys.audit)]

    async with server.client.post(
        "/api/v1/rules", json={"value": NUMBER, "reason": "first"}, headers=AUTH
    ) as resp:
        assert resp.status == 201
    first = await stream()
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/rules", {"json": {"value": "+8613900000000", "reason": "2nd"}}),
        ("POST", "/api/v1/rules/import?format=csv", {"data": b"value,reason\n0105*,import\n"}),
        ("POST", "/api/v1/rules/import?format=csv", {"data": b"value,reason\nnope,bad\n"}),
        ("DELETE", "/api/v1/rules/r1?reason=wrong+number&by=bob", {}),
        ("DELETE", "/api/v1/rules/r1?reason=again", {}),
        ("GET", "/api/v1/rules", {}),
        ("GET", "/api/v1/rules/r2", {}),
        ("GET", "/api/v1/rules/export?format=json", {}),
        ("GET", "/api/v1/audit?limit=5", {}),
        ("GET", "/api/v1/flags", {}),
        ("POST", "/api/v1/flags", {"json": {"agent": "PJSIP/agent1"}}),
    ]
    for method, path, kwargs in steps:
        async with server.client.request(method, path, headers=AUTH, **kwargs) as resp:
            assert resp.status < 500, (method, path, await resp.text())
    after = await stream()
    assert after[: len(first)] == first
    actions = [f["action"] for _, f in after[len(first) :]]
    assert actions[0] == "add" and actions[-1] == "remove", actions  # 2nd rule ... r1 removed
    assert any(a.startswith("import") for a in actions), actions
    assert server.sample("screener_errors_total", component="http") == 0


# --- numbers are masked in logs and metrics -----------------------------------------------------

HOTLINES = {"4008001234": "service"}


def assert_masked(text: str) -> None:
    for form in NUMBER_FORMS:
        assert form not in text, f"{form} in:\n{text[-3000:]}"


@pytest.mark.timeout(30)
async def test_flags_and_screens_log_and_count_masked_numbers(
    tmp_path: Path, store: Store, logs: Logs
) -> None:
    settings = load(
        None,
        {
            "http": {"port": 0, "token": TOKEN},
            "hotlines": HOTLINES,
            "flag": {"spool_dir": str(tmp_path / "spool")},
            "screening": {"quorum": 2},
        },
    )
    async with Server(settings, store) as s:
        screening = ScreeningService(settings, store, s.metrics)
        s.service.on_recorded = screening.consider_auto_block
        # screens: unknown caller (DEBUG line), then injection, shadow rule, block rule
        await screening.screen([b64(NUMBER), "4008001234", "allowed"])
        await screening.screen([b64(NUMBER + "\r\nagi_arg_1: " + NUMBER), "4008001234", ""])
        shadow = make_rule(E164, now=time.time() - 1, mode="shadow", action="analysis")
        await store.add_rules([shadow], by="alice", action="add", now=time.time())
        await screening.screen([b64(NUMBER), "4008001234", "allowed"])
        # flags by two agents: recorded, then an automatic block (quorum 2)
        for n, agent in ((1, "PJSIP/agent1"), (2, "PJSIP/agent2")):
            call = inbound_call(s.asterisk, n=n, agent=agent, number=NUMBER)
            result = await s.service.on_flag_requested(
                FlagRequested(call.agent.name, call.token, time.monotonic())
            )
            assert result.outcome == "recorded", result
        forged = inbound_call(s.asterisk, n=3, agent="PJSIP/agent3", number=NUMBER)
        await s.service.on_flag_requested(
            FlagRequested(forged.agent.name, "forged-token", time.monotonic())
        )
        await screening.screen([b64(NUMBER), "4008001234", "allowed"])  # now blocked
        await statistics.refresh(store, s.metrics)  # the top-sources gauge
        async with s.client.get("/metrics") as resp:
            page = await resp.text()
    text = logs.text
    for expected in ("injection attempt", "would apply", "flag outcome=recorded", "auto block"):
        assert expected in text, expected
    assert "verdict=block" in text
    assert MASKED in text
    assert_masked(text)
    assert "screener_top_source_flags{" in page
    assert MASKED in page
    assert_masked(page)
    assert not re.search(r'="[^"]*[0-9]{7}', page), "a label value holds a long digit run"


# --- oversized and malformed admin requests: a clear 4xx, never a 500 ---------------------------

J = {"Content-Type": "application/json"}
DEEP = b"[" * 2000 + b"]" * 2  # deeper than Python's recursion limit, within the size limits
MALFORMED: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/api/v1/rules", {"data": b"x" * 5000, "headers": J}, 413, "exceeded"),
    ("POST", "/api/v1/flags", {"data": b" " * 5000, "headers": J}, 413, "exceeded"),
    ("POST", "/api/v1/rules", {"data": b"{not json", "headers": J}, 400, "JSON object"),
    ("POST", "/api/v1/rules", {"data": b"", "headers": J}, 400, "JSON"),
    ("POST", "/api/v1/rules", {"data": b"[1, 2]", "headers": J}, 400, "JSON object"),
    ("POST", "/api/v1/rules", {"data": b"null", "headers": J}, 400, "JSON object"),
    ("POST", "/api/v1/rules", {"data": b"[" * 3000, "headers": J}, 400, "nested too deeply"),
    ("POST", "/api/v1/rules", {"data": b'{"value": 1' + b"0" * 900 + b"}", "headers": J}, 400, ""),
    ("POST", "/api/v1/rules", {"data": b'{"value": "\xff\xfe", "reason": "x"}', "headers": J},
     400, "UTF-8"),
    ("POST", "/api/v1/rules", {"data": b'{"value": "1"}', "headers": {"Content-Type": "text/csv"}},
     415, "application/json"),
    ("POST", "/api/v1/flags", {"data": b'{"agent": "PJSIP/agent1"}'}, 415, "application/json"),
    ("POST", "/api/v1/flags", {"data": b'{"agent": "x"}',
                               "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     415, "application/json"),
    ("POST", "/api/v1/rules", {"json": {"value": 13812341234, "reason": "x"}}, 400, "value"),
    ("POST", "/api/v1/rules", {"json": {"value": NUMBER, "reason": ["x"]}}, 400, "reason"),
    ("POST", "/api/v1/rules", {"json": {"value": NUMBER, "reason": "x", "colour": "red"}}, 400,
     "unknown field"),
    ("POST", "/api/v1/rules", {"json": {"value": NUMBER, "reason": "x", "expires": 1e300}}, 400,
     "expires"),
    ("POST", "/api/v1/rules", {"json": {"value": NUMBER, "reason": "x", "windows": [1]}}, 400,
     "windows"),
    ("POST", "/api/v1/rules", {"json": {"value": NUMBER, "reason": "x", "by": {"a": 1}}}, 400,
     "actor"),
    ("POST", "/api/v1/rules", {"json": {"value": NUMBER, "reason": "x" * 1000}}, 400, "longer"),
    ("POST", "/api/v1/flags", {"json": {"agent": ["PJSIP/agent1"]}}, 400, "agent"),
    ("POST", "/api/v1/flags", {"json": {"agent": "PJSIP/agent1\r\nAction: Originate"}}, 400,
     "agent"),
    ("GET", "/api/v1/rules/x1", {}, 400, "r<digits>"),
    ("GET", "/api/v1/rules/r" + "9" * 40, {}, 400, "r<digits>"),
    ("GET", "/api/v1/rules/r1%00", {}, 400, "r<digits>"),
    ("GET", "/api/v1/rules/%ff", {}, 400, "r<digits>"),
    ("DELETE", "/api/v1/rules/..%2f..%2fetc?reason=x", {}, 400, "r<digits>"),
    ("GET", "/api/v1/rules/r999999", {}, 404, "no rule"),
    ("DELETE", "/api/v1/rules/r1", {}, 400, "reason"),
    ("GET", "/api/v1/flags?limit=99999999999999999999", {}, 400, "limit"),
    ("GET", "/api/v1/flags?limit=" + "9" * 5000, {}, 400, "limit"),
    ("GET", "/api/v1/flags?limit=-1", {}, 400, "limit"),
    ("GET", "/api/v1/flags?limit=1e3", {}, 400, "limit"),
    ("GET", "/api/v1/flags?limit=%ff", {}, 400, "limit"),
    ("GET", "/api/v1/rules?limit=100001", {}, 400, "limit"),
    ("GET", "/api/v1/rules?list=everything", {}, 400, ""),
    ("GET", "/api/v1/rules?origin=%00", {}, 400, ""),
    ("GET", "/api/v1/rules?value=" + "9" * 300, {}, 400, ""),
    ("GET", "/api/v1/audit?limit=10001", {}, 400, "limit"),
    ("GET", "/api/v1/audit?rule=../../x", {}, 400, "r<digits>"),
    ("GET", "/api/v1/rules/export?format=xml", {}, 400, "csv or json"),
    ("POST", "/api/v1/rules/import?format=xml", {"data": b"value,reason\n"}, 422, "nothing"),
    ("POST", "/api/v1/rules/import?format=json", {"data": DEEP}, 422, "nothing"),
    ("POST", "/api/v1/rules/import?format=csv", {"data": b"value,reason\n\xff,x\n"}, 400, "UTF-8"),
    ("POST", "/api/v1/rules/import?format=csv", {"data": b"value,reason\n" + b"x" * 4000}, 413,
     "split the file"),
    ("POST", "/api/v1/rules/import?format=csv&by=%0A", {"data": b"value,reason\n1,x\n"}, 400,
     "actor"),
    ("PUT", "/api/v1/rules", {"json": {}}, 405, "Method Not Allowed"),
    ("PATCH", "/api/v1/flags", {"json": {}}, 405, "Method Not Allowed"),
    ("GET", "/api/v1/nothing-here", {}, 404, "Not Found"),
]  # fmt: skip


@pytest.fixture
async def small_server(tmp_path: Path, store: Store) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path, max_body_bytes=4096, max_import_bytes=2048)
    async with Server(settings, store) as s:
        yield s


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    MALFORMED,
    ids=[f"{m} {p[:40]} {s}" for m, p, _, s, _ in MALFORMED],
)
async def test_bad_admin_requests_get_a_clear_4xx(
    small_server: Server,
    store: Store,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    s = small_server
    inbound_call(s.asterisk)
    headers = {**AUTH, **kwargs.pop("headers", {})}
    async with s.client.request(method, path, headers=headers, **kwargs) as resp:
        assert resp.status == status, await resp.text()
        assert message in await json_error(resp)
    assert s.sample("screener_errors_total", component="http") == 0
    assert s.asterisk.redirects == []
    assert await store.all_rules() == []
    async with s.client.get("/healthz") as resp:  # still serving
        assert resp.status == 200


async def test_a_json_number_python_cannot_read_is_a_400(tmp_path: Path, store: Store) -> None:
    body = b'{"value": ' + b"9" * 5000 + b', "reason": "x"}'  # over the 4300-digit limit
    async with Server(make_settings(tmp_path, max_body_bytes=65536), store) as s:
        async with s.client.post("/api/v1/rules", data=body, headers={**AUTH, **J}) as resp:
            assert resp.status == 400
            assert "a number is too long" in await json_error(resp)
        assert s.sample("screener_errors_total", component="http") == 0


async def test_oversized_request_heads_are_refused_by_the_server(small_server: Server) -> None:
    """Headers and URLs beyond aiohttp's limits are answered with a 4xx by its parser (plain
    text: no handler runs), and the server goes on serving."""
    for path, headers in (
        ("/api/v1/flags", {"Authorization": "Bearer " + "x" * 100_000}),
        ("/api/v1/flags?limit=" + "1" * 100_000, AUTH),
        ("/api/v1/flags", {**AUTH, **{f"X-Pad-{i}": "y" * 100 for i in range(200)}}),
    ):
        async with small_server.client.get(path, headers=headers) as resp:
            assert 400 <= resp.status < 500, resp.status
    async with small_server.client.get("/api/v1/flags", headers=AUTH) as resp:
        assert resp.status == 200
    assert small_server.sample("screener_errors_total", component="http") == 0


# --- retention ----------------------------------------------------------------------------------

# Keys without a TTL: indexes trimmed by Store.expire_flags, and histograms of counts only.
NO_TTL = {"flags", "flags:anonymous", "callers", "blocks"}
HISTOGRAMS = {"pattern:hours", "pattern:weekdays", "pattern:week", "pattern:hotlines"}


def short(store: Store, key: str) -> str:
    return key.removeprefix(store.keys.root + ":")


async def test_every_flag_key_expires_after_the_retention(
    store: Store, redis_raw: aioredis.Redis
) -> None:
    """Recorded with ``retention_days=7``: every key holding the flag, the caller or the day
    expires in 7 days (Redis ``TTL``); the rest are the indexes and count histograms."""
    now = datetime.now(UTC)
    await store.record_flag(make_flag("1.1", NUMBER, at=now), 7)
    withheld = make_flag("1.2", "", at=now, presentation=Presentation.WITHHELD)
    await store.record_flag(withheld, 7)
    keys = sorted(await redis_raw.keys("*"))
    ttls = {short(store, k): await redis_raw.ttl(k) for k in keys}
    expiring = {k: t for k, t in ttls.items() if t != -1}
    assert {k for k, t in ttls.items() if t == -1} == NO_TTL | HISTOGRAMS
    assert all(7 * DAY - 5 <= t <= 7 * DAY for t in expiring.values()), expiring
    assert {"flag:1.1", f"caller:{E164}", f"caller:{E164}:agents"} <= set(expiring)
    assert any(k.startswith("day:") for k in expiring)
    for key in HISTOGRAMS:  # counts by hour, weekday, hotline: no number, no flag id
        fields = await redis_raw.hgetall(f"{store.keys.root}:{key}")
        assert_masked(repr(fields))
        assert "1.1" not in repr(fields)


async def _record_with_ttl(store: Store, flag: Any, seconds: int) -> None:
    """The product's record script, as ``Store.record_flag`` runs it, with a TTL of seconds
    instead of days (Redis cannot be made to skip days)."""
    keys, args = store.record_flag_call(flag, 1)
    assert args[1] == DAY
    args[1] = seconds
    assert await store._record(keys=keys, args=args) == 1


@pytest.mark.timeout(20)
async def test_flags_are_gone_after_the_retention(store: Store, redis_raw: aioredis.Redis) -> None:
    """What proves deletion: Redis itself expires every key the record script set a TTL on
    (here 1 s instead of N days: the formula is checked above), and ``expire_flags`` (the
    daemon's hourly job) removes what is left in the indexes and rankings. Afterwards no key
    holds the number, the flag id or the masked number; the count histograms remain.

    Limits: Redis's clock cannot be advanced, hence seconds for days; per-caller aggregates
    are renewed by each new flag of that caller (a caller flagged every month keeps counts
    older than the retention until flagged no more), and the overall histograms are all-time
    counts without numbers.
    """
    old = datetime.now(UTC) - timedelta(days=3)
    await _record_with_ttl(store, make_flag("1700000000.1", NUMBER, at=old), 1)
    anonymous = make_flag("1700000000.2", "", at=old, presentation=Presentation.WITHHELD)
    await _record_with_ttl(store, anonymous, 1)
    recent = make_flag("1700000000.3", "13900001111", at=datetime.now(UTC))
    await store.record_flag(recent, 400)
    assert len(await store.recent_flags()) == 3
    await asyncio.sleep(1.5)
    removed = await store.expire_flags(time.time() - 2 * DAY)
    assert removed == 2
    left = {short(store, k): await redis_raw.type(k) for k in await redis_raw.keys("*")}
    dump = []
    for key in left:
        full = f"{store.keys.root}:{key}"
        kind = left[key]
        if kind == "string":
            dump.append(await redis_raw.get(full))
        elif kind == "hash":
            dump.append(repr(await redis_raw.hgetall(full)))
        elif kind == "zset":
            dump.append(repr(await redis_raw.zrange(full, 0, -1, withscores=True)))
        elif kind == "set":
            dump.append(repr(await redis_raw.smembers(full)))
        dump.append(key)
    text = "\n".join(str(d) for d in dump)
    assert_masked(text)
    assert "1700000000.1" not in text and "1700000000.2" not in text
    assert "1700000000.3" in text  # within retention: kept
    assert await store.get_flag("1700000000.1") is None
    assert [f.flag_id for f in await store.recent_flags()] == ["1700000000.3"]
    assert await store.caller_stats(E164) is None
    sources, distinct = await store.top_sources(10)
    assert ([c.key for c in sources], distinct) == (["+8613900001111"], 1)
    assert await store.expire_flags(time.time() - 2 * DAY) == 0


async def test_the_daemon_trims_flags_older_than_the_configured_retention(
    tmp_path: Path,
) -> None:
    settings = load(None, {"flag": {"retention_days": 30, "spool_dir": str(tmp_path)}})
    daemon = Daemon(settings)
    cutoffs: list[float] = []

    class Recorder:
        async def expire_flags(self, older_than: float) -> int:
            cutoffs.append(older_than)
            return 0

    real_store = daemon.store
    daemon.store = Recorder()  # type: ignore[assignment]
    task = asyncio.create_task(daemon._retention_loop())
    try:
        while not cutoffs:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await real_store.aclose()
    assert abs(cutoffs[0] - (time.time() - 30 * DAY)) < 5
