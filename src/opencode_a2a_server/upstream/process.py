"""Managed ``opencode serve`` child process.

Used when the adapter is not pointed at an already running OpenCode server. The child is
spawned in its own session (process group) on 127.0.0.1 with a random basic-auth password,
readiness is detected from its "listening" line plus a ``GET /global/health`` probe with short
per-attempt timeouts (the TCP port accepts connections before HTTP is served, and a request
sent in that window can hang forever), and a supervisor task restarts it with exponential
backoff when it dies unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

RestartCallback = Callable[[str], Awaitable[None]]

LOCAL_BINARY = Path(".tools/opencode/node_modules/.bin/opencode")
DEFAULT_PROJECT_ROOT = Path(__file__).resolve().parents[3]
HEALTH_PATH = "/global/health"

_LISTEN_RE = re.compile(r"opencode server listening on (https?://[^\s/\x1b]+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TAIL_LINES = 40
_PROBE_TIMEOUT = 1.0
_PROBE_INTERVAL = 0.1
_DRAIN_TIMEOUT = 1.0
_STREAM_LIMIT = 1 << 20
_EXIT_POLL = 0.5


class ManagedOpenCodeError(RuntimeError):
    """Base error of the managed OpenCode process."""


class OpenCodeNotFound(ManagedOpenCodeError):
    """No ``opencode`` executable could be located."""


class OpenCodeStartupError(ManagedOpenCodeError):
    """The child did not become ready (exited early or timed out)."""


class _StartupFailed(Exception):
    """Internal: startup failed; the caller adds the output tail."""


# --------------------------------------------------------------------------- binary lookup


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _resolve_explicit(explicit: str) -> str:
    found = shutil.which(explicit)
    if found:
        return found
    path = Path(explicit).expanduser()
    if _is_executable(path):
        return str(path.resolve())
    raise OpenCodeNotFound(
        f"OPENCODE_BIN is set to {explicit!r}, but that is not an executable file. "
        "Fix OPENCODE_BIN, or unset it to use `opencode` from PATH."
    )


def _local_candidates(project_root: Path | None) -> list[Path]:
    roots = [project_root or DEFAULT_PROJECT_ROOT, Path.cwd()]
    candidates: list[Path] = []
    for root in roots:
        candidate = root / LOCAL_BINARY
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def find_opencode_binary(explicit: str | None, project_root: Path | None = None) -> str:
    """Locate the ``opencode`` executable.

    Order: ``explicit`` (the OPENCODE_BIN setting), ``opencode`` on PATH, then the project-local
    copy installed by the Makefile under ``<project_root>/.tools/`` or ``<cwd>/.tools/``.
    """
    if explicit:
        return _resolve_explicit(explicit)
    on_path = shutil.which("opencode")
    if on_path:
        return on_path
    candidates = _local_candidates(project_root)
    for candidate in candidates:
        if _is_executable(candidate):
            return str(candidate)
    looked = ", ".join(str(c) for c in candidates)
    raise OpenCodeNotFound(
        "Could not find the `opencode` executable (looked on PATH and at "
        f"{looked}). Set OPENCODE_BIN to its path, install it with "
        "`npm install -g opencode-ai`, or run `make serve` to install a project-local copy. "
        "Alternatively point the adapter at a running OpenCode server."
    )


# --------------------------------------------------------------------------- child output


@dataclass
class _Child:
    """One spawned ``opencode serve`` process and its output pumps."""

    proc: asyncio.subprocess.Process
    listening: asyncio.Future[str]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail_text(self) -> str:
        return "\n".join(self.tail) if self.tail else "(no output)"


def _clean_line(raw: bytes, secret: str) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return text.replace(secret, "***") if secret else text


def _handle_line(child: _Child, name: str, text: str) -> None:
    child.tail.append(f"[{name}] {text}")
    logger.debug("opencode[%d] %s: %s", child.pid, name, text)
    if name != "stdout" or child.listening.done():
        return
    match = _LISTEN_RE.search(_ANSI_RE.sub("", text))
    if match:
        child.listening.set_result(match.group(1))


async def _pump(child: _Child, stream: asyncio.StreamReader, name: str, secret: str) -> None:
    """Forward a child pipe to logging forever so that it never fills up."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # line longer than the stream limit; the buffer was discarded
            continue
        if not raw:
            return
        _handle_line(child, name, _clean_line(raw, secret))


# --------------------------------------------------------------------------- process control


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _wait_returncode(proc: asyncio.subprocess.Process) -> int:
    """Wait for the process to exit.

    Polls ``returncode`` as well, because on Python >= 3.12 ``Process.wait()`` also waits for
    the pipes to close, which a surviving grandchild holding them open could delay forever.
    """
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None:
            await asyncio.wait({waiter}, timeout=_EXIT_POLL)
    finally:
        waiter.cancel()
    return proc.returncode


async def _wait_exit(proc: asyncio.subprocess.Process, seconds: float) -> bool:
    try:
        await asyncio.wait_for(_wait_returncode(proc), seconds)
    except TimeoutError:
        return False
    return True


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader does not exit in time."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        if not await _wait_exit(proc, grace):
            logger.warning("opencode (pid %d) ignored SIGTERM; sending SIGKILL", proc.pid)
    _signal_group(proc, signal.SIGKILL)  # also sweeps leftover group members
    await _wait_returncode(proc)


async def _finish_pumps(pumps: list[asyncio.Task[None]]) -> None:
    """Let the pumps read the remaining output, then cancel any still blocked."""
    if not pumps:
        return
    _, pending = await asyncio.wait(pumps, timeout=_DRAIN_TIMEOUT)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)


def _is_healthy(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("healthy") is True


# --------------------------------------------------------------------------- managed process


class ManagedOpenCode:
    """Run and supervise an ``opencode serve`` child bound to 127.0.0.1."""

    def __init__(
        self,
        binary: str,
        workspace: str | Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        username: str = "opencode",
        data_dir: str | Path | None = None,
        startup_timeout: float = 30.0,
        restart_initial_backoff: float = 0.5,
        restart_max_backoff: float = 30.0,
        stable_after: float = 30.0,
        on_restart: RestartCallback | None = None,
    ) -> None:
        self._binary = binary
        self._workspace = Path(workspace)
        self._extra_env = dict(extra_env or {})
        self._username = username
        self._password = secrets.token_urlsafe(32)
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._startup_timeout = startup_timeout
        self._initial_backoff = restart_initial_backoff
        self._max_backoff = restart_max_backoff
        self._stable_after = stable_after
        self.on_restart = on_restart
        self._child: _Child | None = None
        self._base_url: str | None = None
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._next_backoff = restart_initial_backoff
        self._ready_since = 0.0
        self.restart_count = 0

    def __repr__(self) -> str:  # never include the password
        return f"ManagedOpenCode(binary={self._binary!r}, base_url={self._base_url!r})"

    # ----------------------------------------------------------------- properties

    @property
    def base_url(self) -> str:
        """URL of the current (or most recent) child, e.g. ``http://127.0.0.1:4096``."""
        if self._base_url is None:
            raise ManagedOpenCodeError("opencode has not been started")
        return self._base_url

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self._username, self._password)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    @property
    def running(self) -> bool:
        child = self._child
        return child is not None and child.proc.returncode is None and not self._stopping

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.running

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Spawn the child, wait until it serves HTTP, and start the supervisor."""
        if self._supervisor is not None or self._child is not None:
            raise ManagedOpenCodeError("opencode is already started")
        self._stopping = False
        self._stopped.clear()
        self._next_backoff = self._initial_backoff
        await self._launch(0)
        self._supervisor = asyncio.create_task(self._supervise(), name="opencode-supervisor")

    async def wait_ready(self, timeout: float | None = None) -> str:
        """Wait until the child is serving; return its base URL.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``ManagedOpenCodeError`` if the
        process is (or gets) stopped.
        """
        ready = asyncio.create_task(self._ready.wait())
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            stopped.cancel()
        if self._stopped.is_set():
            raise ManagedOpenCodeError("opencode was stopped")
        if not done:
            raise TimeoutError(f"opencode not ready within {timeout} s")
        return self.base_url

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop supervising and terminate the child's process group. Idempotent."""
        self._stopping = True
        self._ready.clear()
        self._stopped.set()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        child, self._child = self._child, None
        if child is not None:
            await _terminate(child.proc, timeout)
            await _finish_pumps(child.pumps)
            logger.info("opencode (pid %d) stopped", child.pid)

    async def __aenter__(self) -> ManagedOpenCode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- spawning

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._extra_env)
        if self._data_dir is not None:
            env["XDG_DATA_HOME"] = str(self._ensure_dir(self._data_dir / "data"))
            env["XDG_STATE_HOME"] = str(self._ensure_dir(self._data_dir / "state"))
        env["OPENCODE_SERVER_USERNAME"] = self._username
        env["OPENCODE_SERVER_PASSWORD"] = self._password
        return env

    @staticmethod
    def _ensure_dir(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _spawn(self, port: int) -> _Child:
        args = ["serve", "--hostname", "127.0.0.1", "--port", str(port)]
        try:
            proc = await asyncio.create_subprocess_exec(
                self._binary,
                *args,
                cwd=self._workspace,
                env=self._child_env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=_STREAM_LIMIT,
            )
        except OSError as exc:
            raise OpenCodeStartupError(f"could not execute {self._binary!r}: {exc}") from exc
        child = _Child(proc=proc, listening=asyncio.get_running_loop().create_future())
        assert proc.stdout is not None and proc.stderr is not None
        child.pumps = [
            asyncio.create_task(_pump(child, proc.stdout, "stdout", self._password)),
            asyncio.create_task(_pump(child, proc.stderr, "stderr", self._password)),
        ]
        logger.info("started opencode (pid %d): %s %s", proc.pid, self._binary, " ".join(args))
        return child

    async def _launch(self, port: int) -> None:
        """Spawn a child on ``port`` and wait until it is ready; install it as current."""
        child = await self._spawn(port)
        deadline = asyncio.get_running_loop().time() + self._startup_timeout
        try:
            url = await self._await_listening(child, deadline)
            await self._await_healthy(child, url, deadline)
        except _StartupFailed as exc:
            await self._discard(child)
            raise OpenCodeStartupError(
                f"{exc}\n--- last opencode output ---\n{child.tail_text()}"
            ) from None
        except BaseException:
            await self._discard(child)
            raise
        self._install(child, url)

    def _install(self, child: _Child, url: str) -> None:
        self._child = child
        self._base_url = url
        self._ready_since = asyncio.get_running_loop().time()
        self._ready.set()
        logger.info("opencode (pid %d) ready at %s", child.pid, url)

    async def _discard(self, child: _Child) -> None:
        _signal_group(child.proc, signal.SIGKILL)
        await _wait_exit(child.proc, 5.0)
        await _finish_pumps(child.pumps)

    # ----------------------------------------------------------------- readiness

    def _remaining(self, deadline: float) -> float:
        return deadline - asyncio.get_running_loop().time()

    def _exit_message(self, child: _Child, what: str) -> str:
        return f"opencode (pid {child.pid}) exited with code {child.proc.returncode} {what}"

    async def _await_listening(self, child: _Child, deadline: float) -> str:
        exited = asyncio.create_task(_wait_returncode(child.proc))
        waiters: set[asyncio.Future[Any]] = {child.listening, exited}
        try:
            await asyncio.wait(
                waiters,
                timeout=max(self._remaining(deadline), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            exited.cancel()
        if child.listening.done():
            return child.listening.result()
        if child.proc.returncode is not None:
            await _finish_pumps(child.pumps)
            raise _StartupFailed(self._exit_message(child, "before it started listening"))
        raise _StartupFailed(
            f"opencode (pid {child.pid}) printed no 'listening' line "
            f"within {self._startup_timeout} s"
        )

    async def _await_healthy(self, child: _Child, url: str, deadline: float) -> None:
        async with httpx.AsyncClient(
            base_url=url, auth=self.auth, timeout=_PROBE_TIMEOUT, trust_env=False
        ) as client:
            last_error = "no probe attempted"
            while self._remaining(deadline) > 0:
                if child.proc.returncode is not None:
                    raise _StartupFailed(self._exit_message(child, "before it became healthy"))
                last_error = await self._probe_once(client, deadline)
                if not last_error:
                    return
                await asyncio.sleep(min(_PROBE_INTERVAL, max(self._remaining(deadline), 0)))
        raise _StartupFailed(
            f"opencode at {url} not healthy within {self._startup_timeout} s "
            f"(last probe: {last_error})"
        )

    async def _probe_once(self, client: httpx.AsyncClient, deadline: float) -> str:
        """One bounded health probe; returns "" when healthy, else a description."""
        budget = min(_PROBE_TIMEOUT, max(self._remaining(deadline), 0.05))
        try:
            response = await asyncio.wait_for(client.get(HEALTH_PATH), budget + 0.5)
        except (httpx.HTTPError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}".rstrip(": ")
        if _is_healthy(response):
            return ""
        return f"HTTP {response.status_code}"

    # ----------------------------------------------------------------- supervision

    async def _supervise(self) -> None:
        while not self._stopping:
            child = self._child
            if child is None:
                return
            code = await _wait_returncode(child.proc)
            if self._stopping:
                return
            self._ready.clear()
            _signal_group(child.proc, signal.SIGKILL)  # reap orphans still holding the pipes
            await _finish_pumps(child.pumps)
            self._note_crash(child, code)
            await self._restart_until_ready()

    def _note_crash(self, child: _Child, code: int) -> None:
        uptime = asyncio.get_running_loop().time() - self._ready_since
        if uptime >= self._stable_after:
            self._next_backoff = self._initial_backoff
        logger.warning(
            "opencode (pid %d) exited unexpectedly with code %s after %.1f s; "
            "restarting in %.1f s. Last output:\n%s",
            child.pid,
            code,
            uptime,
            self._next_backoff,
            child.tail_text(),
        )

    def _take_backoff(self) -> float:
        delay = self._next_backoff
        self._next_backoff = min(delay * 2, self._max_backoff)
        return delay

    async def _restart_until_ready(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._take_backoff())
            try:
                await self._relaunch()
            except ManagedOpenCodeError as exc:
                logger.warning(
                    "restarting opencode failed; retrying in %.1f s: %s", self._next_backoff, exc
                )
                continue
            self.restart_count += 1
            await self._notify_restart()
            return

    async def _relaunch(self) -> None:
        """Restart on the previous port if possible, else on a free one."""
        old_port = urlsplit(self._base_url or "").port
        if old_port:
            try:
                await self._launch(old_port)
                return
            except OpenCodeStartupError as exc:
                first_line = str(exc).splitlines()[0]
                logger.warning(
                    "could not restart opencode on port %d (%s); trying a free port",
                    old_port,
                    first_line,
                )
        await self._launch(0)

    async def _notify_restart(self) -> None:
        callback = self.on_restart
        if callback is None or self._base_url is None:
            return
        try:
            await callback(self._base_url)
        except Exception:
            logger.exception("on_restart callback failed")
