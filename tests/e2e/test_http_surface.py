"""The HTTP surface with raw requests: card, auth, limits, version negotiation, curl shapes."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from opencode_a2a_server.testing.stack import AdapterProcess

pytestmark = pytest.mark.e2e

V1 = {"A2A-Version": "1.0"}


def rpc(method: str, params: dict, id_: object = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def v1_message(text: str) -> dict:
    return {
        "message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}
    }


def v03_message(text: str) -> dict:
    return {
        "message": {
            "messageId": str(uuid.uuid4()),
            "role": "user",
            "kind": "message",
            "parts": [{"kind": "text", "text": text}],
        }
    }


async def test_agent_card_is_public_and_lists_every_interface(adapter: AdapterProcess) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{adapter.url}/.well-known/agent-card.json")
    assert response.status_code == 200
    card = response.json()
    interfaces = {(i["protocolBinding"], i["protocolVersion"]) for i in card["supportedInterfaces"]}
    assert interfaces == {
        ("JSONRPC", "1.0"),
        ("HTTP+JSON", "1.0"),
        ("JSONRPC", "0.3"),
        ("HTTP+JSON", "0.3"),
        ("GRPC", "1.0"),  # the shared adapter runs with A2A_GRPC_PORT
        ("GRPC", "0.3"),
    }
    http_urls = [i["url"] for i in card["supportedInterfaces"] if i["protocolBinding"] != "GRPC"]
    assert all(url.startswith(adapter.url) for url in http_urls)
    assert card["securitySchemes"]["bearerAuth"]["httpAuthSecurityScheme"]["scheme"] == "bearer"
    assert card["capabilities"]["streaming"] is True
    assert not card["capabilities"].get("pushNotifications")
    assert [s["id"] for s in card["skills"]] == ["opencode.chat"]
    uris = {e["uri"] for e in card["capabilities"]["extensions"]}
    assert uris == {
        "urn:opencode-a2a:extension:session-binding:v1",
        "urn:opencode-a2a:extension:model-selection:v1",
        "urn:opencode-a2a:extension:stream-hints:v1",
        "urn:opencode-a2a:extension:interactive-interrupt:v1",
        "urn:opencode-a2a:extension:interrupt-recovery:v1",
        "urn:opencode-a2a:extension:session-management:v1",
        "urn:opencode-a2a:extension:provider-discovery:v1",
        "urn:opencode-a2a:extension:workspace-control:v1",
    }
    interrupt = next(
        e
        for e in card["capabilities"]["extensions"]
        if e["uri"].endswith("interactive-interrupt:v1")
    )
    assert interrupt["params"]["methods"] == [
        "a2a.interrupt.permission.reply",
        "a2a.interrupt.question.reply",
        "a2a.interrupt.question.reject",
    ]
    assert "permission" in interrupt["params"]["in_band_answer"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/"),
        ("POST", "/message:send"),
        ("GET", "/tasks"),
        ("GET", "/health"),
        ("GET", "/tasks/x"),
        ("POST", "/v1/message:send"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer"])
async def test_every_route_but_the_card_needs_the_token(
    adapter: AdapterProcess, method: str, path: str, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    async with httpx.AsyncClient() as client:
        response = await client.request(method, adapter.url + path, headers=headers, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["error"]
    assert adapter.token not in response.text


async def test_oversized_body_gets_413(http: httpx.AsyncClient) -> None:
    big = "x" * (1024 * 1024 + 10)
    response = await http.post("/", json=rpc("SendMessage", v1_message(big)), headers=V1)
    assert response.status_code == 413
    assert response.json()["max_bytes"] == 1024 * 1024

    async def chunked():
        for _ in range(40):
            yield b"y" * 32768

    response = await http.post("/message:send", content=chunked(), headers=V1)
    assert response.status_code == 413


async def test_health_reports_adapter_and_upstream(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["upstream"]["healthy"] is True
    assert body["upstream"]["version"] == "1.18.33"
    assert body["upstream"]["event_stream_connected"] is True
    assert body["adapter"]["name"] == "opencode-a2a-server"


async def test_missing_version_header_means_0_3(http: httpx.AsyncClient) -> None:
    # A 1.0 method without the header is a 0.3 request, which has no such method.
    response = await http.post("/", json=rpc("SendMessage", v1_message("hi")))
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32009

    # A 0.3 method without the header works, and answers in 0.3 shapes.
    response = await http.post("/", json=rpc("message/send", v03_message("curl 0.3")))
    result = response.json()["result"]
    assert result["kind"] == "task"
    assert result["status"]["state"] == "completed"
    assert result["artifacts"][0]["parts"][0]["text"] == "Hello from fake LLM. You said: curl 0.3"


async def test_curl_shapes_for_1_0_over_both_transports(http: httpx.AsyncClient) -> None:
    response = await http.post("/", json=rpc("SendMessage", v1_message("curl rpc")), headers=V1)
    task = response.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"

    response = await http.post("/message:send", json=v1_message("curl rest"), headers=V1)
    assert response.status_code == 200
    task = response.json()["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    fetched = await http.get(f"/tasks/{task['id']}", headers=V1)
    assert fetched.json()["artifacts"][0]["parts"][0]["text"].endswith("curl rest")

    listed = await http.get("/tasks", headers=V1, params={"pageSize": 5})
    assert listed.status_code == 200
    assert len(listed.json()["tasks"]) <= 5 and listed.json()["tasks"]


async def test_streaming_over_rest_is_sse(http: httpx.AsyncClient) -> None:
    frames = []
    async with http.stream(
        "POST", "/message:stream", json=v1_message("sse please"), headers=V1
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                frames.append(json.loads(line[5:]))
    assert "task" in frames[0]
    assert frames[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"jsonrpc":"2.0"}',
        b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":[]}',
        b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"parts":"x"}}}',
    ],
)
async def test_malformed_json_rpc_gets_a_json_rpc_error(
    http: httpx.AsyncClient, body: bytes
) -> None:
    response = await http.post(
        "/", content=body, headers={**V1, "content-type": "application/json"}
    )
    assert response.status_code < 500
    error = response.json()["error"]
    assert error["code"] in (-32700, -32600, -32602)
    assert "Traceback" not in response.text


async def test_unknown_task_is_404_over_rest_and_32001_over_rpc(http: httpx.AsyncClient) -> None:
    response = await http.get("/tasks/nope", headers=V1)
    assert response.status_code == 404
    response = await http.post("/", json=rpc("GetTask", {"id": "nope"}), headers=V1)
    assert response.json()["error"]["code"] == -32001


async def test_logs_carry_requests_but_no_secrets(
    http: httpx.AsyncClient, adapter: AdapterProcess
) -> None:
    marker = f"log-marker-{uuid.uuid4().hex[:8]}"
    body = rpc("SendMessage", v1_message(marker))
    body["params"]["metadata"] = {"token": "super-secret-value"}
    response = await http.post("/", json=body, headers=V1)
    assert response.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    # The request line is written just after the response went out.
    for _ in range(50):
        log = adapter.log_path.read_text()
        if marker in log and "request POST / status=200 principal=default" in log:
            break
        await asyncio.sleep(0.1)
    assert marker in log  # payload logging is on in this stack
    assert "request POST / status=200 principal=default" in log
    assert "super-secret-value" not in log
    assert adapter.token not in log
    assert adapter.env["OPENCODE_SERVER_PASSWORD"] not in log


async def test_unknown_method_lists_supported_methods(http: httpx.AsyncClient) -> None:
    response = await http.post("/", json=rpc("opencode.nope", {}))
    error = response.json()["error"]
    assert error["code"] == -32601
    assert error["data"]["type"] == "METHOD_NOT_SUPPORTED"
    supported = error["data"]["supported_methods"]
    assert "SendMessage" in supported and "message/send" in supported
    assert "a2a.interrupt.permission.reply" in supported
    assert "CreateTaskPushNotificationConfig" not in supported


async def test_extension_notifications_run_and_answer_204(http: httpx.AsyncClient) -> None:
    body = {"jsonrpc": "2.0", "method": "opencode.permissions.list", "params": {}}
    response = await http.post("/", json=body)
    assert response.status_code == 204 and response.content == b""
    body["method"] = "opencode.unknown"
    assert (await http.post("/", json=body)).status_code == 204


@pytest.mark.parametrize("params", [[], "x", 3, {"extra": 1}])
async def test_extension_params_are_validated(http: httpx.AsyncClient, params: object) -> None:
    response = await http.post("/", json=rpc("opencode.permissions.list", params))
    error = response.json()["error"]
    assert error["code"] == -32602 and error["data"]["type"] == "INVALID_PARAMS"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (
            "/v1/message:stream",
            {
                "message": {"messageId": "m1", "role": "ROLE_USER", "content": [{"text": "hi"}]},
                "metadata": {"opencode": {"directory": "/etc"}},
            },
            400,
        ),
        (
            "/v1/message:stream",
            {
                "message": {
                    "messageId": "m2",
                    "role": "ROLE_USER",
                    "taskId": "nope",
                    "content": [{"text": "hi"}],
                }
            },
            404,
        ),
        ("/v1/tasks/nope:subscribe", None, 404),
    ],
)
async def test_v03_rest_stream_errors_are_http_errors(
    http: httpx.AsyncClient, path: str, body: dict | None, status: int
) -> None:
    response = await http.post(path, json=body) if body is not None else await http.post(path)
    assert response.status_code == status, response.text
    assert "text/event-stream" not in response.headers.get("content-type", "")
