"""Tests for screener.http_api: a real aiohttp server on port 0, driven by a real client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from screener.admin import RuleAdmin
from screener.config import Settings, load
from screener.errors import AmiError
from screener.http_api import HttpApi
from screener.metrics import Metrics
from screener.model import Flag
from screener.service import FlagService
from screener.spool import Spool
from screener.store import Store
from tests.factories import make_flag, make_rule
from tests.fakes import FakeAsterisk, inbound_call
from tests.lab.net import free_port

TOKEN = "api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


def make_settings(tmp_path: Path, **http: Any) -> Settings:
    return load(
        None,
        {
            "http": {"host": "127.0.0.1", "port": 0, "token": TOKEN, **http},
            "flag": {"spool_dir": str(tmp_path / "spool")},
            "hotlines": {"4008001234": "service"},
        },
    )


class Server:
    """An HttpApi with its parts, and a client session pointed at it."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.asterisk = FakeAsterisk()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        spool = Spool(settings.flag.spool_dir)
        spool.open()
        self.service = FlagService(settings, self.asterisk, store, spool, self.metrics)
        self.health_state: dict[str, Any] = {"ok": True, "ami": "connected"}
        self.api = HttpApi(
            settings.http,
            self.metrics,
            self.service,
            store,
            health or (lambda: self.health_state),
            RuleAdmin(settings, store),
        )
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Server:
        await self.api.start()
        assert self.api.port != 0
        self.http = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{self.api.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()
        await self.api.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def server(tmp_path: Path, store: Store) -> AsyncIterator[Server]:
    async with Server(make_settings(tmp_path, max_body_bytes=1024), store) as s:
        yield s


# --- /healthz and /metrics --------------------------------------------------------------------


async def test_healthz_ok(server: Server) -> None:
    async with server.client.get("/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True, "ami": "connected"}


async def test_healthz_not_ok_is_503(server: Server) -> None:
    server.health_state = {"ok": False, "ami": "disconnected"}
    async with server.client.get("/healthz") as resp:
        assert resp.status == 503
        assert (await resp.json())["ami"] == "disconnected"


async def test_healthz_and_metrics_need_no_token(server: Server) -> None:
    for path in ("/healthz", "/metrics"):
        async with server.client.get(path) as resp:
            assert resp.status == 200


async def test_metrics_page(server: Server) -> None:
    inbound_call(server.asterisk)
    async with server.client.post("/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=AUTH):
        pass
    async with server.client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert "# TYPE screener_flags_total counter" in text
    assert 'screener_flag_requests_total{outcome="recorded"} 1.0' in text
    assert "screener_redis_up 1.0" in text


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
    ],
)
async def test_admin_api_needs_the_token(server: Server, headers: dict[str, str]) -> None:
    inbound_call(server.asterisk)
    async with server.client.post(
        "/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=headers
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "missing or wrong bearer token"
    async with server.client.get("/api/v1/flags", headers=headers) as resp:
        assert resp.status == 401
    assert server.asterisk.redirects == []


async def test_bearer_scheme_is_case_insensitive(server: Server) -> None:
    async with server.client.get(
        "/api/v1/flags", headers={"Authorization": f"bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200


async def test_admin_api_is_disabled_without_a_configured_token(
    tmp_path: Path, store: Store
) -> None:
    settings = make_settings(tmp_path, token=None)
    async with Server(settings, store) as s:
        async with s.client.get("/api/v1/flags", headers=AUTH) as resp:
            assert resp.status == 503
            assert "admin API disabled" in (await resp.json())["error"]
        async with s.client.get("/healthz") as resp:
            assert resp.status == 200


async def test_token_from_a_file(tmp_path: Path, store: Store) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    settings = make_settings(tmp_path, token=None, token_file=str(token_file))
    async with Server(settings, store) as s:
        headers = {"Authorization": "Bearer from-a-file"}
        async with s.client.get("/api/v1/flags", headers=headers) as resp:
            assert resp.status == 200


async def raw_request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_non_utf8_authorization_header_is_401_not_500(server: Server) -> None:
    head = (
        b"GET /api/v1/flags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = await raw_request(server.api.port, head)
    assert answer.startswith(b"HTTP/1.1 401")
    assert server.sample("screener_errors_total", component="http") == 0


# --- POST /api/v1/flags -----------------------------------------------------------------------


async def test_post_flag_records_the_call(server: Server, store: Store) -> None:
    call = inbound_call(server.asterisk)
    async with server.client.post(
        "/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=AUTH
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["outcome"] == "recorded"
    assert body["reason"] == ""
    flag = Flag.from_dict(body["flag"])
    assert flag.agent == "PJSIP/agent1"
    assert flag.source == "api"
    assert flag.caller.key == "+8613812341234"
    assert body["flag"]["hotline"] == "service"
    assert len(server.asterisk.redirects) == 1
    assert server.asterisk.redirects[0].channel == call.caller.name
    assert await store.get_flag(flag.flag_id) == flag


async def test_post_flag_twice_is_a_duplicate(server: Server) -> None:
    inbound_call(server.asterisk)
    for expected, outcome in ((201, "recorded"), (200, "duplicate")):
        async with server.client.post(
            "/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=AUTH
        ) as resp:
            assert resp.status == expected
            assert (await resp.json())["outcome"] == outcome
    assert len(server.asterisk.redirects) == 1


async def test_post_flag_for_an_idle_agent_is_409(server: Server) -> None:
    async with server.client.post(
        "/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=AUTH
    ) as resp:
        assert resp.status == 409
        body = await resp.json()
    assert body == {"outcome": "not_inbound", "reason": "agent has no active call", "flag": None}


async def test_post_flag_when_asterisk_is_down_is_503(server: Server) -> None:
    server.asterisk.fail_with = AmiError("CoreShowChannels: not connected to Asterisk")
    async with server.client.post(
        "/api/v1/flags", json={"agent": "PJSIP/agent1"}, headers=AUTH
    ) as resp:
        assert resp.status == 503
        assert "asterisk unavailable" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body must be JSON"),
        (b"\xff\xfe", "body must be JSON"),
        (b"", "body must be JSON"),
        (b"[]", "field 'agent'"),
        (b'"PJSIP/agent1"', "field 'agent'"),
        (b"{}", "field 'agent'"),
        (b'{"agent": ""}', "field 'agent'"),
        (b'{"agent": 7}', "field 'agent'"),
        (b'{"agent": null}', "field 'agent'"),
        (b'{"agent": "PJSIP/agent1\\r\\nAction: Originate"}', "agent must be"),
        (b'{"agent": "bad name"}', "agent must be"),
    ],
)
async def test_post_flag_bad_requests_are_400(server: Server, body: bytes, message: str) -> None:
    inbound_call(server.asterisk)
    headers = {**AUTH, "Content-Type": "application/json"}
    async with server.client.post("/api/v1/flags", data=body, headers=headers) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert server.asterisk.redirects == []
    assert server.sample("screener_errors_total", component="http") == 0


async def test_oversized_body_is_413(server: Server) -> None:
    body = b'{"agent": "PJSIP/agent1", "pad": "' + b"x" * 4096 + b'"}'
    headers = {**AUTH, "Content-Type": "application/json"}
    async with server.client.post("/api/v1/flags", data=body, headers=headers) as resp:
        assert resp.status == 413
    assert server.asterisk.redirects == []


async def test_body_just_under_the_limit_is_read(server: Server) -> None:
    body = b'{"agent": "PJSIP/agent1", "pad": "' + b"x" * 900 + b'"}'
    headers = {**AUTH, "Content-Type": "application/json"}
    async with server.client.post("/api/v1/flags", data=body, headers=headers) as resp:
        assert resp.status == 409  # parsed; the agent just has no call


# --- GET /api/v1/flags ------------------------------------------------------------------------


async def test_get_flags(server: Server, store: Store) -> None:
    from datetime import timedelta

    from tests.factories import AT

    flags = [make_flag(f"1700000000.{n}", at=AT + timedelta(minutes=n)) for n in range(3)]
    for f in flags:
        await store.record_flag(f, 400)
    async with server.client.get("/api/v1/flags", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [Flag.from_dict(d) for d in body["flags"]] == flags[::-1]
    async with server.client.get("/api/v1/flags?limit=1", headers=AUTH) as resp:
        assert [d["flag_id"] for d in (await resp.json())["flags"]] == ["1700000000.2"]


async def test_get_flags_when_empty(server: Server) -> None:
    async with server.client.get("/api/v1/flags", headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == {"flags": []}


async def test_get_flags_returns_hostile_caller_ids_as_json(server: Server, store: Store) -> None:
    hostile = "123\r\nAction: Originate\r\n\x00"
    await store.record_flag(make_flag(raw=hostile), 400)
    async with server.client.get("/api/v1/flags", headers=AUTH) as resp:
        raw = await resp.read()
    assert b"\r\n" not in raw
    assert Flag.from_json(raw.decode()[len('{"flags": [') : -2]).caller.raw == hostile


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5", ""])
async def test_get_flags_limit_is_checked(server: Server, limit: str) -> None:
    async with server.client.get(f"/api/v1/flags?limit={limit}", headers=AUTH) as resp:
        assert resp.status == 400
        assert "limit" in (await resp.json())["error"]


async def test_get_flags_when_redis_is_down_is_503(tmp_path: Path) -> None:
    dead = Store.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
    try:
        async with (
            Server(make_settings(tmp_path), dead) as s,
            s.client.get("/api/v1/flags", headers=AUTH) as resp,
        ):
            assert resp.status == 503
            assert "redis unavailable" in (await resp.json())["error"]
    finally:
        await dead.aclose()


# --- the per-request error boundary -----------------------------------------------------------


async def test_an_unexpected_error_is_a_500_that_reveals_nothing(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("secret internals /etc/screener")

    async with Server(make_settings(tmp_path), store, health=broken) as s:
        with caplog.at_level(logging.ERROR, logger="screener.http_api"):
            async with s.client.get("/healthz") as resp:
                assert resp.status == 500
                text = await resp.text()
        assert "secret internals" not in text
        assert "internal error" in text
        assert s.sample("screener_errors_total", component="http") == 1
        assert "http request failed path=/healthz" in caplog.text
        # the server is still up
        async with s.client.get("/metrics") as resp:
            assert resp.status == 200


async def test_unknown_path_is_404(server: Server) -> None:
    async with server.client.get("/nope") as resp:
        assert resp.status == 404
    assert server.sample("screener_errors_total", component="http") == 0


async def test_close_before_start_is_a_no_op(tmp_path: Path, store: Store) -> None:
    await Server(make_settings(tmp_path), store).api.close()


# --- rules ------------------------------------------------------------------------------------

CALLER = "+8613812341234"
RULE_ENDPOINTS = [
    ("GET", "/api/v1/rules"),
    ("POST", "/api/v1/rules"),
    ("POST", "/api/v1/rules/import?format=csv"),
    ("GET", "/api/v1/rules/export"),
    ("GET", "/api/v1/rules/r1"),
    ("DELETE", "/api/v1/rules/r1?reason=x&by=bob"),
    ("GET", "/api/v1/audit"),
]


async def add_rule(server: Server, **fields: Any) -> dict[str, Any]:
    body = {"value": CALLER, "reason": "threats", **fields}
    async with server.client.post("/api/v1/rules", json=body, headers=AUTH) as resp:
        assert resp.status == 201, await resp.text()
        rule: dict[str, Any] = (await resp.json())["rule"]
        return rule


@pytest.mark.parametrize(("method", "path"), RULE_ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}])
async def test_rule_endpoints_need_the_token(
    server: Server, store: Store, method: str, path: str, headers: dict[str, str]
) -> None:
    await store.add_rules([make_rule()], by="alice", action="add", now=0)
    async with server.client.request(
        method, path, json={"value": "+8613900000000", "reason": "x"}, headers=headers
    ) as resp:
        assert resp.status == 401
        body = await resp.text()
    assert "+86" not in body
    assert [r.id for r in await store.all_rules()] == ["r1"]  # nothing added or removed
    assert len(await store.audit_trail()) == 1


async def test_post_rule(server: Server, store: Store) -> None:
    rule = await add_rule(server, treatment="busy", hotlines=["service"], by="alice")
    assert rule["id"] == "r1"
    assert (rule["value"], rule["action"], rule["treatment"]) == (CALLER, "block", "busy")
    assert (rule["created_by"], rule["origin"], rule["hotlines"]) == ("alice", "admin", ["service"])
    stored = await store.get_rule("r1")
    assert stored is not None
    assert stored.to_dict() == rule
    (entry,) = await store.audit_trail()
    assert (entry.action, entry.by, entry.why) == ("add", "alice", "threats")


async def test_post_rule_actor_defaults_to_api(server: Server) -> None:
    assert (await add_rule(server))["created_by"] == "api"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body must be a JSON object"),
        (b"[]", "body must be a JSON object"),
        (b'{"value": "+8613812341234"}', "reason is required"),
        (b'{"value": "nonsense", "reason": "x"}', "not a phone number"),
        (b'{"value": "+8613812341234", "reason": "x", "hotlines": ["nowhere"]}', "nowhere"),
        (b'{"value": "+8613812341234", "reason": "x", "by": "bob smith"}', "actor"),
        (b'{"value": "+8613812341234", "reason": "x", "by": ["bob"]}', "actor"),
    ],
)
async def test_post_rule_bad_requests_are_400(
    server: Server, store: Store, body: bytes, message: str
) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    async with server.client.post("/api/v1/rules", data=body, headers=headers) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert await store.all_rules() == []
    assert server.sample("screener_errors_total", component="http") == 0


async def test_get_rules_with_filters(server: Server, store: Store) -> None:
    number = await add_rule(server)
    allow = await add_rule(server, value="+8613900000000", list="allow")
    prefix = await add_rule(server, value="+86105*")
    # a rule that ran out in 2024, not yet swept
    (expired,) = await store.add_rules(
        [make_rule("+8613700000000", expires="1h")], by="alice", action="add", now=0
    )

    async def listed(query: str = "") -> list[str]:
        async with server.client.get(f"/api/v1/rules{query}", headers=AUTH) as resp:
            assert resp.status == 200
            return [r["id"] for r in (await resp.json())["rules"]]

    assert await listed() == [number["id"], allow["id"], prefix["id"]]
    assert await listed("?list=allow") == [allow["id"]]
    assert await listed("?value=%2B86105*") == [prefix["id"]]
    assert await listed("?value=13812341234") == [number["id"]]
    assert await listed("?origin=import") == []
    assert len(await listed("?limit=2")) == 2
    assert await listed("?expired=1") == [expired, number["id"], allow["id"], prefix["id"]]
    assert await listed("?expired=true&value=%2B8613700000000") == [expired]


@pytest.mark.parametrize(
    "query", ["?list=grey", "?origin=robot", "?limit=0", "?limit=ten", "?value=12..3"]
)
async def test_get_rules_bad_queries_are_400(server: Server, query: str) -> None:
    async with server.client.get(f"/api/v1/rules{query}", headers=AUTH) as resp:
        assert resp.status == 400
    assert server.sample("screener_errors_total", component="http") == 0


async def test_get_rule_with_its_history(server: Server) -> None:
    rule = await add_rule(server, by="alice")
    async with server.client.get(f"/api/v1/rules/{rule['id']}", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["rule"] == rule
    assert [(h["action"], h["by"], h["why"]) for h in body["history"]] == [
        ("add", "alice", "threats")
    ]
    assert body["history"][0]["data"] == rule


@pytest.mark.parametrize(("rule_id", "status"), [("r404", 404), ("x1", 400), ("r1;r2", 400)])
async def test_get_rule_unknown_or_bad_id(server: Server, rule_id: str, status: int) -> None:
    async with server.client.get(f"/api/v1/rules/{rule_id}", headers=AUTH) as resp:
        assert resp.status == status


async def test_delete_rule_audits_who_and_why(server: Server, store: Store) -> None:
    rule = await add_rule(server)
    path = f"/api/v1/rules/{rule['id']}?reason=wrong%20number&by=bob"
    async with server.client.delete(path, headers=AUTH) as resp:
        assert resp.status == 200
        assert (await resp.json())["removed"] == rule
    assert await store.get_rule(rule["id"]) is None
    assert await store.candidate_rules(CALLER, "", CALLER) == []
    latest = (await store.audit_trail(limit=1))[0]
    assert (latest.action, latest.by, latest.why, latest.rule) == (
        "remove",
        "bob",
        "wrong number",
        rule["id"],
    )
    async with server.client.delete(path, headers=AUTH) as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [("", "reason is required"), ("?reason=%20", "reason is required"),
     ("?reason=x%0D%0Aforged", "one line"), ("?reason=x&by=bob%20smith", "actor")],
)  # fmt: skip
async def test_delete_rule_bad_requests_keep_the_rule(
    server: Server, store: Store, query: str, message: str
) -> None:
    rule = await add_rule(server)
    async with server.client.delete(f"/api/v1/rules/{rule['id']}{query}", headers=AUTH) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert await store.get_rule(rule["id"]) is not None
    assert len(await store.audit_trail()) == 1


GOOD_CSV = "value,reason,action\n+8613812341234,threats,block\n'+86105*,public phones,challenge\n"
BAD_CSV = (
    "value,reason,action\n"
    "+8613812341234,threats,block\n"
    "nonsense,x,block\n"
    "+8613900000000,,block\n"
    "+86105*,ok,block\n"
)


async def test_import_csv(server: Server, store: Store) -> None:
    async with server.client.post(
        "/api/v1/rules/import?format=csv&by=carol", data=GOOD_CSV, headers=AUTH
    ) as resp:
        assert resp.status == 201
        assert await resp.json() == {"imported": 2, "ids": ["r1", "r2"]}
    rules = await store.all_rules()
    assert [(r.value, r.origin, r.created_by) for r in rules] == [
        (CALLER, "import", "carol"),
        ("+86105", "import", "carol"),
    ]
    assert {(e.action, e.by) for e in await store.audit_trail()} == {
        ("import", "carol"),
        ("import-commit", "carol"),
    }


async def test_import_json(server: Server, store: Store) -> None:
    text = '{"value": "+8613812341234", "reason": "a"}\n{"value": "any", "reason": "b"}\n'
    async with server.client.post(
        "/api/v1/rules/import?format=json", data=text, headers=AUTH
    ) as resp:
        assert resp.status == 201
        assert (await resp.json())["ids"] == ["r1", "r2"]
    assert [r.created_by for r in await store.all_rules()] == ["api", "api"]


async def test_import_with_bad_lines_is_422_and_applies_nothing(
    server: Server, store: Store, redis_raw: Any
) -> None:
    async with server.client.post(
        "/api/v1/rules/import?format=csv", data=BAD_CSV, headers=AUTH
    ) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["error"] == "nothing imported"
    assert [p["line"] for p in body["problems"]] == [3, 4]
    assert "not a phone number" in body["problems"][0]["message"]
    assert "reason is required" in body["problems"][1]["message"]
    assert [k async for k in redis_raw.scan_iter(match="*")] == []  # not even the good lines


@pytest.mark.parametrize(
    ("query", "status"), [("?format=xlsx", 422), ("?format=csv&by=bob%20smith", 400)]
)
async def test_import_bad_requests(server: Server, store: Store, query: str, status: int) -> None:
    async with server.client.post(
        f"/api/v1/rules/import{query}", data=GOOD_CSV, headers=AUTH
    ) as resp:
        assert resp.status == status
    assert await store.all_rules() == []


async def test_import_of_an_empty_file_is_422(server: Server) -> None:
    async with server.client.post("/api/v1/rules/import", data=b"", headers=AUTH) as resp:
        assert resp.status == 422
        assert (await resp.json())["problems"] == [{"line": 0, "message": "no rules in the file"}]


async def test_import_of_a_non_utf8_file_is_400(server: Server, store: Store) -> None:
    headers = {**AUTH, "Content-Type": "text/csv; charset=utf-8"}
    async with server.client.post(
        "/api/v1/rules/import", data=b"value,reason\n\xff\xfe,x\n", headers=headers
    ) as resp:
        assert resp.status == 400
    assert await store.all_rules() == []


async def test_export_csv_and_json(server: Server) -> None:
    await add_rule(server)
    await add_rule(server, value="+86105*", reason="=cmd|' /C calc'!A0")
    async with server.client.get("/api/v1/rules/export", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/csv"
        text = await resp.text()
    lines = text.splitlines()
    assert lines[0].startswith("id,list,match,value")
    assert lines[1].startswith("r1,block,number,'+8613812341234,")
    assert ",'=cmd|" in lines[2]  # formula-safe
    async with server.client.get("/api/v1/rules/export?format=json", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        rows = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [r["id"] for r in rows] == ["r1", "r2"]
    async with server.client.get("/api/v1/rules/export?format=xml", headers=AUTH) as resp:
        assert resp.status == 400


async def test_get_audit(server: Server) -> None:
    a = await add_rule(server, by="alice")
    await add_rule(server, value="+8613900000000", by="alice")
    async with server.client.delete(f"/api/v1/rules/{a['id']}?reason=done&by=bob", headers=AUTH):
        pass
    async with server.client.get("/api/v1/audit", headers=AUTH) as resp:
        assert resp.status == 200
        audit = (await resp.json())["audit"]
    assert [(e["action"], e["rule"], e["by"]) for e in audit] == [
        ("remove", "r1", "bob"),
        ("add", "r2", "alice"),
        ("add", "r1", "alice"),
    ]
    async with server.client.get("/api/v1/audit?rule=r1&limit=1", headers=AUTH) as resp:
        assert [e["action"] for e in (await resp.json())["audit"]] == ["remove"]


@pytest.mark.parametrize("query", ["?limit=0", "?limit=10001", "?limit=x", "?rule=1", "?rule=r"])
async def test_get_audit_bad_queries_are_400(server: Server, query: str) -> None:
    async with server.client.get(f"/api/v1/audit{query}", headers=AUTH) as resp:
        assert resp.status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/api/v1/audit", "/api/v1/audit?rule=r1"])
async def test_the_audit_trail_is_read_only(
    server: Server, store: Store, method: str, path: str
) -> None:
    await add_rule(server)
    async with server.client.request(
        method, path, json={"action": "remove", "rule": "r1"}, headers=AUTH
    ) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] in ("GET,HEAD", "GET, HEAD", "HEAD,GET", "HEAD, GET")
    assert [(e.action, e.rule) for e in await store.audit_trail()] == [("add", "r1")]
    assert await store.get_rule("r1") is not None


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_rules_cannot_be_edited_in_place(server: Server, method: str) -> None:
    rule = await add_rule(server)
    async with server.client.request(
        method, f"/api/v1/rules/{rule['id']}", json={"value": "+8613900000000"}, headers=AUTH
    ) as resp:
        assert resp.status == 405


@pytest.mark.parametrize(("method", "path"), RULE_ENDPOINTS)
async def test_rule_endpoints_when_redis_is_down_are_503(
    tmp_path: Path, method: str, path: str
) -> None:
    dead = Store.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
    body = GOOD_CSV if "import" in path else None
    json_body = None if body else {"value": CALLER, "reason": "x"}
    try:
        async with (
            Server(make_settings(tmp_path), dead) as s,
            s.client.request(method, path, data=body, json=json_body, headers=AUTH) as resp,
        ):
            assert resp.status == 503
            assert "redis unavailable" in (await resp.json())["error"]
            assert s.sample("screener_errors_total", component="redis") == 1
            assert s.sample("screener_errors_total", component="http") == 0
    finally:
        await dead.aclose()


async def test_an_import_has_its_own_size_limit(tmp_path: Path, store: Store) -> None:
    rows = "".join(f"+86138000{n:05d},rule number {n} of a big file\n" for n in range(100))
    big = "value,reason\n" + rows  # ~4 KB: over the API's 1 KiB body limit
    settings = make_settings(tmp_path, max_body_bytes=1024, max_import_bytes=len(big))
    async with Server(settings, store) as s:
        url = "/api/v1/rules/import?format=csv"
        async with s.client.post(url, data=big.encode(), headers=AUTH) as resp:
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["imported"] == 100
        async with s.client.post(url, data=(big + "x").encode(), headers=AUTH) as resp:
            assert resp.status == 413
            assert "split the file" in (await resp.json())["error"]
    assert len(await store.all_rules()) == 100


async def test_an_import_with_a_byte_order_mark_is_read(server: Server, store: Store) -> None:
    body = "\ufeffvalue,reason\n+8613812341234,from a spreadsheet\n".encode()
    async with server.client.post(
        "/api/v1/rules/import?format=csv", data=body, headers=AUTH
    ) as resp:
        assert resp.status == 201, await resp.text()
    assert [r.reason for r in await store.all_rules()] == ["from a spreadsheet"]
