"""The ``screener`` command line: the only module that reads argv and configures logging.

Exit codes: 0 success, 1 the operation failed (Redis or the daemon unreachable...), 2 bad
configuration or usage (one line, no traceback).
"""

from __future__ import annotations

import asyncio
import json
import logging.config
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from screener import __version__
from screener.config import Settings, load
from screener.errors import AmiError, ConfigError, ScreenerError, StoreError
from screener.logs import log_config
from screener.model import Flag
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
