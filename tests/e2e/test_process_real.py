"""Run the real `opencode serve` under ManagedOpenCode: auth, crash recovery, stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from opencode_a2a_server.upstream.process import ManagedOpenCode, find_opencode_binary

# The pinned copy `make` installs (or OPENCODE_BIN); missing it is a failure, not a skip.
REAL_BINARY = Path(find_opencode_binary(os.environ.get("OPENCODE_BIN")))

pytestmark = pytest.mark.e2e


def _isolated_env(tmp_path: Path) -> dict[str, str]:
    dirs = {
        "HOME": "home",
        "XDG_CONFIG_HOME": "config",
        "XDG_CACHE_HOME": "cache",
        "XDG_DATA_HOME": "data",
        "XDG_STATE_HOME": "state",
    }
    env = {}
    for var, name in dirs.items():
        path = tmp_path / name
        path.mkdir()
        env[var] = str(path)
    return env


async def _health(url: str, auth: httpx.Auth | None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        return await client.get(f"{url}/global/health", auth=auth)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"


async def test_real_opencode_lifecycle(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    restarted: asyncio.Queue[str] = asyncio.Queue()

    async def on_restart(url: str) -> None:
        await restarted.put(url)

    managed = ManagedOpenCode(
        str(REAL_BINARY),
        workspace,
        extra_env=_isolated_env(tmp_path),
        startup_timeout=60.0,
        on_restart=on_restart,
    )
    try:
        await managed.start()
        first_pid = managed.pid
        assert first_pid is not None

        healthy = await _health(managed.base_url, managed.auth)
        assert healthy.status_code == 200
        assert healthy.json()["healthy"] is True
        assert (await _health(managed.base_url, None)).status_code == 401

        os.kill(first_pid, signal.SIGKILL)
        new_url = await asyncio.wait_for(restarted.get(), 90)
        assert await managed.wait_ready(5) == new_url
        assert managed.pid not in (None, first_pid)

        again = await _health(new_url, managed.auth)
        assert again.status_code == 200
        assert again.json()["healthy"] is True
        assert (await _health(new_url, None)).status_code == 401
    finally:
        last_pid = managed.pid
        await managed.stop()

    assert not managed.running
    assert last_pid is not None and _pid_gone(last_pid)
