"""A thin harness over the official a2a-sdk client, for every protocol version and binding."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import grpc.aio
import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

COMBOS = [
    ("1.0", "JSONRPC"),
    ("1.0", "HTTP+JSON"),
    ("0.3", "JSONRPC"),
    ("0.3", "HTTP+JSON"),
    ("1.0", "GRPC"),
    ("0.3", "GRPC"),
]


def _with_bearer(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = [(k, v) for k, v in (details.metadata or ()) if k.lower() != "authorization"]
    metadata.append(("authorization", f"Bearer {token}"))
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


# grpc.aio files an interceptor under its first matching kind only: one class per kind.
class BearerUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_bearer(details, self.token), request)


class BearerStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_bearer(details, self.token), request)


def grpc_target(url: str) -> str:
    """`host:port` of a card's gRPC interface URL (`http://host:port`)."""
    return url.split("://", 1)[-1].rstrip("/")


def grpc_channel(url: str, token: str | None) -> grpc.aio.Channel:
    """A plaintext channel that sends `token` as bearer metadata (none when None)."""
    interceptors: list[Any] = [BearerUnary(token), BearerStream(token)] if token else []
    return grpc.aio.insecure_channel(grpc_target(url), interceptors=interceptors)


class A2AHarness:
    """Creates SDK clients pinned to one protocol version and transport binding."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self._http: list[httpx.AsyncClient] = []
        self._clients: list[Client] = []
        self._card: AgentCard | None = None

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()
        for http in self._http:
            await http.aclose()

    def http(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=120)
        self._http.append(client)
        return client

    async def card(self) -> AgentCard:
        if self._card is None:
            resolver = A2ACardResolver(self.http(), self.url)
            self._card = await resolver.get_agent_card()
        return self._card

    async def client(
        self, version: str = "1.0", binding: str = "JSONRPC", *, streaming: bool = True
    ) -> Client:
        full = await self.card()
        card = AgentCard()
        card.CopyFrom(full)
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(
            i
            for i in full.supported_interfaces
            if i.protocol_version == version and i.protocol_binding == binding
        )
        assert len(card.supported_interfaces) == 1, f"card lacks {binding} {version}"
        config = ClientConfig(
            streaming=streaming,
            httpx_client=self.http(),
            supported_protocol_bindings=[binding],
            grpc_channel_factory=lambda url: grpc_channel(url, self.token),
        )
        client = ClientFactory(config).create(card)
        self._clients.append(client)
        return client

    async def send(
        self,
        text: str | None = None,
        *,
        version: str = "1.0",
        binding: str = "JSONRPC",
        streaming: bool = True,
        context_id: str | None = None,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        parts: list[Part] | None = None,
    ) -> list[StreamResponse]:
        client = await self.client(version, binding, streaming=streaming)
        request = build_request(text, context_id, task_id, metadata, parts)
        return [event async for event in client.send_message(request)]

    async def get_task(self, task_id: str, version: str = "1.0", binding: str = "JSONRPC") -> Task:
        client = await self.client(version, binding)
        return await client.get_task(GetTaskRequest(id=task_id))

    async def cancel(self, task_id: str, version: str = "1.0", binding: str = "JSONRPC") -> Task:
        client = await self.client(version, binding)
        return await client.cancel_task(CancelTaskRequest(id=task_id))


def build_request(
    text: str | None,
    context_id: str | None = None,
    task_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    parts: list[Part] | None = None,
) -> SendMessageRequest:
    message = Message(
        role=Role.ROLE_USER,
        message_id=str(uuid.uuid4()),
        parts=parts if parts is not None else [Part(text=text or "")],
    )
    if context_id:
        message.context_id = context_id
    if task_id:
        message.task_id = task_id
    request = SendMessageRequest(message=message, configuration=SendMessageConfiguration())
    if metadata:
        struct = Struct()
        struct.update(metadata)
        request.metadata.CopyFrom(struct)
    return request


# -- reading results ---------------------------------------------------------------


def final_task(events: list[StreamResponse]) -> Task | None:
    """The Task object of a non-streaming reply (or the first Task of a stream)."""
    for event in events:
        if event.HasField("task"):
            return event.task
    return None


def states(events: list[StreamResponse]) -> list[int]:
    found = []
    for event in events:
        if event.HasField("status_update"):
            found.append(event.status_update.status.state)
        elif event.HasField("task"):
            found.append(event.task.status.state)
    return found


def last_status(events: list[StreamResponse]) -> Any:
    for event in reversed(events):
        if event.HasField("status_update"):
            return event.status_update
    raise AssertionError("no status update in stream")


def artifact_chunks(events: list[StreamResponse], block: str) -> list[Any]:
    """Artifact updates whose stream metadata names `block`."""
    chunks = []
    for event in events:
        if not event.HasField("artifact_update"):
            continue
        meta = json_format.MessageToDict(event.artifact_update.artifact.metadata)
        if meta.get("shared", {}).get("stream", {}).get("block_type") == block:
            chunks.append(event.artifact_update)
    return chunks


def streamed_text(events: list[StreamResponse], block: str = "text") -> str:
    """Text a client following append/replace semantics ends up with."""
    text = ""
    for update in artifact_chunks(events, block):
        chunk = "".join(p.text for p in update.artifact.parts)
        text = text + chunk if update.append else chunk
    return text


def artifact_text(task: Task, name: str = "response") -> str:
    for artifact in task.artifacts:
        if artifact.name == name:
            return "".join(p.text for p in artifact.parts)
    return ""


def task_id_of(events: list[StreamResponse]) -> str:
    for event in events:
        if event.HasField("task"):
            return event.task.id
        if event.HasField("status_update"):
            return event.status_update.task_id
        if event.HasField("artifact_update"):
            return event.artifact_update.task_id
    raise AssertionError("no task in events")


def metadata_of(obj: Any) -> dict[str, Any]:
    return json_format.MessageToDict(obj.metadata)


STATE = TaskState
