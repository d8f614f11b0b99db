"""Principals, ownership, limits and secrets, against the real stack.

Adapters here run with a credentials file (alice: a plain token, bob: a SHA-256 hash)
next to A2A_BEARER_TOKEN (principal `default`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from opencode_a2a_server.testing.stack import TEST_TOKEN, AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, last_status, metadata_of, task_id_of
from .conftest import adapter_env

pytestmark = pytest.mark.e2e

ALICE = "alice-" + uuid.uuid4().hex
BOB = "bob-" + uuid.uuid4().hex
CAROL = "carol-" + uuid.uuid4().hex
WEBHOOK_TOKEN = "webhook-" + uuid.uuid4().hex
WEBHOOK_CREDENTIALS = "webhook-cred-" + uuid.uuid4().hex
NOT_FOUND = -32001


def credentials_file(root: Path) -> Path:
    path = root / "credentials.json"
    path.write_text(
        json.dumps(
            [
                {"principal": "alice", "token": ALICE},
                {"principal": "bob", "token_sha256": hashlib.sha256(BOB.encode()).hexdigest()},
                {"principal": "carol", "token": CAROL},
            ]
        )
    )
    path.chmod(0o600)
    return path


def log_text(path: Path) -> str:
    return Path(path).read_text(errors="replace")


def start_adapter(
    opencode: ManagedOpenCode, workspace: Path, root: Path, **extra: str
) -> AdapterProcess:
    root.mkdir(parents=True, exist_ok=True)
    env = adapter_env(opencode, workspace, root / "adapter.db")
    env["A2A_CREDENTIALS_FILE"] = str(credentials_file(root))
    env.update(extra)
    return AdapterProcess(env, log_path=root / "adapter.log", cwd=root).start()


class Caller:
    """Raw JSON-RPC and HTTP+JSON requests as one principal."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.a2a = A2AHarness(url, token)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.a2a.aclose()

    async def rpc(self, method: str, params: Any = None, *, version: str = "1.0") -> dict:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        headers = {"A2A-Version": "1.0"} if version == "1.0" else {}
        response = await self.http.post("/", json=body, headers=headers)
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("text/event-stream"):
            # A stream that fails at once carries one error event (0.3 resubscribe).
            first = next(line for line in response.text.splitlines() if line.startswith("data:"))
            return dict(json.loads(first.removeprefix("data:")))
        assert response.headers["content-type"].startswith("application/json"), response.text
        return dict(response.json())

    async def rest(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {} if path.startswith("/v1/") else {"A2A-Version": "1.0"}
        return await self.http.request(method, path, json=body, headers=headers)


@pytest.fixture(scope="module")
def shared(
    opencode: ManagedOpenCode, workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    root = tmp_path_factory.mktemp("security-shared")
    adapter = start_adapter(
        opencode, workspace, root, A2A_ENABLE_SESSION_SHELL="true", A2A_LOG_LEVEL="DEBUG"
    )
    yield adapter
    adapter.stop()


@pytest.fixture
async def alice(shared: AdapterProcess) -> AsyncIterator[Caller]:
    caller = Caller(shared.url, ALICE)
    yield caller
    await caller.aclose()


@pytest.fixture
async def bob(shared: AdapterProcess) -> AsyncIterator[Caller]:
    caller = Caller(shared.url, BOB)
    yield caller
    await caller.aclose()


def message_10(text: str, **fields: Any) -> dict[str, Any]:
    return {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}], **fields}


def message_03(text: str, **fields: Any) -> dict[str, Any]:
    return {
        "messageId": uuid.uuid4().hex,
        "role": "user",
        "kind": "message",
        "parts": [{"kind": "text", "text": text}],
        **fields,
    }


def error_code(answer: dict) -> int:
    assert "error" in answer, answer
    return int(answer["error"]["code"])


# -- the card ------------------------------------------------------------------------------


async def test_card_declares_one_bearer_scheme(shared: AdapterProcess) -> None:
    async with httpx.AsyncClient(base_url=shared.url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
    assert list(card["securitySchemes"]) == ["bearerAuth"]
    scheme = card["securitySchemes"]["bearerAuth"]["httpAuthSecurityScheme"]
    assert scheme["scheme"] == "bearer" and "bearerFormat" not in scheme
    assert card["securityRequirements"] == [{"schemes": {"bearerAuth": {}}}]
    text = json.dumps(card)
    for secret in (ALICE, BOB, CAROL, TEST_TOKEN):
        assert secret not in text


async def test_each_token_is_its_principal(alice: Caller, bob: Caller, shared: AdapterProcess):
    for caller in (alice, bob):
        assert (await caller.http.get("/health")).status_code in (200, 503)
    sha_of_bob = hashlib.sha256(BOB.encode()).hexdigest()
    async with httpx.AsyncClient(base_url=shared.url) as http:
        for wrong in (sha_of_bob, ALICE[:-1], ALICE + "x", "-", "alice"):
            response = await http.get("/tasks", headers={"Authorization": f"Bearer {wrong}"})
            assert response.status_code == 401, wrong
    log = log_text(shared.log_path)
    assert "principal=alice" in log and "principal=bob" in log


# -- ownership --------------------------------------------------------------------------------


async def test_bob_cannot_reach_alices_objects(alice: Caller, bob: Caller) -> None:
    context = f"shared-{uuid.uuid4().hex[:8]}"
    events = await alice.a2a.send("alice's secret plan", context_id=context)
    task = task_id_of(events)
    session = metadata_of(last_status(events))["shared"]["session"]["id"]
    before = (await alice.rpc("GetTask", {"id": task}))["result"]

    # The same contextId gives bob his own session.
    bob_events = await bob.a2a.send("bob's plan", context_id=context)
    bob_task = task_id_of(bob_events)
    bob_session = metadata_of(last_status(bob_events))["shared"]["session"]["id"]
    assert bob_session != session

    # JSON-RPC 1.0 and 0.3.
    for method in ("GetTask", "CancelTask", "SubscribeToTask"):
        assert error_code(await bob.rpc(method, {"id": task})) == NOT_FOUND, method
    for method in ("tasks/get", "tasks/cancel", "tasks/resubscribe"):
        assert error_code(await bob.rpc(method, {"id": task}, version="0.3")) == NOT_FOUND, method
    listed = (await bob.rpc("ListTasks", {}))["result"]
    assert task not in json.dumps(listed) and bob_task in json.dumps(listed)
    push = {"taskId": task, "url": "http://127.0.0.1:9/hook", "token": WEBHOOK_TOKEN}
    for method, params in (
        ("GetTaskPushNotificationConfig", {"taskId": task, "id": "p1"}),
        ("ListTaskPushNotificationConfigs", {"taskId": task}),
        ("CreateTaskPushNotificationConfig", push),
        ("DeleteTaskPushNotificationConfig", {"taskId": task, "id": "p1"}),
    ):
        answer = await bob.rpc(method, params)
        assert "result" not in answer, (method, answer)

    # HTTP+JSON 1.0 and 0.3.
    for method, path in (
        ("GET", f"/tasks/{task}"),
        ("POST", f"/tasks/{task}:cancel"),
        ("GET", f"/tasks/{task}:subscribe"),
        ("POST", f"/tasks/{task}:subscribe"),
        ("GET", f"/v1/tasks/{task}"),
        ("POST", f"/v1/tasks/{task}:cancel"),
    ):
        response = await bob.rest(method, path, {} if method == "POST" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert "secret plan" not in response.text
    for method in ("GET", "POST"):
        # 0.3 HTTP+JSON subscribe: see test_03_rest_streams_answer_upfront_errors.
        seen = b""
        try:
            async with bob.http.stream(method, f"/v1/tasks/{task}:subscribe") as response:
                async for chunk in response.aiter_bytes():
                    seen += chunk
        except httpx.RemoteProtocolError:
            pass
        assert b"secret plan" not in seen and task.encode() not in seen
    for method, path in (
        ("GET", f"/tasks/{task}/pushNotificationConfigs"),
        ("GET", f"/tasks/{task}/pushNotificationConfigs/p1"),
        ("POST", f"/tasks/{task}/pushNotificationConfigs"),
        ("DELETE", f"/tasks/{task}/pushNotificationConfigs/p1"),
    ):
        response = await bob.rest(method, path, push if method == "POST" else None)
        assert 400 <= response.status_code < 500, (method, path, response.text)
    listed_rest = await bob.rest("GET", "/tasks")
    assert listed_rest.status_code == 200 and task not in listed_rest.text

    # A message naming alice's task, over each binding and version.
    answer = await bob.rpc(
        "SendMessage", {"message": message_10("hijack", taskId=task, contextId=context)}
    )
    assert error_code(answer) == NOT_FOUND
    answer = await bob.rpc(
        "message/send", {"message": message_03("hijack", taskId=task)}, version="0.3"
    )
    assert error_code(answer) == NOT_FOUND
    response = await bob.rest(
        "POST", "/message:send", {"message": message_10("hijack", taskId=task)}
    )
    assert response.status_code == 404
    response = await bob.rest(
        "POST",
        "/v1/message:send",
        {
            "message": {
                "messageId": "m",
                "role": "ROLE_USER",
                "taskId": task,
                "content": [{"text": "x"}],
            }
        },
    )
    assert response.status_code == 404

    # Alice's session is hers: no continuing it, no session method on it.
    answer = await bob.rpc(
        "SendMessage",
        {"message": message_10("take over"), "metadata": {"shared": {"session": {"id": session}}}},
    )
    assert error_code(answer) == -32602 and "another caller" in answer["error"]["message"]
    session_calls: list[tuple[str, dict[str, Any]]] = [
        ("opencode.sessions.get", {}),
        ("opencode.sessions.messages.list", {}),
        ("opencode.sessions.prompt_async", {"request": {"parts": [{"type": "text", "text": "x"}]}}),
        ("opencode.sessions.command", {"request": {"command": "greet", "arguments": "x"}}),
        ("opencode.sessions.abort", {}),
        ("opencode.sessions.diff", {}),
        ("opencode.sessions.revert", {"message_id": "msg_0000000000000000000000"}),
        ("opencode.sessions.unrevert", {}),
        ("opencode.sessions.shell", {"request": {"command": "echo pwned"}}),
    ]
    for method, params in session_calls:
        answer = await bob.rpc(method, {"session_id": session, **params})
        assert answer.get("error", {}).get("data", {}).get("type") == "SESSION_FORBIDDEN", (
            method,
            answer,
        )
    # Session ids become OpenCode URL paths: no dot segments to reach alice's session.
    for sneaky in (f"ses_x/../{session}", f"ses/../{session}", f"ses_x%2F..%2F{session}"):
        answer = await bob.rpc("opencode.sessions.messages.list", {"session_id": sneaky})
        assert "secret plan" not in json.dumps(answer)
        assert error_code(answer) in (-32602, -32001), answer
        answer = await bob.rpc(
            "SendMessage",
            {"message": message_10("x"), "metadata": {"shared": {"session": {"id": sneaky}}}},
        )
        assert error_code(answer) == -32602
    answer = await bob.rpc("opencode.sessions.revert", {"task_id": task})
    assert error_code(answer) == -32602 and "secret" not in json.dumps(answer)
    bob_sessions = (await bob.rpc("opencode.sessions.list", {"limit": 100}))["result"]["items"]
    assert session not in [s["id"] for s in bob_sessions]
    assert bob_session in [s["id"] for s in bob_sessions]
    alice_sessions = (await alice.rpc("opencode.sessions.list", {"limit": 100}))["result"]["items"]
    assert session in [s["id"] for s in alice_sessions]
    assert bob_session not in [s["id"] for s in alice_sessions]

    # The default principal (A2A_BEARER_TOKEN) is just another caller.
    default = Caller(alice.url, TEST_TOKEN)
    try:
        assert error_code(await default.rpc("GetTask", {"id": task})) == NOT_FOUND
    finally:
        await default.aclose()

    # Nothing bob did touched alice's task.
    after = (await alice.rpc("GetTask", {"id": task}))["result"]
    assert after == before


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/tasks/{task}:subscribe", 404),
        ("POST", "/v1/tasks/{task}:subscribe", 404),
        ("POST", "/v1/message:stream", 404),
    ],
)
async def test_03_rest_streams_answer_upfront_errors(
    bob: Caller, method: str, path: str, status: int
) -> None:
    task = str(uuid.uuid4())
    body = {
        "message": {
            "messageId": "m",
            "role": "ROLE_USER",
            "taskId": task,
            "content": [{"text": "x"}],
        }
    }
    response = await bob.rest(method, path.format(task=task), body if "message" in path else None)
    assert response.status_code == status


async def test_bob_cannot_list_or_answer_alices_asks(alice: Caller, bob: Caller) -> None:
    events = await alice.a2a.send(
        f"[[bash:echo ask-{uuid.uuid4().hex[:6]}]]", metadata={"opencode": {"directory": "ask"}}
    )
    status = last_status(events)
    interrupt = metadata_of(status)["shared"]["interrupt"]
    request_id, task = interrupt["request_id"], status.task_id
    context = events[0].task.context_id

    mine = (await alice.rpc("opencode.permissions.list"))["result"]["items"]
    assert request_id in [a["request_id"] for a in mine]
    theirs = (await bob.rpc("opencode.permissions.list"))["result"]["items"]
    assert request_id not in [a["request_id"] for a in theirs]
    for method, params in (
        ("a2a.interrupt.permission.reply", {"reply": "always"}),
        ("a2a.interrupt.question.reply", {"answers": [["x"]]}),
        ("a2a.interrupt.question.reject", {}),
    ):
        answer = await bob.rpc(method, {"request_id": request_id, **params})
        assert answer["error"]["data"]["type"] == "INTERRUPT_REQUEST_NOT_FOUND", (method, answer)
    in_band = message_10("always", taskId=task, contextId=context)
    in_band["parts"] = [{"data": {"reply": "always"}}]
    assert error_code(await bob.rpc("SendMessage", {"message": in_band})) == NOT_FOUND

    still = (await alice.rpc("GetTask", {"id": task}))["result"]
    assert still["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    answer = await alice.rpc(
        "a2a.interrupt.permission.reply", {"request_id": request_id, "reply": "reject"}
    )
    assert answer["result"]["ok"] is True


# -- limits ---------------------------------------------------------------------------------


async def test_rate_limit_answers_429_at_once(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    adapter = start_adapter(opencode, workspace, tmp_path, A2A_RATE_LIMIT_PER_MINUTE="5")
    carol = Caller(adapter.url, CAROL)
    other = Caller(adapter.url, ALICE)
    try:
        for _ in range(5):
            assert (await carol.rest("GET", "/tasks")).status_code == 200
        for method, path, body in (
            ("GET", "/tasks", None),
            ("POST", "/", {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}),
            ("POST", "/message:stream", {"message": message_10("hi")}),
            ("GET", "/health", None),
        ):
            started = time.monotonic()
            response = await carol.rest(method, path, body)
            assert time.monotonic() - started < 1.0
            assert response.status_code == 429, (path, response.text)
            assert 1 <= int(response.headers["retry-after"]) <= 12
            assert response.json()["type"] == "RATE_LIMITED"
        assert (await other.rest("GET", "/tasks")).status_code == 200
    finally:
        await carol.aclose()
        await other.aclose()
        adapter.stop()


async def test_concurrent_turn_cap(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    adapter = start_adapter(
        opencode, workspace, tmp_path, A2A_MAX_CONCURRENT_TURNS_PER_PRINCIPAL="1"
    )
    alice, bob = Caller(adapter.url, ALICE), Caller(adapter.url, BOB)
    try:
        client = await alice.a2a.client("1.0", "JSONRPC")
        from .a2a import build_request

        first_events: list[Any] = []
        working = asyncio.Event()

        async def first_turn() -> None:
            async for event in client.send_message(build_request("[[slow:30:0.1]]")):
                first_events.append(event)
                if event.HasField("status_update"):
                    working.set()

        runner = asyncio.create_task(first_turn())
        await asyncio.wait_for(working.wait(), 30)

        started = time.monotonic()
        answer = await alice.rpc("SendMessage", {"message": message_10("second")})
        assert error_code(answer) == -32029
        assert answer["error"]["data"]["type"] == "TOO_MANY_ACTIVE_TURNS"
        assert answer["error"]["data"]["retry_after_seconds"] >= 1
        answer = await alice.rpc("message/stream", {"message": message_03("second")}, version="0.3")
        assert error_code(answer) == -32029
        for path in ("/message:send", "/message:stream"):
            response = await alice.rest("POST", path, {"message": message_10("second")})
            assert response.status_code == 429, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["details"][0]["reason"] == "TOO_MANY_ACTIVE_TURNS"
        answer = await alice.rpc(
            "opencode.sessions.prompt_async",
            {"session_id": "ses_x", "request": {"parts": [{"type": "text", "text": "x"}]}},
        )
        assert error_code(answer) == -32029
        assert time.monotonic() - started < 3.0, "every refusal came at once"
        assert not runner.done(), "the first turn is still running"

        # Another principal is not limited by alice's turn.
        bob_events = await bob.a2a.send("bob in parallel", streaming=False)
        assert bob_events[0].task.status.state == 3  # completed

        await asyncio.wait_for(runner, 60)
        final = last_status(first_events)
        assert final.status.state == 3, final
        # With the first turn over, alice may start another.
        again = await alice.rpc("SendMessage", {"message": message_10("third")})
        assert again["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    finally:
        await alice.aclose()
        await bob.aclose()
        adapter.stop()


# -- JWT ------------------------------------------------------------------------------------


class JwksServer:
    """An issuer's JWKS endpoint on loopback."""

    def __init__(self, jwk: dict[str, Any]) -> None:
        body = json.dumps({"keys": [jwk]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_jwt_principals(opencode: ManagedOpenCode, workspace: Path, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "RS256"}
    jwks = JwksServer(jwk)
    issuer = "https://id.example.test/"

    def token(**claims: Any) -> str:
        now = int(time.time())
        body = {"iss": issuer, "aud": "opencode", "sub": "dana", "exp": now + 300} | claims
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})

    adapter = start_adapter(
        opencode,
        workspace,
        tmp_path,
        A2A_JWT_ISSUER=issuer,
        A2A_JWT_AUDIENCE="opencode",
        A2A_JWT_JWKS_URL=jwks.url,
    )
    dana = Caller(adapter.url, token())
    try:
        card = (await dana.http.get("/.well-known/agent-card.json")).json()
        assert sorted(card["securitySchemes"]) == ["bearerAuth", "jwtAuth"]
        scheme = card["securitySchemes"]["jwtAuth"]["httpAuthSecurityScheme"]
        assert scheme["bearerFormat"] == "JWT" and issuer in scheme["description"]
        assert len(card["securityRequirements"]) == 2

        events = await dana.a2a.send("hello as dana")
        task = task_id_of(events)
        assert (await dana.rpc("GetTask", {"id": task}))["result"]["id"] == task
        alice = Caller(adapter.url, ALICE)
        try:
            assert error_code(await alice.rpc("GetTask", {"id": task})) == NOT_FOUND
        finally:
            await alice.aclose()
        for bad, reason in (
            (token(exp=int(time.time()) - 600), "expired"),
            (token(aud="other"), "audience"),
            (token(iss="https://evil.test/"), "issuer"),
        ):
            response = await dana.http.get("/tasks", headers={"Authorization": f"Bearer {bad}"})
            assert response.status_code == 401 and reason in response.json()["error"]
        assert "principal=dana" in log_text(adapter.log_path)
    finally:
        await dana.aclose()
        adapter.stop()
        jwks.stop()


# -- secrets ------------------------------------------------------------------------------------


async def test_no_secret_reaches_the_logs(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path, shared: AdapterProcess
) -> None:
    """Drive successes and failures with payload logging on, then grep every log."""
    wrong_password = "upstream-" + uuid.uuid4().hex
    signing_key = "signing-" + uuid.uuid4().hex
    broken = start_adapter(
        opencode,
        workspace,
        tmp_path / "broken",
        OPENCODE_SERVER_PASSWORD=wrong_password,
        A2A_PUSH_NOTIFICATIONS="true",
        A2A_PUSH_SIGNING_KEY=signing_key,
    )
    alice = Caller(broken.url, ALICE)
    try:
        events = await alice.a2a.send("fails upstream")  # OpenCode answers 401
        assert last_status(events).status.state in (4, 8)  # failed / auth-required
        await alice.rpc("opencode.sessions.list", {})
        webhook = {
            "url": "http://127.0.0.1:9/hook",
            "token": WEBHOOK_TOKEN,
            "authentication": {"scheme": "Bearer", "credentials": WEBHOOK_CREDENTIALS},
        }
        for key in ("pushNotificationConfig", "taskPushNotificationConfig"):
            await alice.rpc(
                "SendMessage",
                {"message": message_10("with a webhook"), "configuration": {key: webhook}},
            )
        events = await alice.a2a.send("another")
        await alice.rpc(
            "CreateTaskPushNotificationConfig", {"taskId": task_id_of(events), **webhook}
        )
        async with httpx.AsyncClient(base_url=broken.url) as http:
            for wrong in (BOB + "x", f"{ALICE} trailing", "Basic " + ALICE):
                await http.get("/tasks", headers={"Authorization": f"Bearer {wrong}"})
            await http.post("/", content=b'{"jsonrpc": "2.0", "token": "' + ALICE.encode() + b'"')
        health = await alice.http.get("/health")
        assert wrong_password not in health.text
    finally:
        await alice.aclose()
        broken.stop()

    secrets = [
        ALICE,
        BOB,
        CAROL,
        TEST_TOKEN,
        hashlib.sha256(BOB.encode()).hexdigest(),
        hashlib.sha256(ALICE.encode()).hexdigest(),
        opencode.password,
        wrong_password,
        WEBHOOK_TOKEN,
        WEBHOOK_CREDENTIALS,
        signing_key,
    ]
    for log_path in (Path(broken.log_path), Path(shared.log_path)):
        text = log_text(log_path)
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {log_path.parent.name}"
    broken_log = log_text(broken.log_path)
    assert "request POST / status=200 principal=alice" in broken_log and "body=" in broken_log
    assert "Traceback" not in broken_log
