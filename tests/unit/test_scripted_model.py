"""Unit tests for the scripted OpenAI-compatible fake LLM."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencode_a2a_server.testing.scripted_model import (
    QUESTION_ARGS,
    REASONING_TEXT,
    ScriptedModelServer,
    create_app,
    parse_directives,
    write_opencode_config,
)

TITLE_SYSTEM = "You are a title generator. You output ONLY a thread title. Nothing else."


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        yield c


def chat_body(
    prompt: Any, *, stream: bool = True, usage: bool = False, history: list | None = None
) -> dict[str, Any]:
    messages = [{"role": "system", "content": "You are opencode."}, *(history or [])]
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": "fake-1", "messages": messages, "stream": stream}
    body["tools"] = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def sse_payloads(text: str) -> list[Any]:
    """Parse SSE ``data:`` lines; ``[DONE]`` is kept as the string."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def deltas(payloads: list[Any], key: str) -> list[Any]:
    """Non-empty ``delta[key]`` values in order."""
    return [
        p["choices"][0]["delta"][key]
        for p in payloads
        if isinstance(p, dict) and p.get("choices") and p["choices"][0]["delta"].get(key)
    ]


def joined(payloads: list[Any], key: str = "content") -> str:
    return "".join(deltas(payloads, key))


def finish_reason(payloads: list[Any]) -> str | None:
    reasons = [
        p["choices"][0]["finish_reason"]
        for p in payloads
        if isinstance(p, dict) and p.get("choices") and p["choices"][0]["finish_reason"]
    ]
    return reasons[-1] if reasons else None


async def stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_payloads(response.text)


# --------------------------------------------------------------------------- parsing


def test_parse_directives_removes_markers() -> None:
    directives, cleaned = parse_directives("run [[bash:echo hi]] now [[reason]]")
    assert [(d.name, d.arg) for d in directives] == [("bash", "echo hi"), ("reason", "")]
    assert cleaned == "run now"


def test_parse_tool_json_with_brackets_and_nested_directive() -> None:
    text = 'go [[tool:task:{"prompt":"[[bash:echo sub]]","list":[[1],[2]]}]] end'
    directives, cleaned = parse_directives(text)
    assert len(directives) == 1
    assert directives[0].arg == "task"
    assert directives[0].value == {"prompt": "[[bash:echo sub]]", "list": [[1], [2]]}
    assert cleaned == "go end"


def test_parse_unknown_directive_is_kept() -> None:
    directives, cleaned = parse_directives("keep [[nope]] and [[slow:3:0.1]]")
    assert [(d.name, d.arg) for d in directives] == [("slow", "3:0.1")]
    assert cleaned == "keep [[nope]] and"


# --------------------------------------------------------------------------- default text


async def test_default_stream(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("  hi there  "))
    assert payloads[-1] == "[DONE]"
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert joined(payloads) == "Hello from fake LLM. You said: hi there"
    assert len(deltas(payloads, "content")) > 3
    assert finish_reason(payloads) == "stop"
    assert all("usage" not in p for p in payloads if isinstance(p, dict))
    assert {p["object"] for p in payloads if isinstance(p, dict)} == {"chat.completion.chunk"}


async def test_usage_in_final_chunk(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("hello", usage=True))
    final = payloads[-2]
    assert final["choices"][0]["finish_reason"] == "stop"
    words = len("Hello from fake LLM. You said: hello".split())
    assert final["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": words,
        "total_tokens": 10 + words,
    }


async def test_non_stream_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("x", stream=False))
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "Hello from fake LLM. You said: x"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["prompt_tokens"] == 10


async def test_content_parts_are_joined(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "part one "}, {"type": "image_url"}, {"type": "text"}]
    parts.append({"type": "text", "text": "two"})
    payloads = await stream(client, chat_body(parts))
    assert joined(payloads) == "Hello from fake LLM. You said: part one two"


async def test_only_latest_user_message_counts(client: httpx.AsyncClient) -> None:
    history = [
        {"role": "user", "content": "[[bash:ls]]"},
        {"role": "assistant", "content": "Running tool. "},
    ]
    payloads = await stream(client, chat_body("plain", history=history))
    assert joined(payloads) == "Hello from fake LLM. You said: plain"
    assert not deltas(payloads, "tool_calls")


async def test_title_request(client: httpx.AsyncClient) -> None:
    body = {
        "model": "fake-1",
        "stream": True,
        "messages": [
            {"role": "system", "content": TITLE_SYSTEM},
            {"role": "user", "content": "Generate a title for this conversation:\n"},
            {"role": "user", "content": "[[bash:echo hi]] [[error:500]]"},
        ],
    }
    payloads = await stream(client, body)
    assert joined(payloads) == "Fake title"
    assert finish_reason(payloads) == "stop"


async def test_after_tool_result(client: httpx.AsyncClient) -> None:
    body = chat_body("[[bash:echo hi]]")
    call = {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
    body["messages"] += [
        {"role": "assistant", "content": "Running tool. ", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "hi\n"},
    ]
    payloads = await stream(client, body)
    assert joined(payloads) == "Tool finished. Result: hi\n"
    assert not deltas(payloads, "tool_calls")
    assert finish_reason(payloads) == "stop"


# --------------------------------------------------------------------------- directives


async def test_reason(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("think [[reason]]"))
    assert joined(payloads, "reasoning_content") == REASONING_TEXT
    kinds = [k for p in payloads[1:-1] for k in p["choices"][0]["delta"]]
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning_content")
    assert joined(payloads) == "Hello from fake LLM. You said: think"


def tool_calls(payloads: list[Any]) -> list[dict[str, Any]]:
    return [call for batch in deltas(payloads, "tool_calls") for call in batch]


async def test_bash_tool_call(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("[[bash:echo hi]]"))
    assert joined(payloads) == "Running tool. "
    (call,) = tool_calls(payloads)
    assert call["index"] == 0
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "bash"
    args = json.loads(call["function"]["arguments"])
    assert args == {"command": "echo hi", "description": "run echo hi"}
    assert finish_reason(payloads) == "tool_calls"
    assert payloads[-1] == "[DONE]"


async def test_generic_tool_call(client: httpx.AsyncClient) -> None:
    prompt = 'write it [[tool:write:{"filePath":"a.txt","content":"x ]] y\\n"}]]'
    payloads = await stream(client, chat_body(prompt))
    (call,) = tool_calls(payloads)
    assert call["function"]["name"] == "write"
    assert json.loads(call["function"]["arguments"]) == {"filePath": "a.txt", "content": "x ]] y\n"}
    assert finish_reason(payloads) == "tool_calls"


async def test_question_tool_call(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("[[question]]"))
    (call,) = tool_calls(payloads)
    assert call["function"]["name"] == "question"
    assert json.loads(call["function"]["arguments"]) == QUESTION_ARGS


async def test_tool_call_non_stream(client: httpx.AsyncClient) -> None:
    body = chat_body("[[bash:pwd]]", stream=False)
    data = (await client.post("/v1/chat/completions", json=body)).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"])["command"] == "pwd"


async def test_slow_words_and_delay(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    payloads = await stream(client, chat_body("[[slow:5:0.05]]"))
    assert time.monotonic() - started >= 0.19
    assert deltas(payloads, "content") == ["word0 ", "word1 ", "word2 ", "word3 ", "word4"]


async def test_words_count(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("[[words:23]]", usage=True))
    text = joined(payloads)
    assert text.split() == [f"w{i}" for i in range(23)]
    assert 1 < len(deltas(payloads, "content")) <= math.ceil(23 / 2)
    assert payloads[-2]["usage"]["completion_tokens"] == 23


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (401, "Incorrect API key provided (fake)"),
        (429, "Rate limit reached (fake)"),
        (500, "Internal server error (fake)"),
        (503, "(fake)"),
    ],
)
async def test_error_codes(client: httpx.AsyncClient, code: int, message: str) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(f"[[error:{code}]]"))
    assert response.status_code == code
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] and error["code"]


async def test_error_once(client: httpx.AsyncClient) -> None:
    body = chat_body("[[error_once:500]] hi")
    first = await client.post("/v1/chat/completions", json=body)
    assert first.status_code == 500
    second = await client.post("/v1/chat/completions", json=body)
    assert second.status_code == 200
    assert joined(sse_payloads(second.text)) == "Hello from fake LLM. You said: hi"
    other = await client.post("/v1/chat/completions", json=chat_body("[[error_once:429]] other"))
    assert other.status_code == 429


async def test_midstream_error(client: httpx.AsyncClient) -> None:
    payloads = await stream(client, chat_body("[[midstream_error]]"))
    assert len(deltas(payloads, "content")) == 4
    assert "[DONE]" not in payloads
    assert "mid-stream" in payloads[-1]["error"]["message"]
    assert finish_reason(payloads) is None


# --------------------------------------------------------------------------- endpoints


async def test_models_and_recorded_requests(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["fake-1", "fake-2"]
    await client.post("/v1/chat/completions", json={**chat_body("a"), "model": "fake-2"})
    recorded = (await client.get("/_scripted/requests")).json()
    assert [(r["method"], r["path"]) for r in recorded] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    assert recorded[1]["body"]["model"] == "fake-2"
    assert (await client.delete("/_scripted/requests")).status_code == 200
    assert (await client.get("/_scripted/requests")).json() == []


def test_threaded_server() -> None:
    with ScriptedModelServer() as server:
        assert server.url == f"http://127.0.0.1:{server.port}/v1"
        with httpx.Client(base_url=server.url, timeout=5) as c:
            assert c.get("/models").status_code == 200
            response = c.post("/chat/completions", json=chat_body("[[words:7]]"))
        payloads = sse_payloads(response.text)
        assert joined(payloads).split() == [f"w{i}" for i in range(7)]
        assert [r["path"] for r in server.requests] == ["/v1/models", "/v1/chat/completions"]
        assert server.requests[-1]["completed"] is True
        assert server.chat_requests[0]["messages"][-1]["content"] == "[[words:7]]"
        server.clear_requests()
        assert server.requests == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/models", timeout=1)


def test_write_opencode_config(tmp_path: Path) -> None:
    path = write_opencode_config(
        tmp_path / "ws",
        "http://127.0.0.1:1/v1",
        permission={"bash": "ask"},
        extra={"command": {"greet": {"template": "hi $ARGUMENTS"}}, "provider": {"fake": {}}},
    )
    config = json.loads(path.read_text())
    assert path.name == "opencode.json"
    assert config["model"] == config["small_model"] == "fake/fake-1"
    assert config["share"] == "disabled"
    assert config["autoupdate"] is False
    assert config["permission"] == {"bash": "ask"}
    assert config["command"]["greet"]["template"] == "hi $ARGUMENTS"
    provider = config["provider"]["fake"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://127.0.0.1:1/v1", "apiKey": "x"}
    assert provider["models"]["fake-1"]["name"] == "Fake 1"
    assert "fake-2" in provider["models"]
