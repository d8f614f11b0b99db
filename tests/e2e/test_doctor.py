"""`opencode-a2a-server doctor` against the real OpenCode and the adapter's own database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opencode_a2a_server.testing.stack import TEST_TOKEN, AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .conftest import adapter_env

pytestmark = pytest.mark.e2e

PREFIXES = ("A2A_", "OPENCODE_")


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIXES)}
    return subprocess.run(
        [sys.executable, "-m", "opencode_a2a_server.cli", "doctor"],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """name -> whole line, for the check lines (`status name message`)."""
    found = {}
    for line in result.stdout.splitlines()[:-1]:
        parts = line.split()
        found[parts[1]] = line
    return found


@pytest.fixture
def env(
    adapter: AdapterProcess, opencode: ManagedOpenCode, workspace: Path, stack_root: Path
) -> dict[str, str]:
    # The adapter fixture has created and migrated this database.
    return {
        **adapter_env(opencode, workspace, stack_root / "adapter.db"),
        "A2A_BEARER_TOKEN": TEST_TOKEN,
    }


def test_doctor_on_the_running_stack_is_all_ok(env: dict[str, str], tmp_path: Path) -> None:
    result = doctor(env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines_of(result)
    assert set(found) >= {"settings", "upstream", "version", "database", "publicurl", "workspace"}
    assert all(line.startswith("ok ") for line in found.values()), result.stdout
    assert "answers SELECT 1" in found["database"]
    assert "session_bindings" in found["database"]
    assert result.stdout.splitlines()[-1] == "all checks ok"


def test_wrong_opencode_password_fails(env: dict[str, str], tmp_path: Path) -> None:
    result = doctor({**env, "OPENCODE_SERVER_PASSWORD": "wrong"}, tmp_path)
    assert result.returncode == 1
    upstream = lines_of(result)["upstream"]
    assert upstream.startswith("FAIL ")
    assert "HTTP 401" in upstream and "OPENCODE_SERVER_PASSWORD" in upstream


def test_closed_port_is_unreachable(env: dict[str, str], tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = doctor({**env, "OPENCODE_BASE_URL": closed}, tmp_path)
    assert result.returncode == 1
    upstream = lines_of(result)["upstream"]
    assert upstream.startswith("FAIL ") and "unreachable" in upstream and closed in upstream
