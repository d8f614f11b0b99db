"""`opencode-a2a-server call` against the real stack: plain runs, --json, asks at a terminal."""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import httpx
import pytest

from opencode_a2a_server.testing.stack import AdapterProcess

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CALL = [sys.executable, "-m", "opencode_a2a_server.cli", "call"]
TOKEN_VARIABLES = ("A2A_TOKEN", "A2A_BEARER_TOKEN")


def client_env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
    if token is not None:
        env["A2A_TOKEN"] = token
    return env


def run_call(
    adapter: AdapterProcess, *args: str, token: str | None = "adapter"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CALL, adapter.url, *args],
        env=client_env(adapter.token if token == "adapter" else token),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Terminal:
    """The call command on a pseudo-terminal: read what it shows, type answers."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            # The terminal becomes the child's controlling terminal, so ^C sends SIGINT.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.raw = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.raw).replace("\r", "")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.raw += self._decoder.decode(data)
        return True

    def expect(self, pattern: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.screen):
            if time.monotonic() > deadline or (
                not self._read(0.2) and self.proc.poll() is not None
            ):
                raise AssertionError(f"never saw {pattern!r}; screen:\n{self.screen}")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            pass
        code = self.proc.wait(max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def terminal(adapter: AdapterProcess, tmp_path: Path):
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        term = Terminal([*CALL, adapter.url, *args], client_env(adapter.token), tmp_path)
        started.append(term)
        return term

    yield start
    for term in started:
        term.kill()


@pytest.mark.parametrize(("protocol", "transport"), [("1.0", "jsonrpc"), ("0.3", "http-json")])
def test_plain_call_prints_the_answer_once(
    adapter: AdapterProcess, protocol: str, transport: str
) -> None:
    result = run_call(adapter, "hello", "--protocol", protocol, "--transport", transport)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Hello from fake LLM. You said: hello") == 1
    assert result.stdout == "Hello from fake LLM. You said: hello\n"
    assert "\x1b[" not in result.stdout  # no colours when stdout is not a terminal


def test_json_lines_end_completed(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "--json", "[[reason]] hello json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert "task" in events[0]
    statuses = [e["statusUpdate"]["status"]["state"] for e in events if "statusUpdate" in e]
    assert statuses[-1] == "TASK_STATE_COMPLETED"
    blocks = {
        e["artifactUpdate"]["artifact"]["metadata"]["shared"]["stream"]["block_type"]
        for e in events
        if "artifactUpdate" in e
    }
    assert blocks == {"text", "reasoning"}


def test_tools_and_reasoning_are_rendered(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "[[reason]] [[bash:echo rendered-tool]] go")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Thinking about it step by step." in lines
    assert "⚙ bash running: echo rendered-tool" in lines
    assert "✓ bash: rendered-tool" in lines
    assert result.stdout.count("Tool finished. Result: rendered-tool") == 1


def test_permission_answered_at_the_prompt(terminal) -> None:
    marker = uuid.uuid4().hex[:6]
    term = terminal(f"[[bash:echo from-call-{marker}]]", "--directory", "ask")
    term.expect(r"Permission needed: bash")
    term.expect(r"\[o\]nce / \[a\]lways / \[r\]eject.*: $")
    assert f"command: echo from-call-{marker}" in term.screen
    term.type("o\n")
    code = term.wait()
    screen = term.screen
    assert code == 0, screen
    assert f"✓ bash: from-call-{marker}" in screen
    assert screen.count(f"Tool finished. Result: from-call-{marker}") == 1


def test_question_answered_by_number(terminal) -> None:
    term = terminal("[[question]] pick by number")
    term.expect(r"Which color do you prefer\?")
    term.expect(r"1\. Red")
    term.expect(r"Pick a number 1-2.*: $")
    term.type("2\n")
    code = term.wait()
    screen = term.screen
    assert code == 0, screen
    after = screen.split("Pick a number", 1)[1]
    assert "Blue" in after


def test_refused_answer_is_asked_again_and_reject_cancels(terminal) -> None:
    term = terminal("[[bash:echo never]]", "--directory", "ask")
    term.expect(r"\[r\]eject.*: $")
    term.type("maybe\n")
    term.expect(r"'maybe' is not an answer")
    term.type("r\n")
    code = term.wait()
    assert code == 1, term.screen
    assert "task canceled" in term.screen


def test_input_required_without_terminal_exits_3(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "[[bash:echo no-tty]]", "--directory", "ask")
    assert result.returncode == 3, result.stderr
    assert "Permission needed: bash" in result.stderr
    context = re.search(r"--context (\S+) --task (\S+)", result.stderr)
    assert context is not None
    answer = run_call(adapter, "--context", context.group(1), "--task", context.group(2), "once")
    assert answer.returncode == 0, answer.stderr
    assert "✓ bash: no-tty" in answer.stdout
    assert answer.stdout.count("Tool finished. Result: no-tty") == 1


def test_json_input_required_exits_3(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "--json", "[[question]] json ask")
    assert result.returncode == 3
    last = json.loads(result.stdout.splitlines()[-1])
    # The last event is the input-required status, or the Task snapshot of a stream
    # the client re-opened to follow the task.
    event = last.get("statusUpdate") or last.get("task")
    assert event is not None, result.stdout.splitlines()[-3:]
    status = event["status"]
    assert status["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert "Which color do you prefer?" in result.stderr


def test_missing_token_names_a2a_token(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "hello", token=None)
    assert result.returncode == 2
    assert "A2A_TOKEN" in result.stderr
    assert result.stdout == ""


def test_wrong_token_is_a_usage_error(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "hello", token="not-the-token")
    assert result.returncode == 2
    assert "HTTP 401" in result.stderr and "A2A_TOKEN" in result.stderr


def test_bad_directory_is_refused_with_exit_2(adapter: AdapterProcess) -> None:
    result = run_call(adapter, "hello", "--directory", "/etc")
    assert result.returncode == 2
    assert "outside the workspace root" in result.stderr


def test_ctrl_c_cancels_the_task(adapter: AdapterProcess, terminal) -> None:
    term = terminal("[[slow:80:0.25]] slow one")
    term.expect(r"word3\b")
    term.type("\x03")
    code = term.wait()
    assert code == 130, term.screen
    found = re.search(r"canceling task (\S+)", term.screen)
    assert found is not None, term.screen
    task = httpx.get(
        f"{adapter.url}/tasks/{found.group(1)}",
        headers={"Authorization": f"Bearer {adapter.token}", "A2A-Version": "1.0"},
        timeout=30,
    ).json()
    assert task["status"]["state"] == "TASK_STATE_CANCELED"
