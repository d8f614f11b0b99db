"""The processes a benchmark run needs, and /proc-based resource accounting.

Scripted model (its own process, so it never shares the measuring client's GIL) ->
one real `opencode serve` -> the adapter (real CLI process) and, optionally, the
reference adapter `opencode-a2a` from PyPI in its own virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from opencode_a2a_server.testing.stack import AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_PACKAGE = "opencode-a2a"
PEER_VERSION = "1.4.0"
PEER_VENV = REPO_ROOT / ".tools" / "peer-venv"
PEER_EXTENSIONS = "urn:opencode-a2a:extension:stream-hints:v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- helpers


def _wait_http(url: str, *, headers: dict[str, str] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, headers=headers, timeout=2)
            if response.status_code < 500:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:g} s ({last})")


def _stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- scripted model


class ModelProcess:
    """`python -m opencode_a2a_server.testing.scripted_model` as a child process."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ModelProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "opencode_a2a_server.testing.scripted_model",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(f"{self.url}/models", timeout=30)
        return self

    def stop(self) -> None:
        _stop_group(self.proc)


# --------------------------------------------------------------------------- our adapter


def adapter_env(
    opencode: ManagedOpenCode, *, workspace: Path, db: Path, token: str
) -> dict[str, str]:
    """Configuration of this adapter against the benchmark's OpenCode."""
    return {
        "OPENCODE_BASE_URL": opencode.base_url,
        "OPENCODE_SERVER_USERNAME": opencode.username,
        "OPENCODE_SERVER_PASSWORD": opencode.password,
        "OPENCODE_WORKSPACE_ROOT": str(workspace),
        "OPENCODE_PROVIDER_ID": "fake",
        "OPENCODE_MODEL_ID": "fake-1",
        "A2A_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "A2A_BEARER_TOKEN": token,
        "A2A_LOG_LEVEL": "WARNING",
        "A2A_LOG_PAYLOADS": "false",
    }


class PatchedAdapterProcess(AdapterProcess):
    """The adapter started through bench._traced_adapter (what-if patches, probes)."""

    def start(self, timeout: float = 60.0) -> AdapterProcess:
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._traced_adapter"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout)
        return self


def start_adapter(
    env: dict[str, str], root: Path, experiments: list[str] | None = None
) -> AdapterProcess:
    """The adapter through its real CLI; with `experiments`, through the patching wrapper."""
    if experiments:
        env = {**env, "BENCH_EXPERIMENTS": ",".join(experiments)}
        return PatchedAdapterProcess(env, log_path=root / "adapter.log", cwd=root).start()
    return AdapterProcess(env, log_path=root / "adapter.log", cwd=root).start()


# --------------------------------------------------------------------------- the peer


@dataclass
class PeerProcess:
    """The reference adapter `opencode-a2a serve`, started from its own virtualenv."""

    binary: Path
    env: dict[str, str]
    root: Path
    port: int = field(default_factory=free_port)
    token: str = "peer-bench-token-0123456789abcdef"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "peer.log"

    def start(self, timeout: float = 60.0) -> PeerProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("A2A_", "OPENCODE_"))},
            **self.env,
            "A2A_PORT": str(self.port),
            "A2A_HOST": "127.0.0.1",
            "A2A_PUBLIC_URL": self.url,
            "A2A_STATIC_AUTH_CREDENTIALS": json.dumps(
                [{"scheme": "bearer", "token": self.token, "principal": "bench"}]
            ),
        }
        env.pop("VIRTUAL_ENV", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve"],
                env=env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"peer exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", headers=headers, timeout=2).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"peer not ready after {timeout:g} s: {self.tail()}")

    def tail(self) -> str:
        return _tail(self.log_path)

    def stop(self) -> None:
        _stop_group(self.proc)


def peer_env(
    *, base_url: str, username: str, password: str, workspace: Path, db: Path
) -> dict[str, str]:
    """Configuration of the reference adapter against the same OpenCode.

    Its rate limiter (on by default: 120 requests/60 s) is switched off, and its
    upstream concurrency budgets (32 requests, 8 event streams; fast-fail) are lifted,
    so that 50 concurrent turns can run at all.
    """
    return {
        "OPENCODE_BASE_URL": base_url,
        "OPENCODE_AUTH_USERNAME": username,
        "OPENCODE_AUTH_PASSWORD": password,
        "OPENCODE_WORKSPACE_ROOT": str(workspace),
        "A2A_TASK_STORE_BACKEND": "database",
        "A2A_TASK_STORE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "A2A_RATE_LIMIT_ENABLED": "false",
        "OPENCODE_MAX_CONCURRENT_REQUESTS": "0",
        "OPENCODE_MAX_CONCURRENT_STREAMS": "0",
        "A2A_LOG_LEVEL": "WARNING",
        "A2A_METRICS_ENABLED": "false",
    }


def install_peer(log: Path) -> Path:
    """Install `opencode-a2a==1.4.0` into .tools/peer-venv (once); return its CLI path."""
    binary = PEER_VENV / "bin" / "opencode-a2a"
    python = PEER_VENV / "bin" / "python"
    if binary.exists() and _peer_version(python) == PEER_VERSION:
        return binary
    with log.open("ab") as out:
        if not python.exists():
            uv = shutil.which("uv")
            command = (
                [uv, "venv", "-q", "--python", sys.executable, str(PEER_VENV)]
                if uv
                else [sys.executable, "-m", "venv", str(PEER_VENV)]
            )
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT)
        uv = shutil.which("uv")
        spec = f"{PEER_PACKAGE}=={PEER_VERSION}"
        if uv:
            command = [uv, "pip", "install", "-q", "--python", str(python), spec]
        else:
            command = [str(python), "-m", "pip", "install", "-q", spec]
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    if _peer_version(python) != PEER_VERSION:
        raise RuntimeError(f"{spec} did not install (see {log})")
    return binary


def _peer_version(python: Path) -> str | None:
    if not python.exists():
        return None
    result = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('opencode-a2a'))",
        ],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


# --------------------------------------------------------------------------- /proc accounting


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (via /proc/<pid>/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(child) for child in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants."""
    total = 0
    for one in _tree(pid):
        try:
            with open(f"/proc/{one}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its descendants."""
    total = 0
    for one in _tree(pid):
        try:
            with open(f"/proc/{one}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE_SIZE
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (Linux: write 5 to /proc/<pid>/clear_refs); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class ResourceMonitor:
    """CPU seconds and peak RSS of one process (tree) over a measured interval.

    RSS is sampled every `interval` seconds from a thread; the kernel's own peak
    (VmHWM, reset at start) is read too, so a spike between samples is not missed.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_sampled = 0
        self.samples = 0
        self.cpu_start = 0.0
        self.cpu = 0.0
        self.rss_start = 0
        self.hwm_reset = False
        self.peak_hwm: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ResourceMonitor:
        self.hwm_reset = reset_peak_rss(self.pid)
        self.rss_start = rss_bytes(self.pid)
        self.peak_sampled = self.rss_start
        self.cpu_start = cpu_seconds(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_sampled = max(self.peak_sampled, rss_bytes(self.pid))
            self.samples += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_sampled = max(self.peak_sampled, rss_bytes(self.pid))
        self.cpu = cpu_seconds(self.pid) - self.cpu_start
        hwm = _status_kib(self.pid, "VmHWM")
        if self.hwm_reset and hwm is not None:
            self.peak_hwm = hwm * 1024

    @property
    def peak(self) -> int:
        return max(self.peak_sampled, self.peak_hwm or 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "cpu_seconds": round(self.cpu, 3),
            "rss_start_mb": round(self.rss_start / 2**20, 1),
            "peak_rss_mb": round(self.peak / 2**20, 1),
            "peak_rss_sampled_mb": round(self.peak_sampled / 2**20, 1),
            "peak_rss_vmhwm_mb": (round(self.peak_hwm / 2**20, 1) if self.peak_hwm else None),
            "samples": self.samples,
        }
