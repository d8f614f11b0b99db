"""Settings from the environment, and the CLI's one-line configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opencode_a2a_server.config import SettingsError, load_settings

PREFIXES = ("A2A_", "OPENCODE_")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIXES)}


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No A2A_*/OPENCODE_* variable leaks in from the outside; run from an empty directory."""
    for name in list(os.environ):
        if name.upper().startswith(PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("A2A_BEARER_TOKEN", "s3cret")


def test_missing_bearer_token_names_the_variable():
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("A2A_BEARER_TOKEN is required but not set (or ")


def test_blank_bearer_token_is_refused(monkeypatch):
    monkeypatch.setenv("A2A_BEARER_TOKEN", "   ")
    with pytest.raises(SettingsError, match=r"^A2A_BEARER_TOKEN is invalid: must not be empty$"):
        load_settings()


@pytest.mark.parametrize("port", ["http", "-1", "65536", "80.5"])
def test_bad_port_names_a2a_port(monkeypatch, token, port):
    monkeypatch.setenv("A2A_PORT", port)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("A2A_PORT is invalid: ")
    assert "A2A_BEARER_TOKEN" not in message


def test_bad_database_url_scheme(monkeypatch, token):
    monkeypatch.setenv("A2A_DATABASE_URL", "mysql://db/tasks")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        "A2A_DATABASE_URL is invalid: must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:////tmp/tasks.db", "postgresql+asyncpg://u:p@db/tasks"]
)
def test_supported_database_urls(monkeypatch, token, url):
    monkeypatch.setenv("A2A_DATABASE_URL", url)
    assert load_settings().database_url == url


def test_nonexistent_workspace_root(monkeypatch, token, tmp_path):
    missing = tmp_path / "nope"
    monkeypatch.setenv("OPENCODE_WORKSPACE_ROOT", str(missing))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        f"OPENCODE_WORKSPACE_ROOT is invalid: {missing} is not an existing directory"
    )


def test_workspace_root_that_is_a_file(monkeypatch, token, tmp_path):
    file = tmp_path / "file.txt"
    file.write_text("x")
    monkeypatch.setenv("OPENCODE_WORKSPACE_ROOT", str(file))
    with pytest.raises(SettingsError, match="OPENCODE_WORKSPACE_ROOT is invalid"):
        load_settings()


def test_workspace_root_is_resolved(monkeypatch, token, tmp_path):
    (tmp_path / "ws" / "inner").mkdir(parents=True)
    monkeypatch.setenv("OPENCODE_WORKSPACE_ROOT", str(tmp_path / "ws" / "inner" / ".."))
    assert load_settings().workspace_root == (tmp_path / "ws").resolve()


def test_several_problems_are_reported_on_one_line(monkeypatch):
    monkeypatch.setenv("A2A_PORT", "x")
    monkeypatch.setenv("A2A_LOG_LEVEL", "chatty")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert "A2A_BEARER_TOKEN is required but not set" in message
    assert "A2A_PORT is invalid" in message
    assert "A2A_LOG_LEVEL is invalid: must be one of" in message


def test_defaults(token, tmp_path):
    settings = load_settings()
    assert settings.a2a_bearer_token.get_secret_value() == "s3cret"
    assert settings.a2a_host == "127.0.0.1"
    assert settings.a2a_port == 8000
    assert settings.a2a_max_request_body_bytes == 1024 * 1024
    assert settings.a2a_allow_directory_override is True
    assert settings.opencode_timeout == 120.0
    assert settings.stream_timeout is None
    assert settings.opencode_base_url is None
    assert settings.default_model is None
    assert settings.a2a_log_level == "INFO"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.workspace_root == Path(tmp_path).resolve()
    assert settings.database_url == (
        f"sqlite+aiosqlite:///{(tmp_path / '.data' / 'opencode-a2a.db').resolve()}"
    )
    assert "s3cret" not in repr(settings)


def test_environment_overrides(monkeypatch, token):
    monkeypatch.setenv("A2A_HOST", "0.0.0.0")
    monkeypatch.setenv("A2A_PORT", "9123")
    monkeypatch.setenv("A2A_ALLOW_DIRECTORY_OVERRIDE", "false")
    monkeypatch.setenv("A2A_LOG_LEVEL", "debug")
    monkeypatch.setenv("OPENCODE_TIMEOUT", "5.5")
    monkeypatch.setenv("OPENCODE_TIMEOUT_STREAM", "30")
    monkeypatch.setenv("OPENCODE_PROVIDER_ID", "fake")
    monkeypatch.setenv("OPENCODE_MODEL_ID", "fake-1")
    settings = load_settings()
    assert settings.a2a_port == 9123
    assert settings.a2a_allow_directory_override is False
    assert settings.a2a_log_level == "DEBUG"
    assert settings.opencode_timeout == 5.5
    assert settings.stream_timeout == 30
    assert settings.default_model == {"providerID": "fake", "modelID": "fake-1"}
    # A wildcard bind address is not something clients can reach.
    assert settings.public_url == "http://127.0.0.1:9123"


def test_keyword_overrides_win_over_the_environment(monkeypatch, token):
    monkeypatch.setenv("A2A_PORT", "9123")
    assert load_settings(a2a_port=9999).a2a_port == 9999


def test_public_url_setting_is_used_without_trailing_slash(monkeypatch, token):
    monkeypatch.setenv("A2A_PUBLIC_URL", "https://agents.example.com/opencode/")
    assert load_settings().public_url == "https://agents.example.com/opencode"


def test_body_limit_has_a_floor(monkeypatch, token):
    monkeypatch.setenv("A2A_MAX_REQUEST_BODY_BYTES", "10")
    with pytest.raises(SettingsError, match=r"^A2A_MAX_REQUEST_BODY_BYTES is invalid"):
        load_settings()


# -- the CLI ----------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opencode_a2a_server.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_serve_without_token_exits_2_with_one_line(tmp_path):
    result = run_cli("serve", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "A2A_BEARER_TOKEN" in lines[0]
    assert lines[0].startswith(
        "opencode-a2a-server: configuration error: A2A_BEARER_TOKEN is required but not set"
    )
    assert "A2A_CREDENTIALS_FILE" in lines[0] and "A2A_JWT_JWKS_URL" in lines[0]
    assert result.stdout == ""


def test_cli_serve_with_a_bad_port_names_it(tmp_path):
    env = clean_env() | {"A2A_BEARER_TOKEN": "t", "A2A_PORT": "nope"}
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("opencode-a2a-server: configuration error: A2A_PORT is invalid")
