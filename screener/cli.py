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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from screener import __version__
from screener.admin import NotFound, RuleAdmin, RuleFilter, check_actor
from screener.billing import (
    Proposal,
    match_calls,
    parse_carrier_csv,
    parse_time,
    proposals_to_rules_csv,
    propose,
    render_csv,
    render_json,
    render_table,
    rule_reason,
    summarise,
)
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
        ("agi", f"{s.agi.host}:{s.agi.port}"),
        (
            "screening",
            f"{'on' if s.screening.enabled else 'off'}, budget {s.screening.budget_ms} ms, "
            f"default treatment {s.screening.default_treatment}",
        ),
        (
            "auto blocks",
            f"quorum {s.screening.quorum} agents in {s.screening.quorum_window_hours:g} h"
            if s.screening.auto_block
            else "off",
        ),
        ("redis", "sentinel " + ",".join(s.redis.sentinels) if s.redis.sentinels else "direct"),
        ("node", s.ami.node or "-"),
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
        store = Store.from_settings(s.redis)
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
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First day (default: 6 days ago).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day (default: today).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option("--png", type=click.Path(path_type=Path, dir_okay=False), help="Heatmap image.")
@click.option("--top", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--anonymous-limit", type=click.IntRange(1, 1_000_000), default=1000)
@click.option("--unmasked", is_flag=True, help="Full numbers (for investigations).")
def report(
    config_path: Path | None,
    since: datetime | None,
    until: datetime | None,
    fmt: str,
    png: Path | None,
    top: int,
    anonymous_limit: int,
    unmasked: bool,
) -> None:
    """The managers' report over a period: frequency by day and hour (heatmap), top sources,
    prefix clusters, repeat offenders, hotlines, anonymous flagged calls."""
    from screener import report as render
    from screener.statistics import gather_report
    from screener.store import Store

    s = _settings(config_path)
    zone = s.numbers.zone
    last = until.date() if until else datetime.now(zone).date()
    first = since.date() if since else last - timedelta(days=6)

    async def fetch() -> render.Report:
        store = Store.from_settings(s.redis)
        try:
            return await gather_report(
                store,
                first=first,
                last=last,
                zone=zone,
                top=top,
                anonymous_limit=anonymous_limit,
                masked=not unmasked,
            )
        finally:
            await store.aclose()

    try:
        built = _run(fetch())
    except ValueError as e:
        click.echo(f"screener: {e}", err=True)
        sys.exit(2)
    renderers = {"table": render.render_text, "csv": render.render_csv, "json": render.render_json}
    click.echo(renderers[fmt](built), nl=False)
    if png is not None:
        from screener.charts import heatmap_png

        title = (
            f"screener: flags by day and hour, {built.since} .. {built.until} ({built.timezone})"
        )
        try:
            heatmap_png(built.heatmap, title, png)
        except OSError as e:
            click.echo(f"screener: cannot write {png}: {e.strerror}", err=True)
            sys.exit(1)
        click.echo(f"heatmap written to {png}", err=True)


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
        store = Store.from_settings(settings.redis)
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


# --- carrier bills ------------------------------------------------------------------------------

MAX_BILL_BYTES = 1 << 30  # 1 GiB: about 15 million lines; the parser stops at 5 million calls


def _bill_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        click.echo(f"screener: unknown time zone {name[:40]!r}", err=True)
        sys.exit(2)


def _bill_time(text: str, zone: ZoneInfo, what: str) -> datetime:
    """An ISO date (midnight) or any time :func:`screener.billing.parse_time` reads."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return parse_time(text, zone)
        except ValueError as e:
            click.echo(f"screener: {what}: {e}", err=True)
            sys.exit(2)
    return at if at.tzinfo else at.replace(tzinfo=zone)


def _read_bill(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is dropped) or, failing that, GB18030 (GBK)."""
    try:
        if path.stat().st_size > MAX_BILL_BYTES:
            click.echo(
                f"screener: {path} is larger than {MAX_BILL_BYTES} bytes: split it", err=True
            )
            sys.exit(2)
        data = path.read_bytes()
    except OSError as e:
        click.echo(f"screener: cannot read {path}: {e}", err=True)
        sys.exit(2)
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    click.echo(f"screener: cannot read {path}: not UTF-8 or GB18030 text", err=True)
    sys.exit(2)


def _anonymous_flags(settings: Settings, since: datetime, until: datetime) -> list[Flag]:
    from screener.store import Store

    async def fetch() -> list[Flag]:
        store = Store.from_settings(settings.redis)
        try:
            return await store.flags_between(since.timestamp(), until.timestamp(), anonymous=True)
        finally:
            await store.aclose()

    return _run(fetch())


def _confirm_and_block(
    settings: Settings, proposals: list[Proposal], prefix: str, actor: str
) -> None:
    """Ask about each proposal (default no); add block rules for the confirmed ones only."""
    chosen = [
        p
        for rank, p in enumerate(proposals, 1)
        if click.confirm(
            f"{rank}. block {p.number}? on the bill at {p.flags} flagged withheld call(s); "
            f"{p.unflagged} other call(s)",
            default=False,
            err=True,
        )
    ]
    if not chosen:
        click.echo("nothing blocked", err=True)
        return

    async def job(admin: RuleAdmin) -> None:
        for p in chosen:  # say each rule as it is added: a later one may fail
            fields: dict[str, object] = {
                "value": p.number,
                "match": "number",
                "list": "block",
                "reason": rule_reason(p, prefix),
            }
            rule = await admin.add(fields, actor)
            click.echo(f"added {describe(rule)}", err=True)

    _admin_run(settings, job)


@main.group()
def bills() -> None:
    """Carrier bills: find the numbers of withheld callers from the times of flagged calls."""


@bills.command("match")
@CONFIG_OPTION
@click.argument("carrier_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--since", help="ISO date or date-time (default: the bill's first call).")
@click.option("--until", help="ISO date or date-time, excluded (default: after the last call).")
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 3600),
    default=120.0,
    show_default=True,
    help="Seconds between a flag and its call on the bill (clock skew; without durations on "
    "the bill, also the queue wait and talk before the flag).",
)
@click.option(
    "--min-flags",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Propose only numbers credited with at least this many flags.",
)
@click.option(
    "--zone",
    "zone_name",
    help="IANA zone of times without an offset in the bill and in --since/--until (default: "
    "numbers.timezone).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option(
    "--proposals-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write block rules for the proposals, for review and `screener rules import`.",
)
@click.option("--apply", is_flag=True, help="Ask about each proposal; block the confirmed ones.")
@BY_OPTION
def bills_match(
    config_path: Path | None,
    carrier_file: Path,
    since: str | None,
    until: str | None,
    tolerance: float,
    min_flags: int,
    zone_name: str | None,
    fmt: str,
    proposals_out: Path | None,
    apply: bool,
    actor: str,
) -> None:
    """Match the withheld and unavailable flags of a period with CARRIER_FILE, the carrier's
    call records (CSV), and propose the numbers that made them. Nothing is blocked unless you
    confirm it (--apply) or import the --proposals-out file. A bad line in the file: exit 2,
    every bad line reported, nothing matched."""
    s = _settings(config_path)
    zone = _bill_zone(zone_name or s.numbers.timezone)
    region = s.numbers.default_region
    if apply:
        try:
            check_actor(actor)
        except ValueError as e:
            click.echo(f"screener: {e}", err=True)
            sys.exit(2)
    text = _read_bill(carrier_file)
    try:
        calls = parse_carrier_csv(text, zone=zone, region=region)
    except ImportFormatError as e:
        count = len(e.problems)
        click.echo(f"screener: {count} bad line(s) in {carrier_file}, nothing matched:", err=True)
        for line, message in e.problems:
            click.echo(f"  line {line}: {message}", err=True)
        sys.exit(2)
    slack = timedelta(seconds=tolerance)
    start = _bill_time(since, zone, "--since") if since else min(c.at for c in calls) - slack
    end = (
        _bill_time(until, zone, "--until")
        if until
        else max(c.end for c in calls) + slack + timedelta(seconds=1)
    )
    if start >= end:
        click.echo("screener: --since must be before --until", err=True)
        sys.exit(2)
    flags_found = _anonymous_flags(s, start, end)
    period = (start, end)
    matches = match_calls(flags_found, calls, tolerance=tolerance, region=region)
    proposals = propose(matches, calls, min_flags=min_flags, period=period)
    if fmt == "json":
        summary = summarise(matches, calls, tolerance=tolerance, period=period)
        click.echo(render_json(summary, proposals, zone=zone), nl=False)
    elif fmt == "csv":
        click.echo(render_csv(proposals, zone=zone), nl=False)
    else:
        summary = summarise(matches, calls, tolerance=tolerance, period=period)
        click.echo(render_table(summary, proposals, zone=zone), nl=False)
    local = (start.astimezone(zone), end.astimezone(zone))
    prefix = f"carrier bill {local[0]:%Y-%m-%d}..{local[1]:%Y-%m-%d}"
    if proposals_out is not None:
        try:
            proposals_out.write_text(proposals_to_rules_csv(proposals, prefix), encoding="utf-8")
        except OSError as e:
            click.echo(f"screener: cannot write {proposals_out}: {e}", err=True)
            sys.exit(1)
        click.echo(
            f"wrote {len(proposals)} proposal(s) to {proposals_out}: review it, then "
            f"`screener rules import {proposals_out}`",
            err=True,
        )
    if apply and proposals:
        _confirm_and_block(s, proposals, prefix, actor)
