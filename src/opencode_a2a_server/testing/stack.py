"""The whole stack on loopback, for tests, `make demo` and benchmarks.

Scripted model -> real `opencode serve` (isolated HOME and XDG folders) -> adapter
process started through the real CLI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from ..upstream.process import ManagedOpenCode, find_opencode_binary
from .scripted_model import write_opencode_config

TEST_TOKEN = "test-token-0123456789"


def isolated_env(root: Path) -> dict[str, str]:
    """HOME and XDG folders under `root`, so OpenCode never touches the real home."""
    env = {}
    for name, sub in (
        ("HOME", "home"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state"),
    ):
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    return env


def configure_opencode(env: Mapping[str, str], model_base_url: str) -> Path:
    """Write the global OpenCode config pointing at the scripted model."""
    config_dir = Path(env["XDG_CONFIG_HOME"]) / "opencode"
    config_dir.mkdir(parents=True, exist_ok=True)
    return write_opencode_config(config_dir, model_base_url)


async def start_opencode(root: Path, workspace: Path, model_base_url: str) -> ManagedOpenCode:
    """Start a real `opencode serve` wired to the scripted model."""
    env = isolated_env(root)
    configure_opencode(env, model_base_url)
    opencode = ManagedOpenCode(
        find_opencode_binary(os.environ.get("OPENCODE_BIN")),
        workspace,
        extra_env=env,
        startup_timeout=60,
    )
    await opencode.start()
    return opencode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AdapterProcess:
    """`opencode-a2a-server serve` as a child process, configured by environment."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path, cwd: Path) -> None:
        self.port = int(env.get("A2A_PORT") or free_port())
        self.env = {**os.environ, **env, "A2A_PORT": str(self.port)}
        self.env.setdefault("A2A_BEARER_TOKEN", TEST_TOKEN)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.env["A2A_BEARER_TOKEN"]

    def start(self, timeout: float = 60.0) -> AdapterProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opencode_a2a_server.cli", "serve"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"adapter exited with {self.proc.returncode}: {self.tail()}")
            try:
                response = httpx.get(f"{self.url}/health", headers=headers, timeout=5)
                if response.status_code in (200, 503):  # 503: up, upstream not (yet) healthy
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"adapter not ready after {timeout} s: {self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)
