"""Metrics, JSON logs with request ids, and OpenTelemetry spans, on the real stack."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState
from prometheus_client.parser import text_string_to_metric_families

from opencode_a2a_server.testing.stack import AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, final_task
from .conftest import adapter_env

pytestmark = pytest.mark.e2e

V1 = {"A2A-Version": "1.0"}


def start(opencode: ManagedOpenCode, workspace: Path, root: Path, **extra: str) -> AdapterProcess:
    root.mkdir(parents=True, exist_ok=True)
    env = adapter_env(opencode, workspace, root / "adapter.db")
    env["A2A_LOG_PAYLOADS"] = "false"
    env.update(extra)
    return AdapterProcess(env, log_path=root / "adapter.log", cwd=root).start()


@pytest.fixture
def json_adapter(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> Iterator[AdapterProcess]:
    adapter = start(opencode, workspace, tmp_path / "json", A2A_LOG_FORMAT="json")
    yield adapter
    adapter.stop()


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def stream_message(
    client: httpx.AsyncClient, text: str, request_id: str | None = None
) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    """`SendStreamingMessage` over JSON-RPC; the response headers and the events."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendStreamingMessage",
        "params": {
            "message": {
                "messageId": str(uuid.uuid4()),
                "role": "ROLE_USER",
                "parts": [{"text": text}],
            }
        },
    }
    headers = dict(V1)
    if request_id:
        headers["X-Request-ID"] = request_id
    events = []
    async with client.stream("POST", "/", json=body, headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:])["result"])
    return response.headers, events


def log_lines(adapter: AdapterProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in adapter.log_path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


async def eventually(check: Any, timeout: float = 10) -> Any:
    for _ in range(int(timeout * 10)):
        result = check()
        if result:
            return result
        await asyncio.sleep(0.1)
    return check()


async def test_metrics_count_a_turn_and_need_auth(json_adapter: AdapterProcess) -> None:
    adapter = json_adapter
    auth = {"Authorization": f"Bearer {adapter.token}"}
    async with httpx.AsyncClient(base_url=adapter.url, headers=auth, timeout=60) as client:
        headers, events = await stream_message(client, "[[words:20]] count me", "e2e-rid-0001")
        assert headers["x-request-id"] == "e2e-rid-0001"
        task_id = events[0]["task"]["id"]
        assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
        harness = A2AHarness(adapter.url, adapter.token)
        try:
            rest_events = await harness.send("over rest", binding="HTTP+JSON")
        finally:
            await harness.aclose()
        assert final_task(rest_events) is not None or rest_events
        unauthenticated = await httpx.AsyncClient(base_url=adapter.url).get("/metrics")
        assert unauthenticated.status_code == 401
        # The turn's bookkeeping ends just after its last event: wait for it.
        text = ""

        async def scrape() -> bool:
            nonlocal text
            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            text = response.text
            return value(metric_samples(text), "opencode_a2a_turns_total", state="completed") >= 2

        for _ in range(100):
            if await scrape():
                break
            await asyncio.sleep(0.1)
    samples = metric_samples(text)
    assert value(samples, "opencode_a2a_turns_total", state="completed") == 2
    assert value(samples, "opencode_a2a_turn_duration_seconds_count", state="completed") == 2
    assert value(samples, "opencode_a2a_time_to_first_token_seconds_count") == 2
    assert value(samples, "opencode_a2a_time_to_first_token_seconds_sum") > 0
    prompt = value(
        samples,
        "opencode_a2a_upstream_request_duration_seconds_count",
        operation="POST /session/{id}/prompt_async",
    )
    assert prompt == 2
    assert (
        value(
            samples,
            "opencode_a2a_requests_total",
            method="SendStreamingMessage",
            transport="jsonrpc",
            protocol="1.0",
            status="200",
        )
        == 1
    )
    assert (
        value(
            samples,
            "opencode_a2a_requests_total",
            method="POST /message:stream",
            transport="http+json",
            protocol="1.0",
            status="200",
        )
        == 1
    )
    assert value(samples, "opencode_a2a_requests_total", method="unrouted", transport="http", protocol="-", status="401") >= 1  # fmt: skip
    assert value(samples, "opencode_a2a_active_streams") == 0
    assert value(samples, "opencode_a2a_pending_asks") == 0
    assert ("opencode_a2a_event_stream_reconnects_total", frozenset()) in samples
    assert task_id not in text  # no ids in labels

    # JSON logs: the turn's line has its identifiers and the request id of its request.
    lines = log_lines(adapter)
    turn = next(line for line in lines if line.get("task_id") == task_id)
    assert turn["logger"] == "opencode_a2a_server.turns"
    assert turn["state"] == "completed"
    assert turn["context_id"] == events[0]["task"]["contextId"]
    assert turn["session_id"].startswith("ses_")
    assert turn["principal"] == "default"
    assert turn["request_id"] == "e2e-rid-0001"
    assert turn["duration_ms"] >= turn["ttft_ms"] > 0
    request = next(
        line
        for line in lines
        if line.get("method") == "SendStreamingMessage" and line.get("request_id")
    )
    assert request["request_id"] == "e2e-rid-0001"
    assert request["status"] == 200 and request["transport"] == "jsonrpc"
    # Every line is JSON (uvicorn's own lines included).
    raw = adapter.log_path.read_text().splitlines()
    assert all(line.startswith("{") for line in raw if line.strip())


async def test_metrics_port_serves_metrics_apart(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    port = free_port()
    adapter = start(opencode, workspace, tmp_path / "port", A2A_METRICS_PORT=str(port))
    try:
        auth = {"Authorization": f"Bearer {adapter.token}"}
        async with httpx.AsyncClient(timeout=30) as client:
            main = await client.get(f"{adapter.url}/metrics", headers=auth)
            assert main.status_code == 404
            assert "opencode_a2a_" not in main.text
            await client.get(f"{adapter.url}/health", headers=auth)
            separate = await client.get(f"http://127.0.0.1:{port}/metrics")
            assert separate.status_code == 200
            samples = metric_samples(separate.text)
            # The health checks (the start-up probe's too) are counted by the main app.
            assert value(samples, "opencode_a2a_requests_total", method="GET /health", transport="http", protocol="-", status="200") >= 1  # fmt: skip
            assert value(samples, "opencode_a2a_requests_total", method="GET /metrics", transport="http", protocol="-", status="404") == 1  # fmt: skip
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 404
            assert (await client.post(f"http://127.0.0.1:{port}/metrics")).status_code == 405
    finally:
        adapter.stop()


# -- OpenTelemetry ------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.path == "/v1/traces":
            self.server.bodies.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A local OTLP/HTTP endpoint that keeps every POST to /v1/traces."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.bodies  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def exported_spans(bodies: list[bytes]) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for body in list(bodies):
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    return spans


@pytest.fixture
async def traced_adapter(
    opencode: ManagedOpenCode,
    workspace: Path,
    tmp_path: Path,
    otlp_receiver: tuple[str, list[bytes]],
) -> AsyncIterator[AdapterProcess]:
    endpoint, _ = otlp_receiver
    adapter = start(
        opencode,
        workspace,
        tmp_path / "otel",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="a2a-under-test",
    )
    yield adapter
    adapter.stop()


async def test_request_span_with_upstream_child_is_exported(
    traced_adapter: AdapterProcess, otlp_receiver: tuple[str, list[bytes]]
) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    _, bodies = otlp_receiver
    auth = {"Authorization": f"Bearer {traced_adapter.token}"}
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(base_url=traced_adapter.url, headers=auth, timeout=60) as client:
        client.headers["traceparent"] = f"00-{parent_trace}-00f067aa0ba902b7-01"
        _, events = await stream_message(client, "traced turn")
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"

    def found() -> tuple[Any, Any] | None:
        spans = exported_spans(bodies)
        servers = [s for s in spans if s.name == "SendStreamingMessage"]
        for server in servers:
            for child in spans:
                if (
                    child.name == "opencode POST /session/{id}/prompt_async"
                    and child.parent_span_id == server.span_id
                ):
                    return server, child
        return None

    pair = await eventually(found, timeout=15)
    assert pair, f"spans seen: {sorted({s.name for s in exported_spans(bodies)})}"
    server, child = pair
    assert server.kind == Span.SPAN_KIND_SERVER and child.kind == Span.SPAN_KIND_CLIENT
    assert server.trace_id.hex() == parent_trace  # joined the caller's trace
    assert child.trace_id == server.trace_id
    attributes = {a.key: a.value.string_value for a in server.attributes}
    assert attributes["a2a.transport"] == "jsonrpc"
    assert attributes["a2a.protocol_version"] == "1.0"


async def test_pending_asks_and_canceled_turns_are_reported(json_adapter: AdapterProcess) -> None:
    adapter = json_adapter
    auth = {"Authorization": f"Bearer {adapter.token}"}
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        events = await harness.send(
            "[[bash:echo metrics]] run it", metadata={"opencode": {"directory": "ask"}}
        )
        task = events[-1].status_update
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        async with httpx.AsyncClient(base_url=adapter.url, headers=auth, timeout=30) as client:
            waiting = metric_samples((await client.get("/metrics")).text)
            assert value(waiting, "opencode_a2a_pending_asks") == 1
            await harness.cancel(task.task_id)

            async def settled() -> dict[Any, float] | None:
                samples = metric_samples((await client.get("/metrics")).text)
                done = value(samples, "opencode_a2a_turns_total", state="canceled") == 1
                return samples if done else None

            for _ in range(100):
                samples = await settled()
                if samples:
                    break
                await asyncio.sleep(0.1)
    finally:
        await harness.aclose()
    assert samples, "the canceled turn was not counted"
    assert value(samples, "opencode_a2a_pending_asks") == 0
    assert value(samples, "opencode_a2a_turns_total", state="completed") == 0
