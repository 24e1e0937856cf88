"""Tests for screener.http_api: a real aiohttp server on port 0, driven by a real client."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from screener.config import Settings, load
from screener.errors import AmiError
from screener.http_api import HttpApi
from screener.metrics import Metrics
from screener.model import Flag
from screener.service import FlagService
from screener.spool import Spool
from screener.store import Store
from tests.factories import make_flag
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
