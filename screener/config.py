"""Settings: one frozen tree, loaded once by the CLI and passed down explicitly.

Precedence, lowest first: defaults < the ``--config`` TOML file < ``SCREENER_<SECTION>__<KEY>``
environment variables < CLI flags. :func:`load` validates everything at once and raises a single
:class:`~screener.errors.ConfigError` that lists every problem. This is the only module that reads
``os.environ``.

Example ``screener.toml``::

    [ami]
    host = "127.0.0.1"
    username = "screener"
    secret_file = "/etc/screener/ami-secret"

    [hotlines]
    "4008001234" = "service"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from screener.errors import ConfigError
from screener.number import is_dialable
from screener.rules import Treatment

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DTMF = re.compile(r"[0-9*#A-D]{1,6}")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _read_secret(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    if path is None:
        return value
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"cannot read {what} file {path}: {e.strerror}") from None
    if not text:
        raise ValueError(f"{what} file {path} is empty")
    return SecretStr(text)


class AmiSettings(_Section):
    """The Asterisk Manager Interface connection."""

    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "screener"
    secret: SecretStr | None = None
    secret_file: Path | None = None
    action_timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for any reply")
    ping_interval: float = Field(3.0, gt=0, le=60, description="watchdog ping period")
    watchdog_timeout: float = Field(
        10.0, gt=0, le=120, description="declare Asterisk dead after this long without an answer"
    )
    reconnect_delay: float = Field(1.0, gt=0, le=60)
    startup_retries: int = Field(5, ge=0, le=1000)
    node: str = Field(
        "",
        description="a name for this Asterisk when several feed one Redis: flag ids become "
        "<node>-<Uniqueid>, so two PBXs' Uniqueids never collide",
    )

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", v):
            raise ValueError("node: 1-32 of A-Z a-z 0-9 _")
        return v

    def resolved_secret(self) -> SecretStr | None:
        return _read_secret(self.secret, self.secret_file, "AMI secret")

    @field_validator("secret_file")
    @classmethod
    def _secret_file_readable(cls, v: Path | None) -> Path | None:
        _read_secret(None, v, "AMI secret")
        return v


class RedisSettings(_Section):
    """Where learned data lives."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    sentinels: tuple[str, ...] = Field(
        (),
        description="Redis Sentinel addresses (host:port); when set, the master named "
        "master_name is found through them and url gives only the password and database",
    )
    master_name: str = "screener"
    wait_replicas: int = Field(
        0,
        ge=0,
        le=10,
        description="a flag leaves the local spool only once this many replicas have it "
        "(Redis WAIT): with Sentinel, 1, so a failover never loses a confirmed flag",
    )
    prefix: str = "screener"
    timeout: float = Field(1.0, gt=0, le=30, description="seconds per Redis operation")
    startup_retries: int = Field(5, ge=0, le=1000)

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for address in v:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"sentinel {address!r}: expected host:port")
        return v

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in self.sentinels]

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("prefix must be 1-64 of A-Z a-z 0-9 _ -")
        return v


class FlagSettings(_Section):
    """The flag key and what a flag does."""

    key: str = Field("*9", description="the in-call key sequence (features.conf must match)")
    detect_dtmf: bool = Field(False, description="also detect the key from DTMFEnd events")
    dtmf_channels: tuple[str, ...] = Field(
        ("PJSIP/*",), description="fnmatch patterns of agent channels for DTMF detection"
    )
    dtmf_timeout: float = Field(1.5, gt=0, le=10)
    require_inbound_marker: bool = Field(
        True,
        description="only flag calls marked by the screener-inbound Gosub (false for PBXs "
        "whose dialplan cannot be changed: caller ID is then read from CALLERID())",
    )
    analysis_context: str = "screener-analysis"
    wrapup_context: str = "screener-wrapup"
    retention_days: int = Field(400, ge=1, le=3650)
    spool_dir: Path = Path("/var/lib/screener/spool")

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _DTMF.fullmatch(v):
            raise ValueError("key must be 1-6 DTMF digits (0-9 * # A-D)")
        return v

    @field_validator("analysis_context", "wrapup_context")
    @classmethod
    def _context(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("context names are 1-64 of A-Z a-z 0-9 _ -")
        return v


class NumberSettings(_Section):
    """How numbers and times are read."""

    default_region: str = Field("CN", description="ISO 3166 region for national numbers")
    timezone: str = Field("UTC", description="IANA zone for hour-of-day and weekday patterns")

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {v!r}")
        return v.upper()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class HttpSettings(_Section):
    """The admin API and ``/metrics``."""

    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_import_bytes: int = Field(
        256 * 1_048_576, ge=1024, description="largest rules import file accepted over HTTP"
    )

    def resolved_token(self) -> SecretStr | None:
        return _read_secret(self.token, self.token_file, "API token")

    @field_validator("token_file")
    @classmethod
    def _token_file_readable(cls, v: Path | None) -> Path | None:
        _read_secret(None, v, "API token")
        return v


class AgiSettings(_Section):
    """The FastAGI server the dialplan calls on entry."""

    host: str = "127.0.0.1"
    port: int = Field(4573, ge=0, le=65535)
    read_timeout: float = Field(5.0, gt=0, le=60, description="seconds to wait for Asterisk")
    max_connections: int = Field(500, ge=1, le=100_000)


class ScreeningSettings(_Section):
    """Screening on call entry, and automatic blocks from agents' flags."""

    enabled: bool = Field(True, description="false: every call is allowed (and counted)")
    budget_ms: int = Field(
        200, ge=10, le=5000, description="fail open (allow) when Redis takes longer"
    )
    default_treatment: Treatment = Treatment.ANALYSIS
    treatments: dict[str, Treatment] = Field(
        default_factory=dict, description="hotline name -> treatment of its blocked callers"
    )
    challenge_digits: str = Field("123456789", description="a challenge asks for one of these")
    learn_interval: float = Field(60.0, gt=0, le=86400, description="seconds between relearning")
    learn_factor: float = Field(
        1.5, gt=0, le=24, description="a high-risk hour has this many times the hourly mean"
    )
    learn_min_flags: int = Field(5, ge=1, description="... and at least this many flags")
    auto_block: bool = True
    quorum: int = Field(3, ge=2, le=100, description="distinct agents whose flags block a caller")
    quorum_window_hours: float = Field(24.0, gt=0, le=24 * 90)
    auto_block_hours: tuple[float, ...] = Field(
        (1.0, 24.0, 168.0),
        description="escalating durations of automatic blocks (a permanent one needs an admin)",
    )
    sweep_interval: float = Field(60.0, gt=0, le=3600, description="expired-rule clean-up period")

    @field_validator("challenge_digits")
    @classmethod
    def _digits(cls, v: str) -> str:
        if not v or not set(v) <= set("0123456789") or len(set(v)) != len(v):
            raise ValueError("challenge_digits: distinct digits 0-9, at least one")
        return v

    @field_validator("auto_block_hours")
    @classmethod
    def _durations(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 < h <= 24 * 365 for h in v):
            raise ValueError("auto_block_hours: one or more durations, each 0-8760 hours")
        return v

    @property
    def budget(self) -> float:
        return self.budget_ms / 1000


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """Everything screener can be told. Frozen: build it once, pass it down."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="SCREENER_",
        env_nested_delimiter="__",
        case_sensitive=False,
    )
    _toml_file: ClassVar[Path | None] = None

    ami: AmiSettings = AmiSettings()
    redis: RedisSettings = RedisSettings()
    flag: FlagSettings = FlagSettings()
    numbers: NumberSettings = NumberSettings()
    http: HttpSettings = HttpSettings()
    agi: AgiSettings = AgiSettings()
    log: LogSettings = LogSettings()
    # hotlines before screening: screening's check reads them (pydantic validates in order)
    hotlines: dict[str, str] = Field(
        default_factory=dict, description="called number (DID) -> hotline name"
    )
    screening: ScreeningSettings = ScreeningSettings()
    shutdown_timeout: float = Field(5.0, gt=0, le=120)

    @field_validator("screening")
    @classmethod
    def _treatments_name_hotlines(
        cls, v: ScreeningSettings, info: ValidationInfo
    ) -> ScreeningSettings:
        hotlines = info.data.get("hotlines")
        if hotlines is None:  # invalid themselves: reported on their own
            return v
        unknown = set(v.treatments) - set(hotlines.values()) - {"other"}
        if unknown:
            raise ValueError(
                f"treatments name unknown hotline(s): {', '.join(sorted(unknown))} "
                "(configured hotline names, or 'other')"
            )
        return v

    @field_validator("hotlines")
    @classmethod
    def _hotlines(cls, v: dict[str, str]) -> dict[str, str]:
        for did, name in v.items():
            if not is_dialable(did):
                raise ValueError(f"hotline number {did!r} must be dialable digits")
            if not _NAME.fullmatch(name):
                raise ValueError(f"hotline name {name!r} must be 1-64 of A-Z a-z 0-9 _ -")
        return v

    def hotline_name(self, did: str) -> str:
        """The configured name of a called number, or ``other`` (bounded metric labels)."""
        return self.hotlines.get(did, "other")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load and validate settings from defaults, ``path``, the environment and ``overrides``.

    ``overrides`` is a nested dict (``{"ami": {"port": 5039}}``) from CLI flags; it wins.

    Raises:
        ConfigError: listing every problem found, or naming a missing/unreadable/invalid file.
    """
    if path is not None:
        try:
            with path.open("rb") as f:
                tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None

    loader = type("_Loader", (Settings,), {"_toml_file": path})
    try:
        loaded = loader(**(overrides or {}))
    except ValidationError as e:
        raise ConfigError(f"invalid configuration: {_describe(e)}") from None
    return Settings.model_construct(
        **{name: getattr(loaded, name) for name in Settings.model_fields}
    )


def systemd_notify() -> tuple[str | None, float | None]:
    """``(NOTIFY_SOCKET, watchdog period in seconds)`` when systemd runs screener as
    ``Type=notify`` (``WATCHDOG_USEC`` is set with ``WatchdogSec=``); ``(None, None)`` otherwise."""
    import os

    socket_path = os.environ.get("NOTIFY_SOCKET") or None
    usec = os.environ.get("WATCHDOG_USEC", "")
    period = int(usec) / 1_000_000 if usec.isdigit() and int(usec) > 0 else None
    return socket_path, period
