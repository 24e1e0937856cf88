"""The HTTP edge: admin API, ``/metrics`` and ``/healthz`` (the only module importing aiohttp).

Endpoints (all under ``/api/v1``): ``POST/GET flags``; ``GET/POST rules``,
``GET/DELETE rules/{id}`` (DELETE takes ``?reason=...&by=...``),
``POST rules/import?format=csv|json`` (the body is the file; any bad line -> 422 with every bad
line named, nothing applied),
``GET rules/export?format=csv|json``, ``GET audit``. The audit trail is read-only here.

Admin endpoints require ``Authorization: Bearer <token>`` (compared in constant time) and are
disabled, with a 503 that says why, when no token is configured. The server binds to localhost
unless told otherwise. JSON bodies need ``Content-Type: application/json`` (else 415). Every
error is a JSON ``{"error": ...}`` with a 4xx status for what the client sent (aiohttp's own
413, 404 and 405 included). Every request is its own error boundary: an unexpected error is
logged, counted and answered with a 500 that reveals nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from screener.admin import NotFound, RuleAdmin, RuleFilter
from screener.config import HttpSettings
from screener.errors import AmiError, ImportFormatError, StoreError
from screener.metrics import Metrics
from screener.rules import Origin, RuleList, check_ids
from screener.service import FlagService
from screener.store import Store

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _http_error(e: web.HTTPException) -> web.Response:
    """aiohttp's own error (413 body too large, 404, 405...) as a JSON error, headers kept."""
    text = e.text or ""
    message = e.reason if not text or text.startswith(f"{e.status}:") else text
    response = _error(e.status, message)
    if "Allow" in e.headers:
        response.headers["Allow"] = e.headers["Allow"]
    return response


async def _json_body(request: web.Request, usage: str) -> tuple[Any, web.Response | None]:
    """The request's JSON body, or the 4xx response that says what is wrong with it (``usage``
    and why).

    Raises:
        web.HTTPRequestEntityTooLarge: the body is over ``client_max_size``.
    """
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        return None, _error(415, f"send Content-Type: application/json, not {ctype[:60]!r}")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        reason = "not UTF-8"
    except RecursionError:
        reason = "nested too deeply"
    except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "a number is too long"
    return None, _error(400, f"{usage} ({reason})")


class HttpApi:
    """The aiohttp application and its runner."""

    def __init__(
        self,
        settings: HttpSettings,
        metrics: Metrics,
        service: FlagService,
        store: Store,
        health: Callable[[], dict[str, Any]],
        admin: RuleAdmin,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.service = service
        self.store = store
        self.health = health
        self.admin = admin
        secret = settings.resolved_token()
        self._token = secret.get_secret_value().encode() if secret else None
        self.app = web.Application(
            client_max_size=settings.max_body_bytes,
            middlewares=[self._boundary, self._auth],
        )
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/metrics", self.metrics_page)
        self.app.router.add_post("/api/v1/flags", self.post_flag)
        self.app.router.add_get("/api/v1/flags", self.get_flags)
        self.app.router.add_get("/api/v1/rules", self.get_rules)
        self.app.router.add_post("/api/v1/rules", self.post_rule)
        self.app.router.add_post("/api/v1/rules/import", self.import_rules)
        self.app.router.add_get("/api/v1/rules/export", self.export_rules)
        self.app.router.add_get("/api/v1/rules/{rule_id}", self.get_rule)
        self.app.router.add_delete("/api/v1/rules/{rule_id}", self.delete_rule)
        self.app.router.add_get("/api/v1/audit", self.get_audit)
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    @web.middleware
    async def _boundary(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _http_error(e)
        except StoreError as e:
            self.metrics.errors.labels(component="redis").inc()
            return _error(503, f"redis unavailable: {e}")
        except Exception:
            self.metrics.errors.labels(component="http").inc()
            logger.exception("http request failed path=%s", request.path)
            return _error(500, "internal error (see the screener log)")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if self._token is None:
            return _error(503, "admin API disabled: set http.token or http.token_file")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.encode("utf-8", "surrogateescape"), self._token
        ):
            return _error(401, "missing or wrong bearer token")
        return await handler(request)

    async def start(self) -> None:
        """Bind and serve (port 0 picks a free port, then ``self.port`` tells which)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        if self._runner.addresses:
            self.port = int(self._runner.addresses[0][1])
        logger.info("http listening host=%s port=%d", self.settings.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ----------------------------------------------------------------------------
    async def healthz(self, _request: web.Request) -> web.Response:
        state = self.health()
        return web.json_response(state, status=200 if state.get("ok") else 503)

    async def metrics_page(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def post_flag(self, request: web.Request) -> web.Response:
        body, problem = await _json_body(request, 'body must be JSON: {"agent": "PJSIP/agent1"}')
        if problem is not None:
            return problem
        agent = body.get("agent") if isinstance(body, dict) else None
        if not isinstance(agent, str) or not agent:
            return _error(400, "field 'agent' (a channel or interface name) is required")
        try:
            result = await self.service.flag_agent(agent)
        except ValueError as e:
            return _error(400, str(e))
        except AmiError as e:
            return _error(503, f"asterisk unavailable: {e}")
        status = {"recorded": 201, "duplicate": 200}.get(result.outcome, 409)
        return web.json_response(
            {
                "outcome": str(result.outcome),
                "reason": result.reason,
                "flag": result.flag.to_dict() if result.flag else None,
            },
            status=status,
        )

    async def get_flags(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return _error(400, "limit must be an integer")
        if not 1 <= limit <= 1000:
            return _error(400, "limit must be between 1 and 1000")
        try:
            flags = await self.store.recent_flags(limit)
        except StoreError as e:
            return _error(503, f"redis unavailable: {e}")
        return web.json_response({"flags": [f.to_dict() for f in flags]})

    # -- rules -------------------------------------------------------------------------------
    @staticmethod
    def _actor(request: web.Request, body: dict[str, Any] | None = None) -> str:
        by = (body or {}).get("by") or request.query.get("by") or "api"
        return str(by)

    @staticmethod
    def _filter(request: web.Request) -> RuleFilter:
        q = request.query
        return RuleFilter(
            list=RuleList(q["list"]) if q.get("list") else None,
            origin=Origin(q["origin"]) if q.get("origin") else None,
            value=q.get("value", ""),
            include_expired=q.get("expired") in ("1", "true", "yes"),
        )

    async def get_rules(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "1000"))
            if not 1 <= limit <= 100_000:
                raise ValueError("limit must be between 1 and 100000")
            rules = await self.admin.find(self._filter(request), limit)
        except ValueError as e:
            return _error(400, str(e))
        return web.json_response({"rules": [r.to_dict() for r in rules]})

    async def post_rule(self, request: web.Request) -> web.Response:
        body, problem = await _json_body(
            request, 'body must be a JSON object: {"value": "+86...", "reason": "..."}'
        )
        if problem is not None:
            return problem
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        actor = self._actor(request, body)
        fields = {k: v for k, v in body.items() if k != "by"}
        try:
            rule = await self.admin.add(fields, actor)
        except ValueError as e:
            return _error(400, str(e))
        return web.json_response({"rule": rule.to_dict()}, status=201)

    async def get_rule(self, request: web.Request) -> web.Response:
        try:
            (rule_id,) = check_ids([request.match_info["rule_id"]])
            rule, history = await self.admin.show(rule_id)
        except ValueError as e:
            return _error(400, str(e))
        except NotFound as e:
            return _error(404, str(e))
        return web.json_response(
            {"rule": rule.to_dict(), "history": [h.to_dict() for h in history]}
        )

    async def delete_rule(self, request: web.Request) -> web.Response:
        try:
            (rule_id,) = check_ids([request.match_info["rule_id"]])
            rule = await self.admin.remove(
                rule_id, self._actor(request), request.query.get("reason", "")
            )
        except ValueError as e:
            return _error(400, str(e))
        except NotFound as e:
            return _error(404, str(e))
        return web.json_response({"removed": rule.to_dict()})

    async def import_rules(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "csv")
        limit = self.settings.max_import_bytes
        body = bytearray()
        async for chunk in request.content.iter_chunked(65536):  # its own limit, not the API's
            body += chunk
            if len(body) > limit:
                return _error(413, f"import larger than {limit} bytes: split the file")
        try:
            text = body.decode("utf-8-sig")  # spreadsheets may write a BOM
        except UnicodeDecodeError:
            return _error(400, "the file must be UTF-8 text")
        try:
            ids = await self.admin.import_rules(text, fmt, self._actor(request))
        except ImportFormatError as e:
            problems = [{"line": n, "message": m} for n, m in e.problems]
            return web.json_response(
                {"error": "nothing imported", "problems": problems}, status=422
            )
        except ValueError as e:
            return _error(400, str(e))
        return web.json_response({"imported": len(ids), "ids": ids}, status=201)

    async def export_rules(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "csv")
        try:
            text = await self.admin.export(fmt, self._filter(request))
        except ValueError as e:
            return _error(400, str(e))
        content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return web.Response(text=text, content_type=content_type)

    async def get_audit(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
            if not 1 <= limit <= 10_000:
                raise ValueError("limit must be between 1 and 10000")
            rule = request.query.get("rule")
            if rule is not None:
                check_ids([rule])
        except ValueError as e:
            return _error(400, str(e))
        entries = await self.admin.audit(limit, rule)
        return web.json_response({"audit": [e.to_dict() for e in entries]})
