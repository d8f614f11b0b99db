"""Metrics rendering and labels, the JSON log format, and request ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from opencode_a2a_server.errors import UpstreamHTTPError
from opencode_a2a_server.observability import logs
from opencode_a2a_server.observability.metrics import MAX_OPERATIONS, Metrics
from opencode_a2a_server.observability.requests import (
    RequestLogMiddleware,
    note_method,
    request_labels,
)
from opencode_a2a_server.observability.turns import record_turn, state_label
from opencode_a2a_server.observability.upstream import UpstreamObserver, operation
from opencode_a2a_server.upstream.client import OpenCodeClient

from .fake_upstream import FakeUpstream


def samples(
    metrics: Metrics, text: bytes | None = None
) -> dict[tuple[str, tuple[Any, ...]], float]:
    from prometheus_client import generate_latest

    body = (text or generate_latest(metrics.registry)).decode()
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines into a buffer (restored afterwards)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


# -- labels --------------------------------------------------------------------


def test_upstream_operations_are_templated() -> None:
    assert operation("GET", "/session/ses_2b9f0c1d2e3fAbCdEf/message") == (
        "GET /session/{id}/message"
    )
    assert operation("POST", "/session/ses_abcdefghijklmnop/prompt_async") == (
        "POST /session/{id}/prompt_async"
    )
    assert operation("POST", "/permission/per_01HZX9/reply") == "POST /permission/{id}/reply"
    assert operation("GET", "/global/health") == "GET /global/health"
    assert operation("GET", "/experimental/worktree") == "GET /experimental/worktree"


def test_upstream_operation_labels_are_capped() -> None:
    metrics = Metrics()
    for i in range(MAX_OPERATIONS + 10):
        metrics.observe_upstream(f"GET /made-up-{chr(97 + i % 26)}{i}", 0.01, None)
    operations = {
        dict(labels)["operation"]
        for (name, labels) in samples(metrics)
        if name == "opencode_a2a_upstream_request_duration_seconds_count"
    }
    assert len(operations) == MAX_OPERATIONS + 1
    assert "other" in operations


def scope(path: str, route_path: str | None = None, **extra: Any) -> dict[str, Any]:
    route = Route(route_path, lambda r: Response()) if route_path else None
    base: dict[str, Any] = {"type": "http", "method": "POST", "path": path, "headers": []}
    if route is not None:
        base["route"] = route
    base.update(extra)
    return base


def test_request_labels_are_bounded() -> None:
    jsonrpc = scope("/", "/", headers=[(b"a2a-version", b"1.0")])
    note_method(jsonrpc, "SendStreamingMessage")
    assert request_labels(jsonrpc) == ("SendStreamingMessage", "jsonrpc", "1.0")
    old = scope("/", "/")
    note_method(old, "message/stream")
    assert request_labels(old) == ("message/stream", "jsonrpc", "0.3")
    rest = scope("/tasks/abc:cancel", "/tasks/{id}:cancel", path_params={"id": "abc"})
    rest["headers"] = [(b"a2a-version", b"1.0")]
    assert request_labels(rest) == ("POST /tasks/{id}:cancel", "http+json", "1.0")
    v03 = scope("/v1/message:send", "/v1/message:send")
    assert request_labels(v03) == ("POST /v1/message:send", "http+json", "0.3")
    tenant = scope("/acme/tasks/x", "/tasks/{id}", path_params={"tenant": "acme", "id": "x"})
    assert request_labels(tenant)[0] == "POST /{tenant}/tasks/{id}"
    assert request_labels(scope("/health", "/health")) == ("POST /health", "http", "-")
    assert request_labels(scope("/nothing/here")) == ("unrouted", "http", "-")
    assert request_labels(scope("/", "/"))[0:2] == ("invalid", "jsonrpc")


def test_state_labels() -> None:
    from a2a.types.a2a_pb2 import TaskState

    assert state_label(TaskState.TASK_STATE_COMPLETED) == "completed"
    assert state_label(TaskState.TASK_STATE_AUTH_REQUIRED) == "auth_required"
    assert state_label(None) == "unknown"
    assert state_label(0) == "unknown"


# -- the middleware on a small app ---------------------------------------------


def small_app(metrics: Metrics) -> Any:
    async def rpc(request: Request) -> Response:
        note_method(request.scope, "SendMessage")
        logging.getLogger("test.inner").info("inside the request")
        return JSONResponse({"ok": True})

    async def events(request: Request) -> Response:
        return PlainTextResponse("data: x\n\n", media_type="text/event-stream")

    async def task(request: Request) -> Response:
        return JSONResponse({"id": request.path_params["id"]})

    routes = [
        Route("/", rpc, methods=["POST"]),
        Route("/stream", events, methods=["GET"]),
        Route("/tasks/{id}", task),
        Mount("/{tenant}", routes=[Route("/tasks/{id}", task)]),
    ]
    return RequestLogMiddleware(Starlette(routes=routes), metrics=metrics)


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


async def test_requests_are_counted_with_labels_and_logged_as_json(
    captured: io.StringIO,
) -> None:
    metrics = Metrics()
    async with asgi_client(small_app(metrics)) as client:
        answer = await client.post("/", json={}, headers={"A2A-Version": "1.0"})
        assert answer.status_code == 200
        await client.get("/tasks/task-123")
        await client.get("/tasks/task-456")
        await client.get("/acme/tasks/task-789")
        await client.get("/stream")
    found = samples(metrics)
    key = "opencode_a2a_requests_total"
    assert found[(key, (("method", "SendMessage"), ("protocol", "1.0"), ("status", "200"), ("transport", "jsonrpc")))] == 1  # fmt: skip
    rest = (("method", "GET /tasks/{id}"), ("protocol", "0.3"), ("status", "200"), ("transport", "http+json"))  # fmt: skip
    assert found[(key, rest)] == 2
    tenant = (("method", "GET /{tenant}/tasks/{id}"), ("protocol", "0.3"), ("status", "200"), ("transport", "http+json"))  # fmt: skip
    assert found[(key, tenant)] == 1
    assert not any("task-123" in str(labels) for (_, labels) in found)
    assert found[("opencode_a2a_active_streams", ())] == 0
    lines = json_lines(captured)
    inner = next(line for line in lines if line["message"] == "inside the request")
    request_line = next(line for line in lines if line.get("method") == "SendMessage")
    assert inner["request_id"] == request_line["request_id"]
    assert request_line["status"] == 200 and request_line["transport"] == "jsonrpc"
    assert request_line["logger"] == "opencode_a2a_server.requests"
    assert isinstance(request_line["duration_ms"], float)


async def test_request_id_is_taken_when_sane_and_echoed(captured: io.StringIO) -> None:
    async with asgi_client(small_app(Metrics())) as client:
        kept = await client.post("/", json={}, headers={"X-Request-ID": "abc-123.def:7"})
        replaced = await client.post("/", json={}, headers={"X-Request-ID": "x" * 200})
        fresh = await client.post("/", json={})
    assert kept.headers["x-request-id"] == "abc-123.def:7"
    assert replaced.headers["x-request-id"] not in ("", "x" * 200)
    assert (
        fresh.headers["x-request-id"]
        and fresh.headers["x-request-id"] != (replaced.headers["x-request-id"])
    )
    ids = [line["request_id"] for line in json_lines(captured) if line.get("method")]
    assert "abc-123.def:7" in ids
    assert logs.current_request_id() is None  # reset after the request


def test_text_format_has_the_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
    logger = logging.getLogger("test.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = logs.request_id.set("rid-42")
        logger.warning("hello %s", "there")
        logs.request_id.reset(token)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert "[rid-42]: hello there" in first
    assert "[-]: outside" in second


def test_json_format_keeps_exceptions(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("test.exc").exception("it failed")
    (line,) = [entry for entry in json_lines(captured) if entry["logger"] == "test.exc"]
    assert line["level"] == "ERROR" and "ValueError: boom" in line["exception"]


# -- upstream calls --------------------------------------------------------------


async def test_upstream_calls_carry_the_request_id_and_are_timed(upstream: FakeUpstream) -> None:
    upstream.route(method="GET").respond(json={"id": "ses_x"})
    upstream.route(method="POST").respond(500, json={"message": "no"})
    metrics = Metrics()
    client = OpenCodeClient(upstream.url)
    client.observer = UpstreamObserver(metrics)
    token = logs.request_id.set("rid-upstream")
    try:
        await client.get_session("ses_0123456789abcdef")
        with pytest.raises(UpstreamHTTPError):
            await client.abort("ses_0123456789abcdef")
    finally:
        logs.request_id.reset(token)
        await client.aclose()
    seen = upstream.calls
    assert [r.headers.get("x-request-id") for r in seen] == ["rid-upstream"] * 2
    found = samples(metrics)
    get = (("operation", "GET /session/{id}"),)
    assert found[("opencode_a2a_upstream_request_duration_seconds_count", get)] == 1
    abort = (("kind", "http_5xx"), ("operation", "POST /session/{id}/abort"))
    assert found[("opencode_a2a_upstream_errors_total", abort)] == 1


# -- turns and scrape-time sources -------------------------------------------------


class _Stream:
    task_id, context_id, final_state = "t-1", "c-1", 3  # TASK_STATE_COMPLETED


class _Turn:
    stream = _Stream()
    session_id = "ses_1"
    first_text_at: float | None = None


def test_turn_is_logged_and_counted(captured: io.StringIO) -> None:
    import time

    metrics = Metrics()
    turn = _Turn()
    started = time.monotonic() - 2.0
    turn.first_text_at = started + 0.5
    token = logs.request_id.set("rid-turn")
    record_turn(turn, "alice", started, metrics)
    logs.request_id.reset(token)
    found = samples(metrics)
    assert found[("opencode_a2a_turns_total", (("state", "completed"),))] == 1
    assert found[("opencode_a2a_time_to_first_token_seconds_count", ())] == 1
    assert 0.4 < found[("opencode_a2a_time_to_first_token_seconds_sum", ())] < 0.6
    (line,) = [entry for entry in json_lines(captured) if entry["logger"].endswith("turns")]
    assert line["task_id"] == "t-1" and line["context_id"] == "c-1"
    assert line["session_id"] == "ses_1" and line["principal"] == "alice"
    assert line["state"] == "completed" and line["request_id"] == "rid-turn"
    assert line["duration_ms"] >= 2000 and line["ttft_ms"] == 500


async def test_scrape_reads_sources_and_refreshes() -> None:
    metrics = Metrics()
    reconnects = [0]
    metrics.watch_reconnects(lambda: reconnects[0])
    metrics.watch_push(lambda: {"delivered": 4, "failed": 1, "retries": 2, "refused": 0})

    async def refresh() -> None:
        metrics.pending_asks.set(3)

    metrics.refresh_with(refresh)
    reconnects[0] = 2
    found = samples(metrics, await metrics.render())
    assert found[("opencode_a2a_event_stream_reconnects_total", ())] == 2
    assert found[("opencode_a2a_push_deliveries_total", (("result", "delivered"),))] == 4
    assert found[("opencode_a2a_pending_asks", ())] == 3
    # A separate instance has its own registry: nothing leaks between apps.
    assert ("opencode_a2a_pending_asks", ()) in samples(Metrics())
    assert samples(Metrics())[("opencode_a2a_pending_asks", ())] == 0
