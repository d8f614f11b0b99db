"""InputGuardMiddleware: hostile request bodies get a clear 4xx before any route parses them."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opencode_a2a_server.security.input import (
    MAX_JSON_DEPTH,
    MAX_PARTS,
    InputGuardMiddleware,
    file_url_inside,
    is_base64,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "inside.txt").write_text("ok")
    (tmp_path / "secret.txt").write_text("no")
    (workspace / "escape").symlink_to(tmp_path)
    (workspace / "link-to-secret").symlink_to(tmp_path / "secret.txt")
    return workspace.resolve()


@pytest.fixture
async def client(root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"reached": True, "size": len(body)})

    routes = [
        Route(p, echo, methods=["GET", "POST"])
        for p in ("/", "/message:send", "/v1/message:send", "/v1/tasks/{id}")
    ]
    app = InputGuardMiddleware(Starlette(routes=routes), workspace_root=root)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://adapter"
    ) as c:
        yield c


def rpc_message(parts: list[Any], metadata: dict[str, Any] | None = None, **extra: Any) -> dict:
    message: dict[str, Any] = {"messageId": "m", "role": "ROLE_USER", "parts": parts}
    params: dict[str, Any] = {"message": message, **extra}
    if metadata is not None:
        params["metadata"] = metadata
    return {"jsonrpc": "2.0", "id": "r1", "method": "SendMessage", "params": params}


async def rpc_error(client: httpx.AsyncClient, body: Any = None, raw: bytes | None = None) -> dict:
    content = raw if raw is not None else json.dumps(body).encode()
    response = await client.post("/", content=content)
    assert response.status_code == 200
    answer = response.json()
    assert "reached" not in answer, "the route must not see it"
    return dict(answer)


async def test_good_requests_pass_untouched(client, root):
    body = rpc_message(
        [
            {"text": "hi"},
            {"raw": base64.b64encode(b"abc").decode(), "mediaType": "text/plain"},
            {"url": f"file://{root}/inside.txt"},
            {"url": f"file://{root}/sub"},
            {"url": "data:text/plain;base64,YQ=="},
            {"url": "https://example.com/x"},
        ],
        {"shared": {"session": {"id": "ses_0123abcXYZ"}}, "opencode": {"directory": "sub"}},
    )
    response = await client.post("/", json=body)
    assert response.json() == {"reached": True, "size": len(response.request.content)}
    for raw in (b"", b"not json at all", b"{broken"):
        assert (await client.post("/", content=raw)).json()["reached"]
    assert (await client.get("/v1/tasks/x?historyLength=10")).json()["reached"]


async def test_invalid_utf8(client):
    answer = await rpc_error(client, raw=b'{"jsonrpc":"2.0","id":1,"method":"x","params":"\xff"}')
    assert answer["id"] is None
    assert answer["error"]["code"] == -32700 and "UTF-8" in answer["error"]["message"]
    response = await client.post("/message:send", content=b'{"message": "\xc3("}')
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["reason"] == "INVALID_REQUEST"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 100_000])
async def test_deep_json(client, depth):
    nested = "[" * depth + "]" * depth
    answer = await rpc_error(client, raw=nested.encode())
    assert answer["error"]["code"] == -32600 and "nested deeper" in answer["error"]["message"]
    response = await client.post("/message:send", content=nested.encode())
    assert response.status_code == 400


async def test_depth_at_the_limit_passes(client):
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    body = '{"a": ' + nested + "}"
    assert (await client.post("/", content=body.encode())).json()["reached"]


@pytest.mark.parametrize(
    "raw",
    [
        "[NaN]",
        '{"id": Infinity}',
        '{"id": -Infinity}',
        '{"id": 1e400}',
        '{"a": ' + "9" * 5000 + "}",
    ],
)
async def test_numbers_json_cannot_carry(client, raw):
    answer = await rpc_error(client, raw=raw.encode())
    assert answer["error"]["code"] == -32700


async def test_too_many_parts(client):
    answer = await rpc_error(client, rpc_message([{"text": "x"}] * (MAX_PARTS + 1)))
    assert answer["id"] == "r1"
    assert answer["error"] == {
        "code": -32602,
        "message": f"A message has {MAX_PARTS + 1} parts; at most {MAX_PARTS} are accepted.",
        "data": {"type": "INVALID_PARAMS"},
    }
    assert (await client.post("/", json=rpc_message([{"text": "x"}] * MAX_PARTS))).json()["reached"]
    legacy = {"message": {"messageId": "m", "role": "ROLE_USER", "content": [{"text": "x"}] * 500}}
    response = await client.post("/v1/message:send", json=legacy)
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["reason"] == "INVALID_PARAMS"


@pytest.mark.parametrize("raw", ["!!!", "====", "été", "a", "ab=c", "YQ="])
async def test_bad_base64(client, raw):
    answer = await rpc_error(client, rpc_message([{"raw": raw}]))
    assert answer["error"]["message"] == "Part 0: raw is not valid base64."
    legacy = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "message/send",
        "params": {"message": {"parts": [{"kind": "file", "file": {"bytes": raw}}]}},
    }
    assert (await rpc_error(client, legacy))["error"]["code"] == -32602
    rest = {"message": {"content": [{"file": {"fileWithBytes": raw}}]}}
    assert (await client.post("/v1/message:send", json=rest)).status_code == 400


@pytest.mark.parametrize("data", ["", "YQ", "YQ==", "YWJj", "-_-_", "+/+/", "aGVsbG8gd29ybGQ"])
def test_good_base64(data):
    assert is_base64(data)


def test_file_urls(root):
    inside = [
        f"file://{root}/inside.txt",
        f"file://localhost{root}/sub",
        f"file://{root}",
        f"FILE://{root}/sub/../inside.txt",
        f"file://{root}/missing",
    ]
    outside = [
        "file:///etc/passwd",
        f"file://{root}/../secret.txt",
        f"file://{root}/escape/secret.txt",
        f"file://{root}/link-to-secret",
        f"file://{root}/sub/../../secret.txt",
        f"file://{root}/%2e%2e/secret.txt",
        f"file://evil.example.com{root}/inside.txt",
        "file:relative.txt",
        f"file://{root}/inside.txt%00",
        f"file://{root}/inside\x00.txt",
    ]
    for url in inside:
        assert file_url_inside(url, root), url
    for url in outside:
        assert not file_url_inside(url, root), url
    assert file_url_inside("https://example.com/etc/passwd", root)


async def test_file_urls_anywhere_in_the_body(client, root):
    shapes = [
        rpc_message([{"url": "file:///etc/passwd"}]),
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/send",
            "params": {
                "message": {
                    "parts": [{"kind": "file", "file": {"uri": f"file://{root}/escape/secret.txt"}}]
                }
            },
        },
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "opencode.sessions.prompt_async",
            "params": {
                "session_id": "ses_a",
                "request": {"parts": [{"type": "file", "url": "file:///etc/shadow"}]},
            },
        },
    ]
    for body in shapes:
        answer = await rpc_error(client, body)
        assert "workspace root" in answer["error"]["message"]
    rest = {"request": {"content": [{"file": {"fileWithUri": "file:///etc/passwd"}}]}}
    assert (await client.post("/v1/message:send", json=rest)).status_code == 400


@pytest.mark.parametrize(
    "session_id",
    [
        "ses/../ses_abc",
        "ses_x/../ses_abc",
        "ses_abc?x=1",
        "ses_",
        "SES_abc",
        "ses_a b",
        "ses_%2e",
        "x",
    ],
)
async def test_session_ids_that_could_escape_their_url(client, session_id):
    answer = await rpc_error(
        client, rpc_message([{"text": "x"}], {"shared": {"session": {"id": session_id}}})
    )
    assert "session id" in answer["error"]["message"]
    method = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "opencode.sessions.get",
        "params": {"session_id": session_id},
    }
    assert (await rpc_error(client, method))["error"]["code"] == -32602


@pytest.mark.parametrize("value", ["abc", "1.5", "99999999999", "", "-99999999999"])
async def test_int32_query_and_body_fields(client, value):
    response = await client.get(f"/v1/tasks/x?historyLength={value}")
    assert response.status_code == 400
    assert "historyLength" in response.json()["error"]["message"]
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tasks/get",
        "params": {"id": "x", "historyLength": value},
    }
    assert (await rpc_error(client, body))["error"]["code"] == -32602
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tasks/get",
        "params": {"id": "x", "historyLength": 2**40},
    }
    assert (await rpc_error(client, big))["error"]["code"] == -32602


@pytest.mark.parametrize("part", [{}, {"metadata": {}}, {"kind": "text"}])
async def test_empty_legacy_rest_parts(client, part):
    body = {"message": {"messageId": "m", "role": "ROLE_USER", "content": [{"text": "ok"}, part]}}
    response = await client.post("/v1/message:send", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Part 1 is empty; give it text, file or data."
    # The same shape is left alone where no route crashes on it (1.0 answers it itself).
    assert (await client.post("/message:send", json=body)).json()["reached"]
