"""The scripted model driving a real ``opencode serve`` (opencode-ai 1.18.33)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencode_a2a_server.testing.scripted_model import (
    REASONING_TEXT,
    ScriptedModelServer,
    write_opencode_config,
)
from opencode_a2a_server.upstream.process import find_opencode_binary

pytestmark = pytest.mark.e2e

OPENCODE_BIN = Path(find_opencode_binary(os.environ.get("OPENCODE_BIN")))
LISTENING = re.compile(r"opencode server listening on http://([\w.\-]+):(\d+)")
Event = dict[str, Any]
Turn = tuple[httpx.AsyncClient, "EventStream", str]


@dataclass
class OpenCode:
    """A running ``opencode serve`` bound to one workspace."""

    base_url: str
    workspace: Path
    model: ScriptedModelServer

    @property
    def params(self) -> dict[str, str]:
        return {"directory": str(self.workspace)}


def _isolated_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATA", "STATE", "CONFIG", "CACHE"):
        env[f"XDG_{name}_HOME"] = str(root / name.lower())
    env["HOME"] = str(root / "home")
    env["OPENCODE_DISABLE_MODELS_FETCH"] = "1"
    env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"
    env.pop("OPENCODE_SERVER_PASSWORD", None)
    return env


def _pump_stdout(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    """Drain stdout forever so the pipe never blocks opencode."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)


def _wait_listening(proc: subprocess.Popen[str], lines: queue.Queue[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if match := LISTENING.search(line):
            return f"http://{match.group(1)}:{match.group(2)}"
    raise RuntimeError(f"opencode did not start; output: {''.join(seen)!r}")


def _wait_healthy(base_url: str, timeout: float) -> None:
    """Probe with short timeouts: opencode accepts TCP before it serves HTTP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/global/health", timeout=1.0).json().get("healthy"):
                return
        time.sleep(0.1)
    raise RuntimeError("opencode never became healthy")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def opencode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenCode]:
    root = tmp_path_factory.mktemp("opencode")
    workspace = root / "ws"
    with ScriptedModelServer() as model:
        write_opencode_config(workspace, model.url)
        cmd = [str(OPENCODE_BIN), "serve", "--hostname", "127.0.0.1", "--port", "0"]
        proc = subprocess.Popen(
            cmd,
            cwd=workspace,
            env=_isolated_env(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump_stdout, args=(proc, lines), daemon=True).start()
        try:
            base_url = _wait_listening(proc, lines, timeout=20)
            _wait_healthy(base_url, timeout=15)
            yield OpenCode(base_url, workspace, model)
        finally:
            _stop(proc)


class EventStream:
    """Collects ``/event`` SSE events in a background task."""

    def __init__(self, client: httpx.AsyncClient, params: dict[str, str]) -> None:
        self.events: list[Event] = []
        self._client = client
        self._params = params
        self._changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        timeout = httpx.Timeout(5.0, read=None)
        async with self._client.stream(
            "GET", "/event", params=self._params, timeout=timeout
        ) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[len("data: ") :]))
                    self._connected.set()
                    self._changed.set()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 60) -> Event:
        """Wait for the first event (old or new) matching ``predicate``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                types = [e["type"] for e in self.events]
                raise AssertionError(f"event not seen; got {types}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def for_session(self, session_id: str, kind: str) -> list[Event]:
        return [
            e
            for e in self.events
            if e["type"] == kind and e["properties"].get("sessionID") == session_id
        ]


@contextlib.asynccontextmanager
async def turn(oc: OpenCode, prompt: str) -> AsyncIterator[Turn]:
    """Create a titled session, subscribe to events, send ``prompt``, wait for idle."""
    async with httpx.AsyncClient(base_url=oc.base_url, timeout=10) as client:
        async with EventStream(client, oc.params) as events:
            created = await client.post("/session", params=oc.params, json={"title": "e2e"})
            session_id = created.json()["id"]
            body = {"parts": [{"type": "text", "text": prompt}]}
            url = f"/session/{session_id}/prompt_async"
            sent = await client.post(url, params=oc.params, json=body)
            assert sent.status_code == 204
            await events.wait_for(
                lambda e: (
                    e["type"] == "session.idle" and e["properties"].get("sessionID") == session_id
                ),
                timeout=15,
            )
            yield client, events, session_id


async def messages(client: httpx.AsyncClient, oc: OpenCode, session_id: str) -> list[Event]:
    response = await client.get(f"/session/{session_id}/message", params=oc.params)
    return response.json()


def parts_of(msgs: list[Event], kind: str) -> list[Event]:
    assistant = [m for m in msgs if m["info"]["role"] == "assistant"]
    return [p for m in assistant for p in m["parts"] if p["type"] == kind]


async def test_plain_text_turn(opencode: OpenCode) -> None:
    async with turn(opencode, "hello") as (client, events, session_id):
        text_deltas = [
            e["properties"]["delta"]
            for e in events.for_session(session_id, "message.part.delta")
            if e["properties"]["field"] == "text"
        ]
        assert len(text_deltas) > 1
        assert "".join(text_deltas) == "Hello from fake LLM. You said: hello"
        msgs = await messages(client, opencode, session_id)
    assistant = msgs[-1]["info"]
    assert assistant["finish"] == "stop"
    assert (assistant["providerID"], assistant["modelID"]) == ("fake", "fake-1")
    assert assistant["tokens"]["input"] == 10
    assert any(b and b.get("model") == "fake-1" for b in opencode.model.chat_requests)


async def test_bash_tool_turn(opencode: OpenCode) -> None:
    async with turn(opencode, "[[bash:echo hi]]") as (client, events, session_id):
        completed = await events.wait_for(
            lambda e: (
                e["type"] == "message.part.updated"
                and e["properties"]["part"].get("type") == "tool"
                and e["properties"]["part"]["state"]["status"] == "completed"
            )
        )
        msgs = await messages(client, opencode, session_id)
    tool = completed["properties"]["part"]
    assert tool["tool"] == "bash"
    assert tool["state"]["input"]["command"] == "echo hi"
    assert tool["state"]["output"] == "hi\n"
    finishes = [m["info"].get("finish") for m in msgs if m["info"]["role"] == "assistant"]
    assert finishes == ["tool-calls", "stop"]
    assert parts_of(msgs, "text")[-1]["text"] == "Tool finished. Result: hi\n"


async def test_reasoning_turn(opencode: OpenCode) -> None:
    async with turn(opencode, "think [[reason]]") as (client, _events, session_id):
        msgs = await messages(client, opencode, session_id)
    (reasoning,) = parts_of(msgs, "reasoning")
    assert reasoning["text"] == REASONING_TEXT
    assert parts_of(msgs, "text")[-1]["text"] == "Hello from fake LLM. You said: think"
