"""Tests for the managed `opencode serve` process, using a fake opencode executable."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from opencode_a2a_server.upstream import process as process_mod
from opencode_a2a_server.upstream.process import (
    ManagedOpenCode,
    ManagedOpenCodeError,
    OpenCodeNotFound,
    OpenCodeStartupError,
    find_opencode_binary,
)

# A stand-in for `opencode serve`. It binds the TCP port at once (connections are accepted
# but never answered), prints the "listening" line after FAKE_LISTEN_DELAY, and only serves
# HTTP after a further FAKE_HTTP_DELAY, mimicking OpenCode's startup race.
FAKE_OPENCODE = r"""
import base64, json, os, signal, socket, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

env = os.environ
if env.get("FAKE_PID_LOG"):
    with open(env["FAKE_PID_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {' '.join(sys.argv[1:])}\n")
if env.get("FAKE_EXIT_IMMEDIATELY"):
    print("fake: starting", flush=True)
    print("boom: fake opencode refuses to start", file=sys.stderr, flush=True)
    sys.exit(int(env["FAKE_EXIT_IMMEDIATELY"]))
if env.get("FAKE_IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if env.get("FAKE_GRANDCHILD_PIDFILE"):
    grandchild = subprocess.Popen(
        [sys.executable, "-c",
         "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with open(env["FAKE_GRANDCHILD_PIDFILE"], "w") as fh:
        fh.write(str(grandchild.pid))

args = sys.argv[1:]
assert args[0] == "serve", args
host = args[args.index("--hostname") + 1]
port = int(args[args.index("--port") + 1])
if port and env.get("FAKE_FAIL_FIXED_PORT"):
    print("Error: ServeError (address in use)", file=sys.stderr, flush=True)
    sys.exit(1)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((host, port))
sock.listen(64)
port = sock.getsockname()[1]

expected = "Basic " + base64.b64encode(
    f"{env.get('OPENCODE_SERVER_USERNAME', 'opencode')}:"
    f"{env['OPENCODE_SERVER_PASSWORD']}".encode()
).decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("www-authenticate", 'Basic realm="Secure Area"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/global/health":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"healthy": True, "version": "fake"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


crash_after = env.get("FAKE_CRASH_AFTER")
once_file = env.get("FAKE_CRASH_ONCE_FILE")
if crash_after and not (once_file and os.path.exists(once_file)):
    if once_file:
        open(once_file, "w").close()

    def crash():
        print("fake: crashing", file=sys.stderr, flush=True)
        os._exit(3)

    threading.Timer(float(crash_after), crash).start()

time.sleep(float(env.get("FAKE_LISTEN_DELAY", "0.1")))
print(f"opencode server listening on http://{host}:{port}", flush=True)
time.sleep(float(env.get("FAKE_HTTP_DELAY", "0.5")))
server = ThreadingHTTPServer((host, port), Handler, bind_and_activate=False)
server.socket = sock
server.serve_forever()
"""

FakeFactory = Callable[..., ManagedOpenCode]


def _write_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    return _write_executable(
        tmp_path / "bin" / "fake-opencode", f"#!{sys.executable}\n{FAKE_OPENCODE}"
    )


@pytest.fixture
async def make_managed(fake_binary: Path, tmp_path: Path) -> AsyncIterator[FakeFactory]:
    created: list[ManagedOpenCode] = []
    workspace = tmp_path / "ws"
    workspace.mkdir()

    def factory(env: dict[str, str] | None = None, **kwargs: object) -> ManagedOpenCode:
        kwargs.setdefault("startup_timeout", 10.0)
        kwargs.setdefault("restart_initial_backoff", 0.1)
        managed = ManagedOpenCode(
            str(fake_binary),
            workspace,
            extra_env=env or {},
            **kwargs,  # type: ignore[arg-type]
        )
        created.append(managed)
        return managed

    yield factory
    for managed in created:
        await managed.stop(timeout=2)


async def _health(managed: ManagedOpenCode, auth: httpx.Auth | None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        return await client.get(f"{managed.base_url}/global/health", auth=auth)


def _alive(pid: int) -> bool:
    """True if the pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


async def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


# ------------------------------------------------------------------ binary resolution


@pytest.fixture
def isolated_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty PATH and a cwd without .tools; returns a fake project root."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    root = tmp_path / "project"
    root.mkdir()
    return root


def _local_copy(root: Path) -> Path:
    return _write_executable(root / process_mod.LOCAL_BINARY, "#!/bin/sh\n")


def test_explicit_binary_wins(isolated_lookup: Path, tmp_path: Path) -> None:
    _local_copy(isolated_lookup)
    _write_executable(tmp_path / "empty-path" / "opencode", "#!/bin/sh\n")
    explicit = _write_executable(tmp_path / "custom" / "oc", "#!/bin/sh\n")
    assert find_opencode_binary(str(explicit), isolated_lookup) == str(explicit)


def test_explicit_binary_missing_is_an_error(isolated_lookup: Path) -> None:
    _local_copy(isolated_lookup)
    with pytest.raises(OpenCodeNotFound, match="OPENCODE_BIN"):
        find_opencode_binary("/nonexistent/opencode", isolated_lookup)


def test_path_before_project_local(isolated_lookup: Path, tmp_path: Path) -> None:
    _local_copy(isolated_lookup)
    on_path = _write_executable(tmp_path / "empty-path" / "opencode", "#!/bin/sh\n")
    assert find_opencode_binary(None, isolated_lookup) == str(on_path)


def test_project_local_copy(isolated_lookup: Path) -> None:
    local = _local_copy(isolated_lookup)
    assert find_opencode_binary(None, isolated_lookup) == str(local)


def test_cwd_local_copy(isolated_lookup: Path) -> None:
    local = _local_copy(Path.cwd())
    assert Path(find_opencode_binary(None, isolated_lookup)).resolve() == local.resolve()


def test_not_found_message(isolated_lookup: Path) -> None:
    with pytest.raises(OpenCodeNotFound) as info:
        find_opencode_binary(None, isolated_lookup)
    message = str(info.value)
    assert "OPENCODE_BIN" in message
    assert "opencode-ai" in message
    assert "make serve" in message
    assert isinstance(info.value, ManagedOpenCodeError)


def test_default_project_root_is_repo_root() -> None:
    assert (process_mod.DEFAULT_PROJECT_ROOT / "pyproject.toml").is_file()


# ------------------------------------------------------------------ startup


async def test_start_waits_for_http_not_just_tcp(make_managed: FakeFactory) -> None:
    managed = make_managed({"FAKE_LISTEN_DELAY": "0.1", "FAKE_HTTP_DELAY": "1.5"})
    began = time.monotonic()
    await managed.start()
    assert time.monotonic() - began >= 1.5
    assert managed.running and managed.ready
    assert managed.base_url.startswith("http://127.0.0.1:")
    response = await _health(managed, httpx.BasicAuth(managed.username, managed.password))
    assert response.status_code == 200
    assert response.json()["healthy"] is True
    assert await managed.wait_ready(0.1) == managed.base_url


async def test_auth_is_required(make_managed: FakeFactory) -> None:
    managed = make_managed(username="a2a")
    await managed.start()
    assert managed.username == "a2a"
    assert len(managed.password) >= 32
    assert (await _health(managed, None)).status_code == 401
    wrong = httpx.BasicAuth("opencode", managed.password)
    assert (await _health(managed, wrong)).status_code == 401
    assert (await _health(managed, managed.auth)).status_code == 200


async def test_password_is_random_and_not_logged(
    make_managed: FakeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger=process_mod.__name__)
    first, second = make_managed(), make_managed()
    assert first.password != second.password
    await first.start()
    assert first.password not in caplog.text
    assert first.password not in repr(first)


async def test_data_dir_sets_xdg_dirs(make_managed: FakeFactory, tmp_path: Path) -> None:
    managed = make_managed(data_dir=tmp_path / "state")
    env = managed._child_env()
    assert env["XDG_DATA_HOME"] == str(tmp_path / "state" / "data")
    assert env["XDG_STATE_HOME"] == str(tmp_path / "state" / "state")
    assert env["OPENCODE_SERVER_PASSWORD"] == managed.password


async def test_early_exit_raises_with_output(make_managed: FakeFactory) -> None:
    managed = make_managed({"FAKE_EXIT_IMMEDIATELY": "7"})
    with pytest.raises(OpenCodeStartupError) as info:
        await managed.start()
    message = str(info.value)
    assert "code 7" in message
    assert "boom: fake opencode refuses to start" in message
    assert not managed.running


async def test_startup_timeout_kills_child(make_managed: FakeFactory, tmp_path: Path) -> None:
    pid_log = tmp_path / "pids.log"
    managed = make_managed(
        {"FAKE_HTTP_DELAY": "60", "FAKE_PID_LOG": str(pid_log)}, startup_timeout=2.0
    )
    began = time.monotonic()
    with pytest.raises(OpenCodeStartupError, match="not healthy within"):
        await managed.start()
    assert time.monotonic() - began < 6
    pid = int(pid_log.read_text().split()[0])
    assert await _wait_dead(pid)


async def test_no_listening_line_times_out(make_managed: FakeFactory) -> None:
    managed = make_managed({"FAKE_LISTEN_DELAY": "60"}, startup_timeout=1.0)
    with pytest.raises(OpenCodeStartupError, match="no 'listening' line"):
        await managed.start()


async def test_missing_binary_raises_startup_error(tmp_path: Path) -> None:
    managed = ManagedOpenCode(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(OpenCodeStartupError, match="could not execute"):
        await managed.start()


# ------------------------------------------------------------------ supervision


async def test_crash_is_restarted(make_managed: FakeFactory, tmp_path: Path) -> None:
    restarted: asyncio.Queue[str] = asyncio.Queue()

    async def on_restart(url: str) -> None:
        await restarted.put(url)

    managed = make_managed(
        {"FAKE_CRASH_AFTER": "0.8", "FAKE_CRASH_ONCE_FILE": str(tmp_path / "crashed")},
        on_restart=on_restart,
    )
    await managed.start()
    old_pid, old_url = managed.pid, managed.base_url
    new_url = await asyncio.wait_for(restarted.get(), 10)
    assert managed.pid != old_pid
    assert new_url == managed.base_url == old_url  # the previous port is reused
    assert await managed.wait_ready(1) == new_url
    assert (await _health(managed, managed.auth)).status_code == 200
    assert managed.restart_count == 1
    assert old_pid is not None and not _alive(old_pid)


async def test_restart_falls_back_to_free_port(make_managed: FakeFactory, tmp_path: Path) -> None:
    restarted: asyncio.Queue[str] = asyncio.Queue()

    async def on_restart(url: str) -> None:
        await restarted.put(url)

    pid_log = tmp_path / "pids.log"
    managed = make_managed(
        {"FAKE_FAIL_FIXED_PORT": "1", "FAKE_PID_LOG": str(pid_log)}, on_restart=on_restart
    )
    await managed.start()
    old_pid, old_port = managed.pid, managed.base_url.rsplit(":", 1)[1]
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    new_url = await asyncio.wait_for(restarted.get(), 10)
    assert managed.pid != old_pid
    assert new_url == managed.base_url
    assert (await _health(managed, managed.auth)).status_code == 200
    ports = [line.split()[-1] for line in pid_log.read_text().splitlines()]
    assert ports == ["0", old_port, "0"]  # initial, reuse attempt, fallback


async def test_wait_ready_during_restart(make_managed: FakeFactory) -> None:
    managed = make_managed({"FAKE_HTTP_DELAY": "1.0"})
    await managed.start()
    pid = managed.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert not managed.ready
    with pytest.raises(TimeoutError):
        await managed.wait_ready(0.2)
    url = await managed.wait_ready(10)
    assert managed.pid != pid
    assert (await _health(managed, managed.auth)).status_code == 200
    assert url == managed.base_url


async def test_backoff_grows_and_resets(make_managed: FakeFactory) -> None:
    managed = make_managed(restart_initial_backoff=0.5, restart_max_backoff=2.0)
    assert [managed._take_backoff() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]


async def test_on_restart_errors_do_not_stop_supervision(make_managed: FakeFactory) -> None:
    calls: list[str] = []

    async def broken(url: str) -> None:
        calls.append(url)
        raise RuntimeError("callback failed")

    managed = make_managed(on_restart=broken)
    await managed.start()
    for _ in range(2):
        pid = managed.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.3)
        await managed.wait_ready(10)
    assert len(calls) == 2
    assert managed.running


# ------------------------------------------------------------------ stop


async def test_stop_kills_process_group(make_managed: FakeFactory, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    managed = make_managed({"FAKE_GRANDCHILD_PIDFILE": str(pidfile)})
    await managed.start()
    pid = managed.pid
    grandchild = int(pidfile.read_text())
    assert pid is not None and _alive(grandchild)
    await managed.stop(timeout=2)
    assert not managed.running
    assert await _wait_dead(pid)
    assert await _wait_dead(grandchild)
    await managed.stop()  # idempotent
    with pytest.raises(ManagedOpenCodeError):
        await managed.wait_ready(0.1)


async def test_stop_escalates_to_sigkill(make_managed: FakeFactory) -> None:
    managed = make_managed({"FAKE_IGNORE_SIGTERM": "1"})
    await managed.start()
    pid = managed.pid
    assert pid is not None
    began = time.monotonic()
    await managed.stop(timeout=0.5)
    assert time.monotonic() - began < 3
    assert await _wait_dead(pid)


async def test_stop_is_not_treated_as_crash(make_managed: FakeFactory) -> None:
    calls: list[str] = []

    async def on_restart(url: str) -> None:
        calls.append(url)

    managed = make_managed(on_restart=on_restart)
    await managed.start()
    await managed.stop()
    await asyncio.sleep(0.5)
    assert calls == []
    assert managed.pid is None


async def test_stop_before_start_and_context_manager(make_managed: FakeFactory) -> None:
    managed = make_managed()
    await managed.stop()
    async with make_managed() as running:
        assert running.running
        pid = running.pid
    assert pid is not None and await _wait_dead(pid)
