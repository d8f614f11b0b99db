"""Measuring clients: OpenCode directly, and A2A 1.0 streaming (JSON-RPC and HTTP+JSON).

Every client does the whole work a real client does for one turn on a new context:

- direct: `POST /session` (with a title, as the adapter sends one), then
  `POST /session/{id}/prompt_async`, then it reads the streamed text from ONE shared,
  long-lived `/event?directory=` subscription (demultiplexed by sessionID, opened
  before any turn) until `session.idle` for that session;
- A2A: one `SendStreamingMessage` (JSON-RPC, `POST /`) or `POST /message:stream`
  (HTTP+JSON) without a contextId, read until the final task status.

Two times are taken for each turn, from just before the first request:

- `text_s`: the first moment the text the client holds equals the expected answer
  exactly (the "time to last text");
- `end_s`: the moment the client is told the turn is over (direct: `session.idle`;
  A2A: the terminal status update).

`complete` is True when the text the client holds when the turn is over equals the
expected answer exactly (A2A: after applying append/replace semantics of the artifact
updates, so the final snapshot counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from opencode_a2a_server.testing.scripted_model import (
    WORDS_PER_CHUNK,
    group_chunks,
    numbered_words,
)
from opencode_a2a_server.upstream.events import parse_sse

TURN_TIMEOUT = 600.0
TERMINAL = {
    "TASK_STATE_COMPLETED",
    "TASK_STATE_FAILED",
    "TASK_STATE_CANCELED",
    "TASK_STATE_REJECTED",
    "TASK_STATE_AUTH_REQUIRED",
    "TASK_STATE_INPUT_REQUIRED",
}


# --------------------------------------------------------------------------- prompts


def trivial_prompt(i: int) -> tuple[str, str]:
    """A trivial prompt and the scripted model's exact answer to it."""
    prompt = f"ping {i}"
    return prompt, f"Hello from fake LLM. You said: {prompt}"


def words_prompt(count: int) -> tuple[str, str]:
    """`[[words:N]]` and its exact answer: `w0 w1 … w{N-1}` (streamed 5 words a chunk)."""
    return f"[[words:{count}]]", "".join(group_chunks(numbered_words("w", count), WORDS_PER_CHUNK))


# --------------------------------------------------------------------------- results


@dataclass
class TurnResult:
    ok: bool = False
    complete: bool = False
    text_s: float | None = None
    end_s: float | None = None
    state: str = ""
    error: str = ""
    text_len: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tracker:
    """Times the moment the held text first equals the expected text."""

    def __init__(self, expected: str, t0: float) -> None:
        self.expected = expected
        self.t0 = t0
        self.result = TurnResult()

    def check(self, text_len: int, text: Any) -> None:
        if self.result.text_s is None and text_len == len(self.expected):
            if (text() if callable(text) else text) == self.expected:
                self.result.text_s = time.perf_counter() - self.t0

    def end(self, text: str, state: str) -> TurnResult:
        r = self.result
        r.end_s = time.perf_counter() - self.t0
        r.state = state
        r.text_len = len(text)
        r.complete = text == self.expected
        r.ok = r.complete and state in ("idle", "TASK_STATE_COMPLETED")
        if r.complete and r.text_s is None:
            r.text_s = r.end_s
        if not r.complete and not r.error:
            r.error = f"text mismatch: got {len(text)} chars, expected {len(self.expected)}"
        return r


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The decoded events of an SSE response, split on the raw bytes as they arrive.

    The adapter's own parser (the cheapest correct reading of an SSE stream in Python),
    so neither client's parsing slows what it measures more than the other's.
    """
    async for event in parse_sse(response.content.iter_any()):
        yield event


def _session(max_connections: int, headers: dict[str, str]) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers=headers,
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )


# --------------------------------------------------------------------------- direct


@dataclass
class _DirectTurn:
    tracker: _Tracker
    roles: dict[str, str] = field(default_factory=dict)
    parts: dict[str, list[str]] = field(default_factory=dict)  # partID -> chunks
    order: list[tuple[str, str]] = field(default_factory=list)  # (messageID, partID)
    length: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: dict[str, Any] | None = None
    events: int = 0

    def text(self) -> str:
        by_message: dict[str, list[str]] = {}
        for message_id, part_id in self.order:
            if self.roles.get(message_id) == "assistant":
                by_message.setdefault(message_id, []).append("".join(self.parts[part_id]))
        return "\n\n".join("".join(chunks) for chunks in by_message.values())


class DirectClient:
    """OpenCode's own API, with one shared event subscription for all turns."""

    watch_all = False  # decode every event, not only while a turn of this client runs

    def __init__(
        self,
        base_url: str,
        auth: tuple[str, str],
        directory: str,
        model: dict[str, str],
        *,
        max_connections: int = 200,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": aiohttp.BasicAuth(*auth).encode()}
        self._max_connections = max_connections
        self.http: aiohttp.ClientSession | None = None
        self.directory = directory
        self.model = model
        self._turns: dict[str, _DirectTurn] = {}
        self._connected = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.http = _session(self._max_connections, self._auth)
        self._pump = asyncio.create_task(self._run(), name="direct-events")
        await asyncio.wait_for(self._connected.wait(), 30)

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.http is not None:
            await self.http.close()

    async def _run(self) -> None:
        assert self.http is not None
        params = {"directory": self.directory}
        async with self.http.get(f"{self.base_url}/event", params=params) as response:
            response.raise_for_status()
            async for event in sse_events(response):
                if not self._connected.is_set():
                    self._connected.set()
                if self._turns or self.watch_all:  # nothing to route when no turn runs
                    self._dispatch(event)
        for turn in self._turns.values():
            turn.error = {"name": "stream closed"}
            turn.done.set()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        assert self.http is not None
        params = {"directory": self.directory}
        async with self.http.post(self.base_url + path, params=params, json=body) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    def _dispatch(self, event: dict[str, Any]) -> None:
        event = event.get("payload", event)
        props = event.get("properties") or {}
        turn = self._turns.get(props.get("sessionID"))
        if turn is None:
            return
        turn.events += 1
        kind = event.get("type")
        if kind == "message.part.delta":
            if props.get("field") != "text":
                return
            message_id, part_id = props.get("messageID"), props.get("partID")
            if turn.roles.get(message_id) != "assistant":
                return
            chunks = turn.parts.get(part_id)
            if chunks is None:
                chunks = turn.parts[part_id] = []
                turn.order.append((message_id, part_id))
            delta = props.get("delta") or ""
            chunks.append(delta)
            turn.length += len(delta)
            turn.tracker.check(turn.length, turn.text)
        elif kind == "message.part.updated":
            part = props.get("part") or {}
            message_id, part_id = part.get("messageID"), part.get("id")
            if part.get("type") != "text" or turn.roles.get(message_id) != "assistant":
                return
            if part.get("synthetic") or part.get("ignored"):
                return
            text = part.get("text") or ""
            old = turn.parts.get(part_id)
            if old is None:
                turn.order.append((message_id, part_id))
            elif text == "" or len(text) < sum(len(c) for c in old):
                return
            turn.parts[part_id] = [text]
            turn.length = sum(len("".join(turn.parts[p])) for _, p in turn.order)
            turn.tracker.check(turn.length, turn.text)
        elif kind == "message.updated":
            info = props.get("info") or {}
            turn.roles[info.get("id")] = info.get("role")
        elif kind == "session.error":
            turn.error = props.get("error") or {}
        elif kind == "session.idle":
            turn.done.set()

    async def turn(self, prompt: str, expected: str) -> TurnResult:
        t0 = time.perf_counter()
        tracker = _Tracker(expected, t0)
        session_id = None
        try:
            session_id = (await self._post("/session", {"title": prompt[:80]}))["id"]
            turn = self._turns[session_id] = _DirectTurn(tracker)
            body = {"parts": [{"type": "text", "text": prompt}], "model": self.model}
            await self._post(f"/session/{session_id}/prompt_async", body)
            await asyncio.wait_for(turn.done.wait(), TURN_TIMEOUT)
            result = tracker.end(turn.text(), "idle" if turn.error is None else "error")
            result.events = turn.events
            if turn.error is not None:
                result.ok = False
                result.error = json.dumps(turn.error)[:300]
            return result
        except Exception as exc:
            result = tracker.end("", "exception")
            result.error = f"{type(exc).__name__}: {exc}"[:300]
            return result
        finally:
            if session_id is not None:
                self._turns.pop(session_id, None)


# --------------------------------------------------------------------------- A2A


class A2AClient:
    """A2A 1.0 streaming over JSON-RPC (`POST /`) or HTTP+JSON (`POST /message:stream`)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        binding: str,
        *,
        extensions: str | None = None,
        max_connections: int = 200,
    ) -> None:
        if binding not in ("jsonrpc", "rest"):
            raise ValueError(binding)
        headers = {
            "Authorization": f"Bearer {token}",
            "A2A-Version": "1.0",
            "Accept": "text/event-stream",
        }
        if extensions:
            headers["A2A-Extensions"] = extensions
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None
        self.binding = binding
        self._ids = 0

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:  # made inside the running loop, as aiohttp wants
            self._http = _session(self._max_connections, self._headers)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        message = {
            "messageId": str(uuid.uuid4()),
            "role": "ROLE_USER",
            "parts": [{"text": prompt}],
        }
        if self.binding == "rest":
            return "/message:stream", {"message": message}
        self._ids += 1
        return "/", {
            "jsonrpc": "2.0",
            "id": self._ids,
            "method": "SendStreamingMessage",
            "params": {"message": message},
        }

    async def turn(self, prompt: str, expected: str) -> TurnResult:
        t0 = time.perf_counter()
        tracker = _Tracker(expected, t0)
        path, body = self._request(prompt)
        texts: dict[str, str] = {}  # text artifact id -> text held (in arrival order)
        state = ""
        events = 0
        try:
            async with asyncio.timeout(TURN_TIMEOUT):
                async with self.http.post(self.base_url + path, json=body) as response:
                    if response.status != 200:
                        text = await response.text()
                        raise RuntimeError(f"HTTP {response.status}: {text[:200]}")
                    async for event in sse_events(response):
                        events += 1
                        state = self._apply(event, texts, tracker) or state
                        if state in TERMINAL:
                            break
            text = "".join(texts.values())
            result = tracker.end(text, state or "no final status")
            result.events = events
            if state != "TASK_STATE_COMPLETED" and not result.error:
                result.error = f"final state {state or 'missing'}"
            return result
        except Exception as exc:
            result = tracker.end("".join(texts.values()), state or "exception")
            result.ok = False
            result.events = events
            result.error = f"{type(exc).__name__}: {exc}"[:300]
            return result

    def _apply(self, event: dict[str, Any], texts: dict[str, str], tracker: _Tracker) -> str:
        if "jsonrpc" in event:
            if "error" in event:
                raise RuntimeError(f"JSON-RPC error {json.dumps(event['error'])[:200]}")
            event = event.get("result") or {}
        if "statusUpdate" in event:
            return str(event["statusUpdate"].get("status", {}).get("state", ""))
        if "task" in event:
            return str(event["task"].get("status", {}).get("state", ""))
        update = event.get("artifactUpdate")
        if update is None:
            return ""
        artifact = update.get("artifact") or {}
        if not _is_text_artifact(artifact):
            return ""
        artifact_id = str(artifact.get("artifactId"))
        chunk = "".join(str(p.get("text", "")) for p in artifact.get("parts") or [])
        if update.get("append") and artifact_id in texts:
            texts[artifact_id] += chunk
        else:
            texts[artifact_id] = chunk
        total = sum(len(t) for t in texts.values())
        tracker.check(total, lambda: "".join(texts.values()))
        return ""


def _is_text_artifact(artifact: dict[str, Any]) -> bool:
    stream = ((artifact.get("metadata") or {}).get("shared") or {}).get("stream") or {}
    block = stream.get("block_type")
    if block is not None:
        return bool(block == "text")
    artifact_id = str(artifact.get("artifactId", ""))
    return artifact_id.endswith((":response", ":stream:text"))
