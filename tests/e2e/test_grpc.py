"""The gRPC listener (A2A_GRPC_PORT) beyond the shared scenarios: the card, credentials,
ownership, limits and errors, with raw stubs so status codes are checked exactly.

The turn scenarios themselves (streaming, blocking send, get, cancel mid-stream, an ask
answered in-band, resubscribe) run over gRPC through the `COMBOS` parametrization.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import jwt
import pytest
from a2a.compat.v0_3 import a2a_v0_3_pb2 as v03
from a2a.compat.v0_3 import a2a_v0_3_pb2_grpc as v03_grpc
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.grpc_status import status_from_call
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import json_format
from google.rpc import error_details_pb2
from jwt.algorithms import RSAAlgorithm

from opencode_a2a_server.testing.stack import AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .conftest import adapter_env
from .test_security import ALICE, BOB, CAROL, Caller, JwksServer, start_adapter

pytestmark = pytest.mark.e2e


def target(adapter: AdapterProcess) -> str:
    return f"127.0.0.1:{adapter.env['A2A_GRPC_PORT']}"


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token is not None else ()


def message(text: str, **fields: Any) -> Message:
    return Message(
        role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)], **fields
    )


def message_03(text: str, **fields: Any) -> v03.Message:
    return v03.Message(
        role=v03.ROLE_USER, message_id=uuid.uuid4().hex, content=[v03.Part(text=text)], **fields
    )


def reason_of(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = status_from_call(error)
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    return info


def trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for name, value in error.trailing_metadata() or ():
        if name == key:
            return str(value)
    return None


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """The error a unary call or a stream ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return caught.value


@pytest.fixture
async def channel(adapter: AdapterProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(target(adapter)) as opened:
        yield opened


# -- the card -----------------------------------------------------------------------------


async def test_card_lists_grpc_for_both_versions(adapter: AdapterProcess) -> None:
    async with httpx.AsyncClient(base_url=adapter.url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
    grpc_interfaces = [i for i in card["supportedInterfaces"] if i["protocolBinding"] == "GRPC"]
    url = f"http://{target(adapter)}"
    assert grpc_interfaces == [
        {"url": url, "protocolBinding": "GRPC", "protocolVersion": "1.0"},
        {"url": url, "protocolBinding": "GRPC", "protocolVersion": "0.3"},
    ]


# -- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_calls_without_a_valid_token_are_unauthenticated(
    channel: grpc.aio.Channel, token: str | None
) -> None:
    metadata = bearer(token)
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    legacy = v03_grpc.A2AServiceStub(channel)
    calls = [
        stub.GetTask(GetTaskRequest(id="anything"), metadata=metadata),
        stub.SendMessage(SendMessageRequest(message=message("hi")), metadata=metadata),
        stub.SendStreamingMessage(SendMessageRequest(message=message("hi")), metadata=metadata),
        stub.ListTasks(ListTasksRequest(), metadata=metadata),
        legacy.SendStreamingMessage(
            v03.SendMessageRequest(request=message_03("hi")), metadata=metadata
        ),
        legacy.GetTask(v03.GetTaskRequest(name="tasks/anything"), metadata=metadata),
    ]
    for call in calls:
        error = await failure(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert "Unauthorized" in (error.details() or "")


async def test_a_basic_scheme_is_not_a_bearer_token(
    channel: grpc.aio.Channel, adapter: AdapterProcess
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    error = await failure(
        stub.ListTasks(ListTasksRequest(), metadata=(("authorization", f"Basic {adapter.token}"),))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# -- errors -------------------------------------------------------------------------------


async def test_errors_have_grpc_codes(channel: grpc.aio.Channel, adapter: AdapterProcess) -> None:
    auth = bearer(adapter.token)
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    legacy = v03_grpc.A2AServiceStub(channel)

    error = await failure(stub.GetTask(GetTaskRequest(id=str(uuid.uuid4())), metadata=auth))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(error).reason == "TASK_NOT_FOUND"
    error = await failure(legacy.GetTask(v03.GetTaskRequest(name="tasks/nope"), metadata=auth))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    done = await stub.SendMessage(SendMessageRequest(message=message("finish me")), metadata=auth)
    assert done.task.status.state == TaskState.TASK_STATE_COMPLETED
    error = await failure(stub.CancelTask(CancelTaskRequest(id=done.task.id), metadata=auth))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error).reason == "TASK_NOT_CANCELABLE"

    # Refused by the handler before a task starts: a data part, a malformed model.
    data_part = Part()
    data_part.data.struct_value.update({"x": 1})
    request = SendMessageRequest(message=message("look"))
    request.message.parts.append(data_part)
    error = await failure(stub.SendStreamingMessage(request, metadata=auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "data part" in (error.details() or "")
    bad_model = SendMessageRequest(message=message("hi"))
    bad_model.metadata.update({"shared": {"model": {"providerID": "fake"}}})
    error = await failure(stub.SendMessage(bad_model, metadata=auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "providerID and modelID" in (error.details() or "")

    # Refused by the input guard: a file URL outside the workspace, a bad session id.
    outside = SendMessageRequest(message=message("read"))
    outside.message.parts.append(Part(url="file:///etc/passwd", media_type="text/plain"))
    error = await failure(stub.SendMessage(outside, metadata=auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inside the workspace root" in (error.details() or "")
    legacy_outside = v03.SendMessageRequest(request=message_03("read"))
    legacy_outside.request.content.append(
        v03.Part(file=v03.FilePart(file_with_uri="file:///etc/passwd", mime_type="text/plain"))
    )
    error = await failure(legacy.SendStreamingMessage(legacy_outside, metadata=auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    traversal = SendMessageRequest(message=message("hi"))
    traversal.metadata.update({"shared": {"session": {"id": "ses_x/../ses_y"}}})
    error = await failure(stub.SendMessage(traversal, metadata=auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "session id" in (error.details() or "")


async def test_a_message_over_the_body_limit_is_refused(
    channel: grpc.aio.Channel, adapter: AdapterProcess
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    big = SendMessageRequest(message=message("big"))
    big.message.parts.append(Part(raw=b"x" * (1024 * 1024 + 1), media_type="text/plain"))
    error = await failure(stub.SendMessage(big, metadata=bearer(adapter.token)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The listener is still fine afterwards.
    listed = await stub.ListTasks(ListTasksRequest(page_size=1), metadata=bearer(adapter.token))
    assert listed.page_size == 1


# -- principals and limits, on an adapter with several callers ------------------------------

RATE = 30


@pytest.fixture(scope="module")
def guarded(
    opencode: ManagedOpenCode, workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    root = tmp_path_factory.mktemp("grpc-guarded")
    adapter = start_adapter(
        opencode,
        workspace,
        root,
        A2A_GRPC_PORT=str(free_port()),
        A2A_RATE_LIMIT_PER_MINUTE=str(RATE),
        A2A_MAX_CONCURRENT_TURNS_PER_PRINCIPAL="1",
    )
    yield adapter
    adapter.stop()


@pytest.fixture
async def guarded_channel(guarded: AdapterProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(target(guarded)) as opened:
        yield opened


async def test_another_principal_cannot_reach_a_task(
    guarded: AdapterProcess, guarded_channel: grpc.aio.Channel
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(guarded_channel)
    legacy = v03_grpc.A2AServiceStub(guarded_channel)
    sent = await stub.SendMessage(
        SendMessageRequest(message=message("alice over grpc")), metadata=bearer(ALICE)
    )
    task = sent.task.id
    assert sent.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert (await stub.GetTask(GetTaskRequest(id=task), metadata=bearer(ALICE))).id == task

    as_bob = bearer(BOB)
    for call in (
        stub.GetTask(GetTaskRequest(id=task), metadata=as_bob),
        stub.CancelTask(CancelTaskRequest(id=task), metadata=as_bob),
        stub.SubscribeToTask(SubscribeToTaskRequest(id=task), metadata=as_bob),
        legacy.GetTask(v03.GetTaskRequest(name=f"tasks/{task}"), metadata=as_bob),
        legacy.CancelTask(v03.CancelTaskRequest(name=f"tasks/{task}"), metadata=as_bob),
        legacy.TaskSubscription(v03.TaskSubscriptionRequest(name=f"tasks/{task}"), metadata=as_bob),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
    listed = await stub.ListTasks(ListTasksRequest(), metadata=as_bob)
    assert task not in {t.id for t in listed.tasks}
    # A message naming alice's task does not reach it.
    error = await failure(
        stub.SendMessage(
            SendMessageRequest(message=message("mine?", task_id=task)), metadata=as_bob
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    # One principal whatever the transport: alice sees the task over HTTP, bob does not.
    alice, bob = Caller(guarded.url, ALICE), Caller(guarded.url, BOB)
    try:
        assert (await alice.rest("GET", f"/tasks/{task}")).status_code == 200
        assert (await bob.rest("GET", f"/tasks/{task}")).status_code == 404
    finally:
        await alice.aclose()
        await bob.aclose()
    log = guarded.log_path.read_text(errors="replace")
    assert "request GRPC /lf.a2a.v1.A2AService/SendMessage status=OK principal=alice" in log
    assert "GetTask status=NOT_FOUND principal=bob" in log
    assert ALICE not in log and BOB not in log


async def test_rate_limit_is_shared_with_http(
    guarded: AdapterProcess, guarded_channel: grpc.aio.Channel
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(guarded_channel)
    as_carol = bearer(CAROL)
    for _ in range(RATE):
        await stub.ListTasks(ListTasksRequest(page_size=1), metadata=as_carol)
    started = time.monotonic()
    error = await failure(stub.ListTasks(ListTasksRequest(), metadata=as_carol))
    assert time.monotonic() - started < 1.0
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = reason_of(error)
    assert info.reason == "RATE_LIMITED" and info.domain == "opencode-a2a-server"
    retry = trailer(error, "retry-after")
    assert retry is not None and 1 <= int(retry) <= 12
    assert "A2A_RATE_LIMIT_PER_MINUTE" in (error.details() or "")
    error = await failure(
        stub.SendStreamingMessage(SendMessageRequest(message=message("hi")), metadata=as_carol)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    carol = Caller(guarded.url, CAROL)
    try:
        response = await carol.rest("GET", "/tasks")
        assert response.status_code == 429, "the bucket is the same on every transport"
    finally:
        await carol.aclose()
    # Another principal is not limited.
    await stub.ListTasks(ListTasksRequest(page_size=1), metadata=bearer(ALICE))


async def test_running_turn_cap(guarded: AdapterProcess, guarded_channel: grpc.aio.Channel) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(guarded_channel)
    legacy = v03_grpc.A2AServiceStub(guarded_channel)
    as_bob = bearer(BOB)
    first = stub.SendStreamingMessage(
        SendMessageRequest(message=message("[[slow:30:0.1]] long")), metadata=as_bob
    )
    events: list[Any] = []
    working = asyncio.Event()

    async def follow() -> None:
        async for event in first:
            events.append(event)
            if event.HasField("status_update"):
                working.set()

    runner = asyncio.create_task(follow())
    await asyncio.wait_for(working.wait(), 30)

    started = time.monotonic()
    for call in (
        stub.SendMessage(SendMessageRequest(message=message("second")), metadata=as_bob),
        stub.SendStreamingMessage(SendMessageRequest(message=message("second")), metadata=as_bob),
        legacy.SendMessage(v03.SendMessageRequest(request=message_03("second")), metadata=as_bob),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        info = reason_of(error)
        assert info.reason == "TOO_MANY_ACTIVE_TURNS"
        assert info.metadata["max_concurrent_turns"] == "1"
        assert trailer(error, "retry-after") == "5"
    assert time.monotonic() - started < 3.0, "every refusal came at once"
    assert not runner.done()
    # The cap is one count over both transports.
    bob = Caller(guarded.url, BOB)
    try:
        response = await bob.rest("POST", "/message:send", {"message": json_message("over http")})
        assert response.status_code == 429
    finally:
        await bob.aclose()

    await asyncio.wait_for(runner, 60)
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    again = await stub.SendMessage(SendMessageRequest(message=message("third")), metadata=as_bob)
    assert again.task.status.state == TaskState.TASK_STATE_COMPLETED


def json_message(text: str) -> dict[str, Any]:
    return {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}


# -- lifecycle ------------------------------------------------------------------------------


def test_a_busy_grpc_port_stops_startup_with_a_clear_error(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = adapter_env(opencode, workspace, tmp_path / "adapter.db")
        env["A2A_GRPC_PORT"] = str(taken.getsockname()[1])
        adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path)
        with pytest.raises(RuntimeError, match=r"cannot listen for gRPC on 127\.0\.0\.1:"):
            adapter.start(timeout=30)
        adapter.stop()


async def test_shutdown_hands_off_open_grpc_streams(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    """SIGTERM drains: past the grace the gRPC stream ends with the hand-off status."""
    env = adapter_env(opencode, workspace, tmp_path / "adapter.db")
    env["A2A_GRPC_PORT"] = str(free_port())
    env["A2A_SHUTDOWN_GRACE_SECONDS"] = "1"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    try:
        async with grpc.aio.insecure_channel(target(adapter)) as opened:
            stub = a2a_pb2_grpc.A2AServiceStub(opened)
            stream = stub.SendStreamingMessage(
                SendMessageRequest(message=message("[[slow:100:0.1]] long")),
                metadata=bearer(adapter.token),
            )
            events = []
            started = 0.0
            async for event in stream:
                events.append(event)
                if len(events) == 3:
                    started = time.monotonic()
                    assert adapter.proc is not None
                    adapter.proc.send_signal(signal.SIGTERM)
            assert time.monotonic() - started < 10
        last = events[-1]
        assert last.HasField("status_update")
        assert last.status_update.status.state == TaskState.TASK_STATE_WORKING
        handoff = json_format.MessageToDict(last.status_update.metadata)["opencode"]["handoff"]
        assert handoff == {"reason": "shutdown"}
        assert adapter.proc is not None
        assert adapter.proc.wait(15) == 0
        log = adapter.log_path.read_text(errors="replace")
        assert "Application shutdown complete" in log
        assert "Traceback" not in log
    finally:
        adapter.stop()


async def test_jwt_callers_over_grpc(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = JwksServer(json.loads(RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1"})
    issuer = "https://id.example.test/"

    def token(**claims: Any) -> str:
        body = {"iss": issuer, "aud": "opencode", "sub": "erin", "exp": int(time.time()) + 300}
        return jwt.encode(body | claims, key, algorithm="RS256", headers={"kid": "k1"})

    adapter = start_adapter(
        opencode,
        workspace,
        tmp_path,
        A2A_GRPC_PORT=str(free_port()),
        A2A_JWT_ISSUER=issuer,
        A2A_JWT_AUDIENCE="opencode",
        A2A_JWT_JWKS_URL=jwks.url,
    )
    try:
        async with grpc.aio.insecure_channel(target(adapter)) as opened:
            stub = a2a_pb2_grpc.A2AServiceStub(opened)
            sent = await stub.SendMessage(
                SendMessageRequest(message=message("hello as erin")), metadata=bearer(token())
            )
            assert sent.task.status.state == TaskState.TASK_STATE_COMPLETED
            got = await stub.GetTask(GetTaskRequest(id=sent.task.id), metadata=bearer(token()))
            assert got.id == sent.task.id
            error = await failure(
                stub.GetTask(GetTaskRequest(id=sent.task.id), metadata=bearer(ALICE))
            )
            assert error.code() == grpc.StatusCode.NOT_FOUND
            error = await failure(
                stub.ListTasks(
                    ListTasksRequest(), metadata=bearer(token(exp=int(time.time()) - 600))
                )
            )
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "expired" in (error.details() or "")
        assert "principal=erin" in adapter.log_path.read_text(errors="replace")
    finally:
        adapter.stop()
        jwks.stop()


async def test_grpc_calls_are_counted_in_the_metrics(
    channel: grpc.aio.Channel, adapter: AdapterProcess
) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    error = await failure(
        stub.GetTask(GetTaskRequest(id="no-such-task"), metadata=bearer(adapter.token))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    headers = {"Authorization": f"Bearer {adapter.token}"}
    async with httpx.AsyncClient(base_url=adapter.url, headers=headers) as http:
        text = (await http.get("/metrics")).text
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("opencode_a2a_requests_total{")
        and 'method="GetTask"' in line
        and 'transport="grpc"' in line
        and 'protocol="1.0"' in line
        and 'status="NOT_FOUND"' in line
    ]
    assert len(counted) == 1
    assert float(counted[0].rsplit(" ", 1)[1]) >= 1
