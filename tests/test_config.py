"""Tests for screener.config: defaults < TOML < SCREENER_* env < overrides, one ConfigError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from screener.config import Settings, load
from screener.errors import ConfigError, ScreenerError
from screener.rules import Treatment

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever SCREENER_* the developer's shell or CI exports must not leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SCREENER_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return write(
        tmp_path / "screener.toml",
        """
[ami]
host = "10.0.0.5"
port = 5040
username = "tomluser"

[redis]
prefix = "centre2"

[flag]
key = "#7"
detect_dtmf = true
dtmf_channels = ["PJSIP/agent*", "SIP/*"]

[numbers]
default_region = "us"
timezone = "Asia/Shanghai"

[hotlines]
"4008001234" = "service"
"+8610123" = "complaints"
""",
    )


def test_defaults() -> None:
    s = load()
    assert s.ami.host == "127.0.0.1"
    assert s.ami.port == 5038
    assert s.ami.username == "screener"
    assert s.ami.secret is None
    assert s.ami.resolved_secret() is None
    assert s.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert s.redis.prefix == "screener"
    assert s.flag.key == "*9"
    assert s.flag.detect_dtmf is False
    assert s.flag.dtmf_channels == ("PJSIP/*",)
    assert s.flag.require_inbound_marker is True
    assert s.flag.retention_days == 400
    assert s.numbers.default_region == "CN"
    assert s.numbers.timezone == "UTC"
    assert str(s.numbers.zone) == "UTC"
    assert s.http.port == 8090
    assert s.http.resolved_token() is None
    assert s.log.level == "INFO"
    assert s.hotlines == {}
    assert s.shutdown_timeout == 5.0
    assert isinstance(s, Settings)


def test_toml_file(toml: Path) -> None:
    s = load(toml)
    assert (s.ami.host, s.ami.port, s.ami.username) == ("10.0.0.5", 5040, "tomluser")
    assert s.redis.prefix == "centre2"
    assert s.flag.key == "#7"
    assert s.flag.detect_dtmf is True
    assert s.flag.dtmf_channels == ("PJSIP/agent*", "SIP/*")
    assert s.numbers.default_region == "US"  # upper-cased
    assert s.numbers.timezone == "Asia/Shanghai"
    assert s.hotlines == {"4008001234": "service", "+8610123": "complaints"}
    assert s.ami.action_timeout == 2.0  # untouched values keep their defaults


def test_env_overrides_toml(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREENER_AMI__PORT", "5041")
    s = load(toml)
    assert s.ami.port == 5041
    assert s.ami.username == "tomluser"  # the rest of [ami] still comes from the file
    assert s.ami.host == "10.0.0.5"


def test_env_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("screener_log__level", "DEBUG")
    assert load().log.level == "DEBUG"


def test_overrides_beat_env(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREENER_AMI__PORT", "5041")
    s = load(toml, {"ami": {"port": 5042}})
    assert s.ami.port == 5042


def test_nested_override_keeps_the_other_toml_values_of_its_section(toml: Path) -> None:
    s = load(toml, {"ami": {"port": 6000}})
    assert s.ami.port == 6000
    assert s.ami.username == "tomluser"
    assert s.ami.host == "10.0.0.5"
    assert s.redis.prefix == "centre2"  # other sections untouched


def test_nested_env_keeps_the_other_toml_values_of_its_section(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCREENER_NUMBERS__TIMEZONE", "Europe/Berlin")
    s = load(toml)
    assert s.numbers.timezone == "Europe/Berlin"
    assert s.numbers.default_region == "US"


def test_unrelated_screener_env_vars_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads SCREENER_CONFIG and the lab SCREENER_LAB_DIR; neither is a settings field.
    monkeypatch.setenv("SCREENER_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("SCREENER_LAB_DIR", "/nonexistent")
    assert load().ami.port == 5038


def test_all_problems_in_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            None,
            {
                "ami": {"port": 0, "secret_file": str(tmp_path / "missing")},
                "flag": {"key": "99999999", "analysis_context": "bad context!"},
                "numbers": {"default_region": "XX", "timezone": "Mars/Base"},
                "redis": {"prefix": "a b"},
                "log": {"level": "LOUD"},
            },
        )
    message = str(info.value)
    assert message.startswith("invalid configuration: ")
    for where in (
        "ami.port",
        "ami.secret_file",
        "flag.key",
        "flag.analysis_context",
        "numbers.default_region",
        "numbers.timezone",
        "redis.prefix",
        "log.level",
    ):
        assert where in message
    assert "\n" not in message
    assert "Value error," not in message
    assert isinstance(info.value, ScreenerError)


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", "[ami]\nhots = '1.2.3.4'\n[nonsense]\nx = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "ami.hots" in str(info.value)
    assert "nonsense" in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load(tmp_path)


def test_bad_toml_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[ami\nport = \n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load(path)
    assert str(path) in str(info.value)


def test_binary_garbage_is_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_wrong_types_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", '[ami]\nport = "many"\n[flag]\nretention_days = 0\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "ami.port" in str(info.value)
    assert "flag.retention_days" in str(info.value)


# --- secrets ----------------------------------------------------------------------------------


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = write(tmp_path / "ami-secret", "  s3cr3t-ami\n")
    token = write(tmp_path / "api-token", "t0ken\n")
    s = load(None, {"ami": {"secret_file": str(secret)}, "http": {"token_file": str(token)}})
    resolved = s.ami.resolved_secret()
    assert resolved is not None
    assert resolved.get_secret_value() == "s3cr3t-ami"
    http_token = s.http.resolved_token()
    assert http_token is not None
    assert http_token.get_secret_value() == "t0ken"


def test_secret_file_wins_over_inline_secret(tmp_path: Path) -> None:
    secret = write(tmp_path / "ami-secret", "from-file")
    s = load(None, {"ami": {"secret": "inline", "secret_file": str(secret)}})
    resolved = s.ami.resolved_secret()
    assert resolved is not None
    assert resolved.get_secret_value() == "from-file"


def test_inline_secret_without_file() -> None:
    s = load(None, {"ami": {"secret": "inline"}})
    resolved = s.ami.resolved_secret()
    assert resolved is not None
    assert resolved.get_secret_value() == "inline"


@pytest.mark.parametrize("content", ["", "   \n\n"])
def test_empty_secret_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    secret = write(tmp_path / "ami-secret", content)
    with pytest.raises(ConfigError, match="is empty") as info:
        load(None, {"ami": {"secret_file": str(secret)}})
    assert str(secret) in str(info.value)


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read AMI secret file") as info:
        load(None, {"ami": {"secret_file": str(tmp_path / "gone")}})
    assert "No such file" in str(info.value)


def test_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read API token file"):
        load(None, {"http": {"token_file": str(tmp_path / "gone")}})


def test_secret_file_from_toml(tmp_path: Path) -> None:
    secret = write(tmp_path / "ami-secret", "from-toml-file")
    path = write(tmp_path / "s.toml", f'[ami]\nsecret_file = "{secret}"\n')
    resolved = load(path).ami.resolved_secret()
    assert resolved is not None
    assert resolved.get_secret_value() == "from-toml-file"


def test_secrets_never_appear_in_repr_or_str(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCREENER_REDIS__URL", "redis://:redis-pass-42@10.0.0.9:6379/0")
    path = write(
        tmp_path / "s.toml", '[ami]\nsecret = "ami-pass-42"\n[http]\ntoken = "api-token-42"\n'
    )
    s = load(path)
    texts = [repr(s), str(s), repr(s.ami), str(s.ami), repr(s.http), repr(s.redis), str(s.redis)]
    texts.append(repr(s.model_dump()))
    for text in texts:
        for secret in ("ami-pass-42", "api-token-42", "redis-pass-42"):
            assert secret not in text
    assert s.ami.secret is not None
    assert s.ami.secret.get_secret_value() == "ami-pass-42"


def test_a_secret_is_not_echoed_in_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", '[ami]\nsecret = ["hunter2-list"]\nport = "hunter2-port"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "hunter2" not in str(info.value)


# --- hotlines ---------------------------------------------------------------------------------


def test_hotline_name_falls_back_to_other() -> None:
    s = load(None, {"hotlines": {"4008001234": "service"}})
    assert s.hotline_name("4008001234") == "service"
    assert s.hotline_name("999") == "other"
    assert s.hotline_name("") == "other"


@pytest.mark.parametrize(
    "hotlines",
    [
        {"400-800-1234": "service"},
        {"": "service"},
        {"1" * 33: "service"},
        {"4008001234\r\n": "service"},
        {"4008001234": "service desk"},
        {"4008001234": ""},
        {"4008001234": "x" * 65},
        {"4008001234": "服务"},
    ],
)
def test_hotline_validation(hotlines: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="hotline"):
        load(None, {"hotlines": hotlines})


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(ValueError):
        s.ami.port = 1  # type: ignore[misc]


@pytest.mark.skipif(
    not (REPO / "deploy" / "screener.toml").exists(),
    reason="deploy/screener.toml does not exist yet",
)
def test_shipped_deploy_config_loads() -> None:
    s = load(REPO / "deploy" / "screener.toml")
    assert s.redis.prefix


# --- screening and agi ------------------------------------------------------------------------


def test_screening_defaults() -> None:
    s = load().screening
    assert s.enabled is True
    assert (s.budget_ms, s.budget) == (200, 0.2)
    assert s.default_treatment is Treatment.ANALYSIS
    assert s.treatments == {}
    assert s.challenge_digits == "123456789"
    assert (s.learn_interval, s.learn_factor, s.learn_min_flags) == (60.0, 1.5, 5)
    assert (s.auto_block, s.quorum, s.quorum_window_hours) == (True, 3, 24.0)
    assert s.auto_block_hours == (1.0, 24.0, 168.0)
    assert s.sweep_interval == 60.0
    agi = load().agi
    assert (agi.read_timeout, agi.max_connections) == (5.0, 500)


def test_screening_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path / "s.toml",
        """
[screening]
budget_ms = 150
default_treatment = "linefault"
treatments = { service = "busy", complaints = "reject" }
challenge_digits = "2468"
auto_block_hours = [2, 12]

[agi]
read_timeout = 2.5
max_connections = 64

[hotlines]
"4008001234" = "service"
"4008005678" = "complaints"
""",
    )
    monkeypatch.setenv("SCREENER_SCREENING__QUORUM", "4")
    s = load(path)
    assert s.screening.budget == 0.15
    assert s.screening.default_treatment is Treatment.LINEFAULT
    assert s.screening.treatments == {"service": Treatment.BUSY, "complaints": Treatment.REJECT}
    assert s.screening.challenge_digits == "2468"
    assert s.screening.auto_block_hours == (2.0, 12.0)
    assert s.screening.quorum == 4
    assert s.screening.budget_ms == 150  # the rest of [screening] still comes from the file
    assert (s.agi.read_timeout, s.agi.max_connections) == (2.5, 64)


def test_treatments_must_name_configured_hotlines() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            None,
            {
                "hotlines": {"4008001234": "service"},
                "screening": {"treatments": {"service": "busy", "sales": "reject", "x": "busy"}},
            },
        )
    message = str(info.value)
    assert "screening: treatments name unknown hotline(s): sales, x" in message
    assert "\n" not in message
    ok = load(
        None,
        {
            "hotlines": {"4008001234": "service"},
            "screening": {"treatments": {"service": "busy", "other": "reject"}},
        },
    )
    assert ok.screening.treatments == {"service": Treatment.BUSY, "other": Treatment.REJECT}


def test_a_treatments_problem_is_reported_with_the_others() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            None,
            {
                "ami": {"port": 0},
                "hotlines": {"4008001234": "service"},
                "screening": {"treatments": {"sales": "reject"}},
            },
        )
    assert "ami.port" in str(info.value) and "sales" in str(info.value)


@pytest.mark.parametrize(
    ("screening", "where"),
    [
        ({"budget_ms": 5}, "screening.budget_ms"),
        ({"budget_ms": 5001}, "screening.budget_ms"),
        ({"default_treatment": "hangup"}, "screening.default_treatment"),
        ({"challenge_digits": ""}, "challenge_digits"),
        ({"challenge_digits": "12a"}, "challenge_digits"),
        ({"challenge_digits": "113"}, "challenge_digits"),
        ({"challenge_digits": "*#"}, "challenge_digits"),
        ({"quorum": 1}, "screening.quorum"),
        ({"quorum_window_hours": 0}, "screening.quorum_window_hours"),
        ({"auto_block_hours": []}, "auto_block_hours"),
        ({"auto_block_hours": [1, 0]}, "auto_block_hours"),
        ({"auto_block_hours": [1, 9000]}, "auto_block_hours"),
        ({"learn_min_flags": 0}, "screening.learn_min_flags"),
        ({"sweep_interval": 0}, "screening.sweep_interval"),
        ({"budget": 1}, "screening.budget"),  # not a setting, the property derived from budget_ms
    ],
)
def test_screening_validation(screening: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, {"screening": screening})
    assert where in str(info.value)


@pytest.mark.parametrize(
    ("agi", "where"),
    [
        ({"read_timeout": 0}, "agi.read_timeout"),
        ({"read_timeout": 61}, "agi.read_timeout"),
        ({"max_connections": 0}, "agi.max_connections"),
        ({"port": 70000}, "agi.port"),
    ],
)
def test_agi_validation(agi: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load(None, {"agi": agi})


def test_screening_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(ValueError):
        s.screening.enabled = False  # type: ignore[misc]
