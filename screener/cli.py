"""The ``screener`` command line: the only module that reads argv and configures logging.

Exit codes: 0 success, 1 the operation failed (Redis or the daemon unreachable...), 2 bad
configuration or usage (one line, no traceback).
"""

from __future__ import annotations

import asyncio
import json
import logging.config
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from screener import __version__
from screener.admin import NotFound, RuleAdmin, RuleFilter
from screener.config import Settings, load
from screener.errors import AmiError, ConfigError, ImportFormatError, ScreenerError, StoreError
from screener.logs import log_config
from screener.model import Flag
from screener.rules import ACTOR, Match, Origin, Rule, RuleList, Treatment, check_ids, describe
from screener.service import printable

T = TypeVar("T")

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="SCREENER_CONFIG",
    help="TOML settings file (env: SCREENER_CONFIG).",
)


def _settings(config_path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load(config_path, overrides)
    except ConfigError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(2)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (StoreError, AmiError) as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(1)


def _configure_logging(settings: Settings, level: str | None = None) -> None:
    logging.config.dictConfig(log_config(level or settings.log.level, settings.log.format))


@click.group()
@click.version_option(__version__, prog_name="screener")
def main() -> None:
    """screener: harassment screening for Asterisk call centres."""


@main.command()
@CONFIG_OPTION
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def run(config_path: Path | None, log_level: str | None) -> None:
    """Run the daemon (AMI flag handling, HTTP API, metrics)."""
    from screener.daemon import serve

    settings = _settings(config_path)
    _configure_logging(settings, log_level)
    try:
        _run(serve(settings))
    except OSError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(1)


@main.command()
@CONFIG_OPTION
def check(config_path: Path | None) -> None:
    """Validate the configuration and print a summary (secrets hidden)."""
    s = _settings(config_path)
    for name, value in (
        ("ami", f"{s.ami.username}@{s.ami.host}:{s.ami.port}"),
        ("redis prefix", s.redis.prefix),
        ("flag key", s.flag.key),
        ("dtmf detection", "on" if s.flag.detect_dtmf else "off"),
        ("analysis context", s.flag.analysis_context),
        ("spool", str(s.flag.spool_dir)),
        ("region / time zone", f"{s.numbers.default_region} / {s.numbers.timezone}"),
        ("http", f"{s.http.host}:{s.http.port}"),
        ("hotlines", ", ".join(f"{k}={v}" for k, v in s.hotlines.items()) or "-"),
    ):
        click.echo(f"{name:20} {value}")
    click.echo("configuration ok")


def _flag_row(f: Flag) -> list[str]:
    return [
        f.at.strftime("%Y-%m-%d %H:%M:%S"),
        f.caller.masked,
        f.caller.presentation,
        f.called or "-",
        f.hotline,
        f.queue or "-",
        f.agent,
        f.source,
    ]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


@main.command()
@CONFIG_OPTION
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one flag per line, raw IDs.")
@click.option("--unmasked", is_flag=True, help="Show full numbers in the table.")
def flags(config_path: Path | None, limit: int, as_json: bool, unmasked: bool) -> None:
    """List recent flags, newest first."""
    from screener.store import Store

    s = _settings(config_path)

    async def fetch() -> list[Flag]:
        store = Store.from_url(
            s.redis.url.get_secret_value(), prefix=s.redis.prefix, timeout=s.redis.timeout
        )
        try:
            return await store.recent_flags(limit)
        finally:
            await store.aclose()

    found = _run(fetch())
    if as_json:
        for f in found:
            click.echo(f.to_json())
        return
    if not found:
        click.echo("no flags recorded")
        return
    rows = [_flag_row(f) for f in found]
    if unmasked:
        for row, f in zip(rows, found, strict=True):
            row[1] = f.caller.info.e164 or printable(f.caller.raw, 24)
    headers = ["time", "caller", "presentation", "called", "hotline", "queue", "agent", "source"]
    click.echo(_table(headers, rows))


@main.command()
@CONFIG_OPTION
@click.argument("agent")
def flag(config_path: Path | None, agent: str) -> None:
    """Flag the call AGENT is on (channel or interface, e.g. PJSIP/agent1), via the daemon."""
    import aiohttp

    s = _settings(config_path)
    token = s.http.resolved_token()
    if token is None:
        click.echo(
            "screener: http.token (or http.token_file) is needed to call the daemon", err=True
        )
        sys.exit(2)
    host = "127.0.0.1" if s.http.host in {"0.0.0.0", "::"} else s.http.host
    url = f"http://{host}:{s.http.port}/api/v1/flags"

    async def post() -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, json={"agent": agent}, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    try:
        status, body = asyncio.run(post())
    except (aiohttp.ClientError, TimeoutError) as e:
        click.echo(f"screener: daemon not reachable at {url}: {e}", err=True)
        sys.exit(1)
    click.echo(json.dumps(body, ensure_ascii=True))
    sys.exit(0 if status in (200, 201) else 1)


@main.group()
def prompts() -> None:
    """Audio prompts for the analysis queue."""


@prompts.command("build")
@click.option("--sources", type=click.Path(path_type=Path), default=Path("prompts"))
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    default=Path("/usr/share/asterisk"),
    show_default=True,
    help="Asterisk's data directory (sounds/ and moh/ are written below it).",
)
@click.option("--lang", "languages", multiple=True, help="Only these languages (default: all).")
def prompts_build(sources: Path, out_dir: Path, languages: tuple[str, ...]) -> None:
    """Synthesise, normalise and convert the prompts and the signal tone."""
    from screener.prompts import prompts_build_command

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        code = prompts_build_command(sources, out_dir, languages)
    except ScreenerError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(2)
    sys.exit(code)


# --- blocklist and allowlist administration --------------------------------------------------


def _default_actor() -> str:
    import getpass

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "cli"
    return name if ACTOR.fullmatch(name) else "cli"


BY_OPTION = click.option(
    "--by", "actor", default=_default_actor, show_default="your login name", help="Who acts."
)


def _admin_run(settings: Settings, job: Callable[[RuleAdmin], Coroutine[Any, Any, T]]) -> T:
    """Run ``job`` with a RuleAdmin on a fresh Redis connection; bad input exits 2."""
    from screener.store import Store

    async def go() -> T:
        store = Store.from_url(
            settings.redis.url.get_secret_value(),
            prefix=settings.redis.prefix,
            timeout=settings.redis.timeout,
        )
        try:
            return await job(RuleAdmin(settings, store))
        finally:
            await store.aclose()

    try:
        return _run(go())
    except ImportFormatError as e:
        click.echo(f"screener: {len(e.problems)} bad line(s), nothing imported:", err=True)
        for line, message in e.problems:
            click.echo(f"  line {line}: {message}", err=True)
        sys.exit(2)
    except NotFound as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(1)
    except ValueError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(2)


def _when(ts: float | None) -> str:
    from datetime import datetime

    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _rule_row(rule: Rule) -> list[str]:
    what = str(rule.action) + (f"/{rule.treatment}" if rule.treatment else "")
    return [
        rule.id,
        str(rule.list),
        str(rule.match),
        rule.value,
        what,
        ",".join(rule.hotlines) or "all",
        ";".join(str(w) for w in rule.windows) or "always",
        _when(rule.expires_at),
        str(rule.mode),
        str(rule.origin),
        rule.created_by,
        rule.reason[:60],
    ]


_RULE_HEADERS = [
    "id", "list", "match", "value", "action", "hotlines", "windows", "expires", "mode",
    "origin", "by", "reason",
]  # fmt: skip


@main.group()
def rules() -> None:
    """Blocklist and allowlist: add, remove, list, show, import, export, audit."""


@rules.command("add")
@CONFIG_OPTION
@click.argument("value")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.option("--allow", "allow", is_flag=True, help="An allowlist entry (always wins).")
@click.option("--match", type=click.Choice([str(m) for m in Match]), help="Default: inferred.")
@click.option("--action", type=click.Choice(["block", "challenge", "analysis"]))
@click.option("--treatment", type=click.Choice([str(t) for t in Treatment]))
@click.option("--hotline", "hotlines", multiple=True, help="Only on this hotline (repeatable).")
@click.option("--window", "windows", multiple=True, help="'mon-fri 22:00-06:00' or 'learned'.")
@click.option("--expires", help="A duration (7d, 12h) or an ISO date/time.")
@click.option("--shadow", is_flag=True, help="Count and log what it would do; don't enforce.")
@BY_OPTION
def rules_add(
    config_path: Path | None,
    value: str,
    reason: str,
    allow: bool,
    match: str | None,
    action: str | None,
    treatment: str | None,
    hotlines: tuple[str, ...],
    windows: tuple[str, ...],
    expires: str | None,
    shadow: bool,
    actor: str,
) -> None:
    """Add a rule for VALUE: a number, a prefix ending in * (+86105*), a range LOW..HIGH, or
    anonymous / withheld / unavailable."""
    s = _settings(config_path)
    fields: dict[str, object] = {
        "value": value,
        "reason": reason,
        "list": "allow" if allow else "block",
        "match": match,
        "action": action,
        "treatment": treatment,
        "hotlines": list(hotlines),
        "windows": list(windows),
        "expires": expires,
        "mode": "shadow" if shadow else "enforce",
    }
    rule = _admin_run(s, lambda admin: admin.add(fields, actor))
    click.echo(f"added {describe(rule)}")


@rules.command("remove")
@CONFIG_OPTION
@click.argument("rule_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@BY_OPTION
def rules_remove(
    config_path: Path | None, rule_ids: tuple[str, ...], reason: str, actor: str
) -> None:
    """Remove rules by id (see `screener rules list`)."""
    s = _settings(config_path)
    try:
        ids = check_ids(rule_ids)
    except ValueError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(2)

    async def job(admin: RuleAdmin) -> None:
        for rule_id in ids:  # say each removal as it is done: a later id may fail
            click.echo(f"removed {describe(await admin.remove(rule_id, actor, reason))}")

    _admin_run(s, job)


def _filter(
    list_name: str | None, origin: str | None, value: str | None, expired: bool
) -> RuleFilter:
    return RuleFilter(
        list=RuleList(list_name) if list_name else None,
        origin=Origin(origin) if origin else None,
        value=value or "",
        include_expired=expired,
    )


FILTER_OPTIONS = [
    click.option("--list", "list_name", type=click.Choice(["block", "allow"])),
    click.option("--origin", type=click.Choice([str(o) for o in Origin])),
    click.option("--value", help="Only rules for exactly this number, prefix or range."),
    click.option("--expired", is_flag=True, help="Include expired rules not yet swept."),
]


def _filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(FILTER_OPTIONS):
        f = option(f)
    return f


@rules.command("list")
@CONFIG_OPTION
@_filter_options
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
def rules_list(
    config_path: Path | None,
    list_name: str | None,
    origin: str | None,
    value: str | None,
    expired: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List rules, oldest first."""
    s = _settings(config_path)
    which = _filter(list_name, origin, value, expired)
    found = _admin_run(s, lambda admin: admin.find(which, limit))
    if as_json:
        for rule in found:
            click.echo(rule.to_json())
    elif not found:
        click.echo("no rules")
    else:
        click.echo(_table(_RULE_HEADERS, [_rule_row(r) for r in found]))


@rules.command("show")
@CONFIG_OPTION
@click.argument("rule_id")
def rules_show(config_path: Path | None, rule_id: str) -> None:
    """One rule and its history (JSON)."""
    s = _settings(config_path)
    try:
        (checked,) = check_ids([rule_id])
    except ValueError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(2)
    rule, history = _admin_run(s, lambda admin: admin.show(checked))
    body = {"rule": rule.to_dict(), "history": [h.to_dict() for h in history]}
    click.echo(json.dumps(body, indent=2, ensure_ascii=True))


@rules.command("import")
@CONFIG_OPTION
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), help="Default: by suffix.")
@BY_OPTION
def rules_import(config_path: Path | None, file: Path, fmt: str | None, actor: str) -> None:
    """Import rules from CSV or JSON: every line is checked first; one bad line and nothing is
    imported (each bad line is reported)."""
    s = _settings(config_path)
    chosen = fmt or ("json" if file.suffix.lower() in (".json", ".jsonl", ".ndjson") else "csv")
    try:
        text = file.read_text(encoding="utf-8-sig")  # spreadsheets may write a BOM
    except (OSError, UnicodeDecodeError) as e:
        click.echo(f"screener: cannot read {file}: {e}", err=True)
        sys.exit(2)
    ids = _admin_run(s, lambda admin: admin.import_rules(text, chosen, actor))
    click.echo(f"imported {len(ids)} rule(s): {ids[0]}..{ids[-1]}")


@rules.command("export")
@CONFIG_OPTION
@_filter_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Default: stdout."
)
def rules_export(
    config_path: Path | None,
    list_name: str | None,
    origin: str | None,
    value: str | None,
    expired: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Export rules as CSV (safe to open in a spreadsheet) or JSON lines."""
    s = _settings(config_path)
    which = _filter(list_name, origin, value, expired)
    text = _admin_run(s, lambda admin: admin.export(fmt, which))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@rules.command("audit")
@CONFIG_OPTION
@click.option("--rule", "rule_id", help="Only this rule's history.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
def rules_audit(config_path: Path | None, rule_id: str | None, limit: int, as_json: bool) -> None:
    """The audit trail of rule changes, newest first."""
    s = _settings(config_path)
    if rule_id is not None:
        try:
            check_ids([rule_id])
        except ValueError as e:
            click.echo(f"screener: {e}", err=True)
            sys.exit(2)
    entries = _admin_run(s, lambda admin: admin.audit(limit, rule_id))
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.to_dict(), ensure_ascii=True))
        return
    rows = [[_when(e.at), e.by, e.action, e.rule, e.why[:80]] for e in entries]
    click.echo(_table(["time", "by", "action", "rule", "why"], rows) if rows else "no changes")
