"""Deterministic, scriptable OpenAI-compatible chat-completions server.

Used as the LLM of a real ``opencode serve`` in tests, demos and benchmarks. Behaviour is
chosen by ``[[directive]]`` markers in the latest user message (see :func:`parse_directives`).

Run standalone: ``python -m opencode_a2a_server.testing.scripted_model --port 18100``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "Directive",
    "Reply",
    "ScriptedModelServer",
    "ScriptedState",
    "build_reply",
    "create_app",
    "main",
    "parse_directives",
    "write_opencode_config",
]

MODEL_IDS = ("fake-1", "fake-2")
DEFAULT_SLOW_DELAY = 0.25
WORDS_PER_CHUNK = 5
PROMPT_TOKENS = 10
TITLE_TEXT = "Fake title"
REASONING_TEXT = "Thinking about it step by step."
TOOL_INTRO_TEXT = "Running tool. "
MIDSTREAM_CHUNKS = ("partial ", "answer ", "before ", "failure ")
MIDSTREAM_ERROR = {
    "message": "upstream exploded mid-stream (fake)",
    "type": "server_error",
    "code": "500",
}
QUESTION_ARGS: dict[str, Any] = {
    "questions": [
        {
            "question": "Which color do you prefer?",
            "header": "Color",
            "options": [
                {"label": "Red", "description": "warm"},
                {"label": "Blue", "description": "cool"},
            ],
            "multiple": False,
        }
    ]
}
ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Bad request (fake)", "invalid_request_error", "bad_request"),
    401: ("Incorrect API key provided (fake)", "invalid_request_error", "invalid_api_key"),
    403: ("Forbidden (fake)", "invalid_request_error", "forbidden"),
    404: ("Model not found (fake)", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached (fake)", "requests", "rate_limit_exceeded"),
    500: ("Internal server error (fake)", "server_error", "500"),
    502: ("Bad gateway (fake)", "server_error", "502"),
    503: ("Service unavailable (fake)", "server_error", "503"),
}
KNOWN_DIRECTIVES = frozenset(
    {
        "reason",
        "bash",
        "tool",
        "question",
        "slow",
        "words",
        "error",
        "error_once",
        "midstream_error",
    }
)


# --------------------------------------------------------------------------- directives


@dataclass(frozen=True)
class Directive:
    """One parsed ``[[name:arg]]`` marker; ``value`` holds parsed tool JSON arguments."""

    name: str
    arg: str = ""
    value: Any = None


def parse_directives(text: str) -> tuple[list[Directive], str]:
    """Return the directives found in ``text`` and the text with them removed (stripped)."""
    directives: list[Directive] = []
    kept: list[str] = []
    pos = 0
    while (start := text.find("[[", pos)) != -1:
        parsed = _parse_one(text, start)
        if parsed is None:
            kept.append(text[pos : start + 2])
            pos = start + 2
            continue
        directive, end = parsed
        directives.append(directive)
        kept.append(text[pos:start])
        pos = end
    kept.append(text[pos:])
    return directives, re.sub(r"[ \t]{2,}", " ", "".join(kept)).strip()


def _parse_one(text: str, start: int) -> tuple[Directive, int] | None:
    """Parse the directive opening at ``start``; return it and the index after ``]]``."""
    body_start = start + 2
    if text.startswith("tool:", body_start):
        return _parse_tool(text, body_start + len("tool:"))
    end = text.find("]]", body_start)
    if end == -1:
        return None
    name, _, arg = text[body_start:end].partition(":")
    if name.strip() not in KNOWN_DIRECTIVES:
        return None
    return Directive(name.strip(), arg), end + 2


def _parse_tool(text: str, pos: int) -> tuple[Directive, int] | None:
    """Parse ``NAME:{json}]]`` starting at ``pos`` (JSON may contain brackets)."""
    colon = text.find(":", pos)
    if colon == -1:
        return None
    name = text[pos:colon].strip()
    json_start = colon + 1
    while json_start < len(text) and text[json_start].isspace():
        json_start += 1
    try:
        value, json_end = json.JSONDecoder().raw_decode(text, json_start)
    except json.JSONDecodeError:
        return _parse_tool_fallback(text, name, json_start)
    close = _skip_space(text, json_end)
    if not name or not text.startswith("]]", close):
        return _parse_tool_fallback(text, name, json_start)
    return Directive(
        "tool", name, value if isinstance(value, dict) else {"value": value}
    ), close + 2


def _parse_tool_fallback(text: str, name: str, json_start: int) -> tuple[Directive, int] | None:
    """Last resort for malformed tool JSON: take the text up to the last ``}]]``."""
    end = text.rfind("}]]", json_start)
    if not name or end == -1:
        return None
    try:
        value = json.loads(text[json_start : end + 1])
    except json.JSONDecodeError:
        return None
    return Directive("tool", name, value), end + 3


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


# --------------------------------------------------------------------------- messages


def content_text(content: Any) -> str:
    """Join the text of an OpenAI message ``content`` (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return str(content)


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return part["text"]
    return ""


def latest_user_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last message with role ``user`` ("" if none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def trailing_tool_outputs(messages: list[dict[str, Any]]) -> list[str]:
    """Outputs of the consecutive ``tool`` messages at the end of the conversation."""
    outputs: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        outputs.append(content_text(message.get("content")))
    return outputs[::-1]


def is_title_request(body: dict[str, Any]) -> bool:
    """True for OpenCode's title-generation call (title system prompt, no tools)."""
    if body.get("tools"):
        return False
    for message in body.get("messages") or []:
        text = content_text(message.get("content")).lower()
        if message.get("role") == "system" and "title generator" in text:
            return True
        if message.get("role") == "user" and text.lstrip().startswith("generate a title"):
            return True
    return False


# --------------------------------------------------------------------------- replies


@dataclass
class ToolCall:
    """A tool call the model makes."""

    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    """What the model answers; rendered as SSE chunks or one JSON completion."""

    text_chunks: list[str] = field(default_factory=list)
    reasoning_chunks: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    delay: float = 0.0
    midstream_error: bool = False
    error_status: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_chunks)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_chunks)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def usage(self) -> dict[str, int]:
        """Fake usage: 10 prompt tokens, one completion token per word."""
        words = len(self.text.split()) + len(self.reasoning.split())
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": words,
            "total_tokens": PROMPT_TOKENS + words,
        }


def word_chunks(text: str) -> list[str]:
    """Split into one chunk per word, keeping the whitespace after each word."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def numbered_words(prefix: str, count: int) -> list[str]:
    """``prefix0 prefix1 ...`` as words, each but the last followed by a space."""
    return [f"{prefix}{i}" + (" " if i < count - 1 else "") for i in range(count)]


def group_chunks(words: list[str], size: int) -> list[str]:
    """Concatenate consecutive chunks ``size`` at a time."""
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


class ScriptedState:
    """Shared mutable state: recorded requests and the ``error_once`` memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._failed_once: set[str] = set()
        self._call_ids = itertools.count(1)
        self._completion_ids = itertools.count(1)

    def record(self, method: str, path: str, body: Any, query: str = "") -> dict[str, Any]:
        """Store one received request and return its (mutable) record."""
        entry = {
            "method": method,
            "path": path,
            "query": query,
            "body": body,
            "time": time.time(),
            "completed": False,
        }
        with self._lock:
            self._requests.append(entry)
        return entry

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Forget requests and which ``error_once`` prompts already failed."""
        with self._lock:
            self._requests.clear()
            self._failed_once.clear()

    def first_failure(self, key: str) -> bool:
        """True the first time ``key`` is seen (then remembers it)."""
        with self._lock:
            if key in self._failed_once:
                return False
            self._failed_once.add(key)
            return True

    def next_call_id(self) -> str:
        return f"call_scripted_{next(self._call_ids):06d}"

    def next_completion_id(self) -> str:
        return f"chatcmpl-scripted-{next(self._completion_ids):06d}"


def build_reply(body: dict[str, Any], state: ScriptedState) -> Reply:
    """Decide the reply for one chat-completions request body."""
    messages = body.get("messages") or []
    if is_title_request(body):
        return Reply(text_chunks=[TITLE_TEXT])
    if messages and messages[-1].get("role") == "tool":
        output = "\n".join(trailing_tool_outputs(messages))
        return Reply(text_chunks=word_chunks(f"Tool finished. Result: {output}"))
    prompt = latest_user_text(messages)
    directives, cleaned = parse_directives(prompt)
    return _reply_for_directives(directives, cleaned, prompt, state)


def _reply_for_directives(
    directives: list[Directive], cleaned: str, prompt: str, state: ScriptedState
) -> Reply:
    reply = Reply()
    for directive in directives:
        _apply_directive(reply, directive, prompt, state)
        if reply.error_status is not None:
            return reply
    if not reply.text_chunks and not reply.midstream_error:
        reply.text_chunks = word_chunks(f"Hello from fake LLM. You said: {cleaned}".strip())
    return reply


def _apply_directive(reply: Reply, directive: Directive, prompt: str, state: ScriptedState) -> None:
    name, arg = directive.name, directive.arg
    if name == "reason":
        reply.reasoning_chunks = word_chunks(REASONING_TEXT)
    elif name == "bash":
        command = arg.strip()
        args = {"command": command, "description": f"run {command}"}
        _add_tool_call(reply, ToolCall("bash", args))
    elif name == "tool":
        _add_tool_call(reply, ToolCall(arg, dict(directive.value or {})))
    elif name == "question":
        _add_tool_call(reply, ToolCall("question", json.loads(json.dumps(QUESTION_ARGS))))
    elif name in ("slow", "words"):
        _apply_words(reply, name, arg)
    elif name == "error":
        reply.error_status = _int(arg, 500)
    elif name == "error_once" and state.first_failure(prompt):
        reply.error_status = _int(arg, 500)
    elif name == "midstream_error":
        reply.midstream_error = True


def _add_tool_call(reply: Reply, call: ToolCall) -> None:
    if not reply.tool_calls and not reply.text_chunks:
        reply.text_chunks = [TOOL_INTRO_TEXT]
    reply.tool_calls.append(call)


def _apply_words(reply: Reply, name: str, arg: str) -> None:
    count_text, _, delay_text = arg.partition(":")
    count = max(_int(count_text, 10), 0)
    if name == "slow":
        reply.text_chunks = numbered_words("word", count)
        reply.delay = _float(delay_text, DEFAULT_SLOW_DELAY)
    else:
        reply.text_chunks = group_chunks(numbered_words("w", count), WORDS_PER_CHUNK)


def _int(text: str, default: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return default


def _float(text: str, default: float) -> float:
    try:
        return max(float(text.strip()), 0.0)
    except ValueError:
        return default


def error_payload(status: int) -> dict[str, Any]:
    """OpenAI-style error body for HTTP ``status``."""
    message, kind, code = ERRORS.get(
        status, (f"HTTP {status} error (fake)", "server_error", str(status))
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


# --------------------------------------------------------------------------- rendering


class ChunkWriter:
    """Builds OpenAI ``chat.completion.chunk`` SSE lines for one completion."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time())

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage is not None:
            payload["usage"] = usage
        return sse(payload)


def sse(payload: Any) -> str:
    """One SSE ``data:`` event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def tool_call_delta(index: int, call_id: str, call: ToolCall) -> dict[str, Any]:
    arguments = json.dumps(call.arguments)
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def stream_events(
    reply: Reply, writer: ChunkWriter, call_ids: list[str], include_usage: bool
) -> Iterator[tuple[str, float]]:
    """Yield ``(sse_text, delay_before)`` pairs for a streamed reply."""
    yield writer.chunk({"role": "assistant", "content": ""}), 0.0
    for piece in reply.reasoning_chunks:
        yield writer.chunk({"reasoning_content": piece}), 0.0
    if reply.midstream_error:
        for piece in MIDSTREAM_CHUNKS:
            yield writer.chunk({"content": piece}), 0.0
        yield sse({"error": MIDSTREAM_ERROR}), 0.0
        return
    for i, piece in enumerate(reply.text_chunks):
        yield writer.chunk({"content": piece}), reply.delay if i else 0.0
    for index, (call, call_id) in enumerate(zip(reply.tool_calls, call_ids, strict=True)):
        yield writer.chunk({"tool_calls": [tool_call_delta(index, call_id, call)]}), 0.0
    usage = reply.usage() if include_usage else None
    yield writer.chunk({}, reply.finish_reason, usage), 0.0
    yield sse("[DONE]"), 0.0


async def _stream_body(
    events: Iterator[tuple[str, float]], record: dict[str, Any]
) -> AsyncIterator[str]:
    for text, delay in events:
        if delay > 0:
            await asyncio.sleep(delay)
        yield text
    record["completed"] = True


def completion_json(reply: Reply, writer: ChunkWriter, call_ids: list[str]) -> dict[str, Any]:
    """Non-streamed ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {key: val for key, val in tool_call_delta(i, cid, call).items() if key != "index"}
            for i, (call, cid) in enumerate(zip(reply.tool_calls, call_ids, strict=True))
        ]
    return {
        "id": writer.completion_id,
        "object": "chat.completion",
        "created": writer.created,
        "model": writer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": reply.usage(),
    }


# --------------------------------------------------------------------------- app


def _state(request: Request) -> ScriptedState:
    return request.app.state.scripted


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``."""
    state = _state(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    record = state.record(request.method, request.url.path, body, request.url.query)
    if not isinstance(body, dict):
        record["completed"] = True
        return JSONResponse(error_payload(400), status_code=400)
    reply = build_reply(body, state)
    return await _respond(reply, body, state, record)


async def _respond(
    reply: Reply, body: dict[str, Any], state: ScriptedState, record: dict[str, Any]
) -> Response:
    if reply.error_status is not None:
        record["completed"] = True
        return JSONResponse(error_payload(reply.error_status), status_code=reply.error_status)
    writer = ChunkWriter(state.next_completion_id(), str(body.get("model") or MODEL_IDS[0]))
    call_ids = [state.next_call_id() for _ in reply.tool_calls]
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = stream_events(reply, writer, call_ids, include_usage)
        return StreamingResponse(
            _stream_body(events, record),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await _respond_json(reply, writer, call_ids, record)


async def _respond_json(
    reply: Reply, writer: ChunkWriter, call_ids: list[str], record: dict[str, Any]
) -> Response:
    if reply.midstream_error:
        record["completed"] = True
        return JSONResponse({"error": MIDSTREAM_ERROR}, status_code=500)
    if reply.delay > 0:
        await asyncio.sleep(reply.delay * max(len(reply.text_chunks) - 1, 0))
    record["completed"] = True
    return JSONResponse(completion_json(reply, writer, call_ids))


async def list_models(request: Request) -> Response:
    """``GET /v1/models``."""
    record = _state(request).record(request.method, request.url.path, None, request.url.query)
    record["completed"] = True
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "scripted"}
        for model in MODEL_IDS
    ]
    return JSONResponse({"object": "list", "data": data})


async def recorded_requests(request: Request) -> Response:
    """``GET`` lists recorded requests, ``DELETE`` clears them."""
    state = _state(request)
    if request.method == "DELETE":
        state.clear_requests()
        return JSONResponse({"cleared": True})
    return JSONResponse(state.requests)


async def reset_state(request: Request) -> Response:
    """``POST /_scripted/reset``: clear requests and ``error_once`` memory."""
    _state(request).reset()
    return JSONResponse({"reset": True})


def create_app(state: ScriptedState | None = None) -> Starlette:
    """Build the Starlette app (optionally sharing an existing :class:`ScriptedState`)."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/_scripted/requests", recorded_requests, methods=["GET", "DELETE"]),
            Route("/_scripted/reset", reset_state, methods=["POST"]),
        ]
    )
    app.state.scripted = state or ScriptedState()
    return app


# --------------------------------------------------------------------------- server


class ScriptedModelServer:
    """Runs :func:`create_app` with uvicorn in a background thread on a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self.state = ScriptedState()
        self.app = create_app(self.state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        """OpenAI base URL, ``http://HOST:PORT/v1``."""
        return f"{self.root_url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Snapshot of every request received so far."""
        return self.state.requests

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat-completions requests received so far."""
        return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    def clear_requests(self) -> None:
        self.state.clear_requests()

    def reset(self) -> None:
        self.state.reset()

    def start(self, timeout: float = 10.0) -> ScriptedModelServer:
        """Start serving; returns when the server accepts requests."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        self._wait_started(timeout)
        return self

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self._server and self._server.started):
            if time.monotonic() > deadline or not (self._thread and self._thread.is_alive()):
                raise RuntimeError("scripted model server failed to start")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server and join its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- opencode config


def opencode_config(
    base_url: str, *, permission: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``opencode.json`` content pointing OpenCode at the scripted model."""
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "model": "fake/fake-1",
        "small_model": "fake/fake-1",
        "share": "disabled",
        "autoupdate": False,
        "provider": {
            "fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": base_url, "apiKey": "x"},
                "models": {"fake-1": {"name": "Fake 1"}, "fake-2": {"name": "Fake 2"}},
            }
        },
    }
    if permission is not None:
        config["permission"] = permission
    return _deep_merge(config, extra or {})


def write_opencode_config(
    directory: Path,
    base_url: str,
    *,
    permission: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/opencode.json`` (``extra`` is deep-merged on top); return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "opencode.json"
    config = opencode_config(base_url, permission=permission, extra=extra)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """CLI: serve the scripted model in the foreground."""
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible fake LLM")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
