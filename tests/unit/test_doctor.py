"""`doctor` checks, with a fake OpenCode on 127.0.0.1 and SQLite databases in tmp_path."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from opencode_a2a_server import doctor
from opencode_a2a_server.doctor import PINNED_OPENCODE_VERSION, Check, run_checks

from .fake_upstream import ThreadedUpstream

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("A2A_", "OPENCODE_")


@pytest.fixture(autouse=True)
def isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, threaded_upstream: ThreadedUpstream
) -> Path:
    """A complete, valid environment: external OpenCode, SQLite in tmp_path, long token."""
    for name in list(os.environ):
        if name.upper().startswith(PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    monkeypatch.setenv("A2A_BEARER_TOKEN", "a-long-enough-test-token-123")
    monkeypatch.setenv("OPENCODE_BASE_URL", threaded_upstream.url)
    monkeypatch.setenv("OPENCODE_SERVER_PASSWORD", "pw")
    monkeypatch.setenv("OPENCODE_WORKSPACE_ROOT", str(workspace))
    monkeypatch.setenv("A2A_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    return tmp_path


def checks_by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def run() -> dict[str, Check]:
    return checks_by_name(asyncio.run(run_checks()))


@pytest.fixture
def upstream(threaded_upstream: ThreadedUpstream) -> ThreadedUpstream:
    return threaded_upstream


def health(version: str = PINNED_OPENCODE_VERSION) -> dict[str, object]:
    return {"healthy": True, "version": version}


def test_pinned_version_is_the_makefiles() -> None:
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^OPENCODE_VERSION := (\S+)$", makefile, re.M)
    assert pinned is not None and pinned.group(1) == PINNED_OPENCODE_VERSION


def test_everything_ok(upstream: ThreadedUpstream) -> None:
    route = upstream.get("/global/health").respond(json=health())
    found = run()
    assert route.calls
    basic = base64.b64encode(b"opencode:pw").decode()
    assert route.calls[0].headers["authorization"] == f"Basic {basic}"
    assert {name: c.status for name, c in found.items()} == {
        "settings": "ok",
        "upstream": "ok",
        "version": "ok",
        "database": "ok",
        "publicurl": "ok",
        "workspace": "ok",
    }
    assert "does not exist yet" in found["database"].message


def test_other_opencode_version_warns(upstream: ThreadedUpstream) -> None:
    upstream.get("/global/health").respond(json=health("1.2.3"))
    found = run()
    assert found["version"].status == "warn"
    assert f"opencode-ai@{PINNED_OPENCODE_VERSION}" in found["version"].message


def test_upstream_401_names_the_password(upstream: ThreadedUpstream) -> None:
    upstream.get("/global/health").respond(401, body=b"")
    found = run()
    assert found["upstream"].status == "FAIL"
    assert "HTTP 401" in found["upstream"].message
    assert "OPENCODE_SERVER_PASSWORD" in found["upstream"].message
    assert "version" not in found


def test_upstream_401_without_a_password_says_to_set_one(
    upstream: ThreadedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENCODE_SERVER_PASSWORD")
    upstream.get("/global/health").respond(401, body=b"")
    message = run()["upstream"].message
    assert "set OPENCODE_SERVER_PASSWORD" in message


def test_upstream_down_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODE_BASE_URL", "http://127.0.0.1:9")  # nothing listens
    found = run()
    assert found["upstream"].status == "FAIL"
    assert "unreachable" in found["upstream"].message
    assert "OPENCODE_BASE_URL" in found["upstream"].message


def test_upstream_other_http_error(upstream: ThreadedUpstream) -> None:
    upstream.get("/global/health").respond(404, body=b"")
    message = run()["upstream"].message
    assert "HTTP 404" in message and "OPENCODE_BASE_URL" in message


def fake_opencode(tmp_path: Path, version: str) -> Path:
    script = tmp_path / "fake-opencode"
    script.write_text(f"#!/bin/sh\necho '{version}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_managed_opencode_reports_its_version(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.delenv("OPENCODE_BASE_URL")
    monkeypatch.setenv("OPENCODE_BIN", str(fake_opencode(isolated_env, PINNED_OPENCODE_VERSION)))
    found = run()
    assert found["upstream"].status == "ok"
    assert "not started now" in found["upstream"].message
    assert found["version"].status == "ok"

    monkeypatch.setenv("OPENCODE_BIN", str(fake_opencode(isolated_env, "0.9.0")))
    assert run()["version"].status == "warn"


def test_managed_opencode_missing_binary_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCODE_BASE_URL")
    monkeypatch.setenv("OPENCODE_BIN", "/nonexistent/opencode")
    found = run()
    assert found["upstream"].status == "FAIL"
    assert "OPENCODE_BIN" in found["upstream"].message


def test_invalid_settings_are_each_reported_and_other_checks_still_run(
    upstream: ThreadedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.get("/global/health").respond(json=health())
    monkeypatch.setenv("A2A_PORT", "not-a-port")
    monkeypatch.setenv("A2A_LOG_LEVEL", "LOUD")
    checks = asyncio.run(run_checks())
    settings = [c for c in checks if c.name == "settings"]
    assert [c.status for c in settings] == ["FAIL", "FAIL"]
    assert settings[0].message.startswith("A2A_PORT is invalid")
    assert settings[1].message.startswith("A2A_LOG_LEVEL is invalid")
    found = checks_by_name(checks)
    assert found["upstream"].status == "ok" and found["database"].status == "ok"
    assert "publicurl" not in found  # it depends on A2A_PORT


def test_missing_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("A2A_BEARER_TOKEN")
    monkeypatch.delenv("OPENCODE_BASE_URL")
    monkeypatch.setenv("OPENCODE_BIN", "/nonexistent/opencode")
    checks = asyncio.run(run_checks())
    assert checks[0].status == "FAIL" and "A2A_BEARER_TOKEN" in checks[0].message


def test_short_token_warns(upstream: ThreadedUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.get("/global/health").respond(json=health())
    monkeypatch.setenv("A2A_BEARER_TOKEN", "short")
    found = run()
    assert found["token"].status == "warn" and "5 characters" in found["token"].message


def test_existing_sqlite_database_lists_tables(
    upstream: ThreadedUpstream, isolated_env: Path
) -> None:
    upstream.get("/global/health").respond(json=health())
    with sqlite3.connect(isolated_env / "db.sqlite") as conn:
        conn.execute("CREATE TABLE tasks (id TEXT)")
    found = run()
    assert found["database"].status == "ok"
    assert "answers SELECT 1; tables: tasks" in found["database"].message
    # A database the service never migrated: schema version 0 of the latest.
    assert found["schema"].status == "warn"
    assert "opencode-a2a-server migrate" in found["schema"].message


def test_missing_sqlite_file_is_not_created(upstream: ThreadedUpstream, isolated_env: Path) -> None:
    upstream.get("/global/health").respond(json=health())
    run()
    assert not (isolated_env / "db.sqlite").exists()


def test_unusable_database_fails(
    upstream: ThreadedUpstream, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    upstream.get("/global/health").respond(json=health())
    (isolated_env / "db.sqlite").write_text("this is not a database, but long enough " * 50)
    found = run()
    assert found["database"].status == "FAIL"
    assert "A2A_DATABASE_URL" in found["database"].message


@pytest.mark.parametrize(
    ("variables", "status", "words"),
    [
        ({"A2A_PUBLIC_URL": "https://agents.example.com"}, "ok", "https://agents.example.com"),
        ({"A2A_PUBLIC_URL": "http://localhost:8000"}, "ok", "localhost"),
        ({"A2A_PUBLIC_URL": "http://agents.example.com"}, "warn", "unencrypted"),
        ({"A2A_PUBLIC_URL": "http://10.0.0.5:8000"}, "warn", "non-loopback"),
        ({"A2A_HOST": "0.0.0.0"}, "warn", "set A2A_PUBLIC_URL"),
        ({}, "ok", "http://127.0.0.1:8000"),
    ],
)
def test_public_url(
    upstream: ThreadedUpstream,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    status: str,
    words: str,
) -> None:
    upstream.get("/global/health").respond(json=health())
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    found = run()["publicurl"]
    assert found.status == status and words in found.message


def test_missing_workspace_is_a_settings_failure(
    upstream: ThreadedUpstream, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    upstream.get("/global/health").respond(json=health())
    monkeypatch.setenv("OPENCODE_WORKSPACE_ROOT", str(isolated_env / "nope"))
    found = run()
    assert found["settings"].status == "FAIL"
    assert "OPENCODE_WORKSPACE_ROOT" in found["settings"].message
    assert "workspace" not in found


def test_main_prints_one_line_per_check_and_exit_codes(upstream: ThreadedUpstream) -> None:
    route = upstream.get("/global/health").respond(json=health())
    out = io.StringIO()
    assert doctor.main(out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ok   settings ")
    assert lines[-1] == "all checks ok"
    route.respond(401, body=b"")
    out = io.StringIO()
    assert doctor.main(out) == 1
    assert any(line.startswith("FAIL upstream ") for line in out.getvalue().splitlines())
    assert out.getvalue().splitlines()[-1] == "1 failed, 0 warnings"
