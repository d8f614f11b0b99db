"""Per-principal limits: the request-rate bucket and the running-turn cap."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.server.context import ServerCallContext
from a2a.server.routes.common import StarletteUser
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import Task, TaskState
from starlette.applications import Starlette
from starlette.authentication import SimpleUser
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opencode_a2a_server.auth import Authenticator, BearerAuthMiddleware, BodyLimitMiddleware
from opencode_a2a_server.security.credentials import TokenTable, bearer_credential
from opencode_a2a_server.security.limits import (
    TOO_MANY_ACTIVE_TURNS_CODE,
    RateLimiter,
    RateLimitMiddleware,
    TurnGate,
    TurnLimitMiddleware,
)

WORKING = TaskState.TASK_STATE_WORKING
SUBMITTED = TaskState.TASK_STATE_SUBMITTED
INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED
COMPLETED = TaskState.TASK_STATE_COMPLETED
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def authenticated(app: Any) -> BearerAuthMiddleware:
    table = TokenTable([bearer_credential(token, name) for name, token in TOKENS.items()])
    return BearerAuthMiddleware(app, authenticator=Authenticator(table))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the token bucket --------------------------------------------------------------------


def test_bucket_allows_the_burst_then_says_how_long_to_wait():
    clock = Clock()
    limiter = RateLimiter(5, clock)
    assert [limiter.take("alice") for _ in range(5)] == [0.0] * 5
    wait = limiter.take("alice")
    assert wait == pytest.approx(12.0)  # one token per 60/5 seconds
    clock.now += 6
    assert limiter.take("alice") == pytest.approx(6.0)
    clock.now += 6
    assert limiter.take("alice") == 0.0


def test_buckets_are_per_principal():
    limiter = RateLimiter(1, Clock())
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") > 0
    assert limiter.take("bob") == 0.0


def test_bucket_refills_to_capacity_only():
    clock = Clock()
    limiter = RateLimiter(2, clock)
    clock.now += 3600
    assert [limiter.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_idle_buckets_are_pruned(monkeypatch):
    from opencode_a2a_server.security import limits

    monkeypatch.setattr(limits, "MAX_BUCKETS", 10)
    clock = Clock()
    limiter = RateLimiter(60, clock)
    for i in range(50):
        limiter.take(f"p{i}")
    clock.now += 120
    limiter.take("late")
    assert len(limiter._buckets) <= 11


# -- the rate limit middleware -------------------------------------------------------------


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
async def rate_client(calls) -> AsyncIterator[httpx.AsyncClient]:
    async def endpoint(request: Request) -> JSONResponse:
        calls.append(request.user.display_name)
        return JSONResponse({"ok": True, "size": len(await request.body())})

    async def card(request: Request) -> JSONResponse:
        return JSONResponse({"card": True})

    routes = [
        Route("/x", endpoint, methods=["GET", "POST"]),
        Route("/.well-known/agent-card.json", card),
    ]
    app = authenticated(
        RateLimitMiddleware(BodyLimitMiddleware(Starlette(routes=routes), 1024), RateLimiter(3))
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://adapter"
    ) as client:
        yield client


async def test_fourth_request_in_a_minute_is_429(rate_client, calls):
    for _ in range(3):
        assert (await rate_client.post("/x", headers=bearer("alice"), content=b"{}")).is_success
    response = await rate_client.post("/x", headers=bearer("alice"), content=b"x" * 5000)
    assert response.status_code == 429, "refused before the body limit looked at the body"
    assert response.headers["retry-after"] == "20"
    body = response.json()
    assert body["type"] == "RATE_LIMITED" and body["retry_after_seconds"] == 20
    assert "A2A_RATE_LIMIT_PER_MINUTE" in body["error"]
    assert calls == ["alice"] * 3
    assert (await rate_client.get("/x", headers=bearer("bob"))).is_success


async def test_public_and_refused_requests_take_no_token(rate_client):
    for _ in range(5):
        assert (await rate_client.get("/.well-known/agent-card.json")).is_success
        assert (await rate_client.get("/x")).status_code == 401
    for _ in range(3):
        assert (await rate_client.get("/x", headers=bearer("alice"))).is_success


# -- the turn gate ---------------------------------------------------------------------------


def test_gate_counts_running_tasks_only():
    gate = TurnGate(2)
    gate.observe("alice", "t1", SUBMITTED)
    gate.observe("alice", "t1", WORKING)
    gate.observe("alice", "t2", WORKING)
    assert gate.running("alice") == 2
    assert gate.reserve("alice") is None
    gate.observe("alice", "t2", INPUT_REQUIRED)
    assert gate.running("alice") == 1
    gate.observe("alice", "t2", WORKING)  # the ask was answered
    gate.observe("alice", "t1", COMPLETED)
    assert gate.running("alice") == 1
    assert gate.running("bob") == 0
    gate.forget("alice", "t2")
    assert gate.running("alice") == 0
    assert gate._states == {} and gate._running == {}


def test_reservations_hold_a_slot_until_the_task_appears():
    gate = TurnGate(1)
    first = gate.reserve("alice")
    assert first is not None
    assert gate.reserve("alice") is None, "a request in flight holds the only slot"
    gate.observe("alice", "t1", SUBMITTED)  # its task appears: the reservation is used up
    assert gate.reserve("alice") is None
    gate.release(first)  # the request ends; the task still runs
    assert gate.reserve("alice") is None
    gate.observe("alice", "t1", COMPLETED)
    assert gate.reserve("alice") is not None


def test_a_request_that_made_no_task_gives_its_slot_back():
    gate = TurnGate(1)
    reservation = gate.reserve("alice")
    assert reservation is not None
    gate.release(reservation)
    gate.release(reservation)  # twice is harmless
    assert gate.reserve("alice") is not None


async def test_tracking_store_reports_states():
    gate = TurnGate(3)
    store = gate.track(InMemoryTaskStore())
    context = ServerCallContext(user=StarletteUser(SimpleUser("alice")))
    task = Task(id="t1", context_id="c1")
    task.status.state = WORKING
    await store.save(task, context)
    assert gate.running("alice") == 1
    assert (await store.get("t1", context)).id == "t1"
    await store.delete("t1", context)
    assert gate.running("alice") == 0
    assert TurnGate(0).track(store) is store, "no wrapping when the cap is off"


# -- the turn limit middleware ---------------------------------------------------------------


class FakeAgent:
    """Starts a 'task' per turn-starting request; tasks run until `finish`ed."""

    def __init__(self, gate: TurnGate) -> None:
        self.gate = gate
        self.started: list[str] = []
        self.gates: list[asyncio.Event] = []

    async def endpoint(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "bad json"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "not an object"}, status_code=400)
        principal = request.user.display_name
        if request.url.path == "/" and body.get("method") not in ("SendMessage", "message/send"):
            return JSONResponse({"jsonrpc": "2.0", "id": body.get("id"), "result": {}})
        await asyncio.sleep(0.01)  # planning the turn takes a moment
        task_id = uuid.uuid4().hex
        self.gate.observe(principal, task_id, SUBMITTED)
        self.started.append(task_id)
        return JSONResponse({"task": task_id})

    def finish(self, principal: str) -> None:
        for task_id in self.started:
            self.gate.observe(principal, task_id, COMPLETED)


@pytest.fixture
def gate() -> TurnGate:
    return TurnGate(1)


@pytest.fixture
async def turn_client(gate) -> AsyncIterator[tuple[httpx.AsyncClient, FakeAgent]]:
    agent = FakeAgent(gate)
    routes = [
        Route("/", agent.endpoint, methods=["POST"]),
        Route("/message:send", agent.endpoint, methods=["POST"]),
        Route("/v1/message:stream", agent.endpoint, methods=["POST"]),
        Route("/tasks/{id}:cancel", agent.endpoint, methods=["POST"]),
    ]
    app = authenticated(
        BodyLimitMiddleware(TurnLimitMiddleware(Starlette(routes=routes), gate), 4096)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://adapter"
    ) as client:
        yield client, agent


def rpc(method: str, message: dict[str, Any] | None = None, id_: Any = 7) -> dict[str, Any]:
    message = message if message is not None else {"messageId": "m", "parts": [{"text": "hi"}]}
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": {"message": message}}


async def test_second_turn_is_refused_over_jsonrpc(turn_client):
    client, agent = turn_client
    assert (await client.post("/", headers=bearer("alice"), json=rpc("SendMessage"))).is_success
    response = await client.post("/", headers=bearer("alice"), json=rpc("message/send", id_="r2"))
    assert response.status_code == 200
    assert response.headers["retry-after"] == "5"
    error = response.json()
    assert error["id"] == "r2"
    assert error["error"]["code"] == TOO_MANY_ACTIVE_TURNS_CODE
    assert error["error"]["data"] == {
        "type": "TOO_MANY_ACTIVE_TURNS",
        "retry_after_seconds": 5,
        "max_concurrent_turns": 1,
    }
    assert len(agent.started) == 1
    # Other principals, other methods and follow-ups on a task are not limited.
    assert (await client.post("/", headers=bearer("bob"), json=rpc("SendMessage"))).is_success
    other = await client.post("/", headers=bearer("alice"), json=rpc("GetTask"))
    assert "error" not in other.json()
    follow_up = rpc("SendMessage", {"messageId": "m", "taskId": "t", "parts": []})
    assert "task" in (await client.post("/", headers=bearer("alice"), json=follow_up)).json()
    agent.finish("alice")
    assert (await client.post("/", headers=bearer("alice"), json=rpc("SendMessage"))).is_success


async def test_second_turn_is_refused_over_rest(turn_client):
    client, _ = turn_client
    body = {"message": {"messageId": "m", "parts": [{"text": "hi"}]}}
    assert (await client.post("/message:send", headers=bearer("alice"), json=body)).is_success
    response = await client.post("/v1/message:stream", headers=bearer("alice"), json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["reason"] == "TOO_MANY_ACTIVE_TURNS"
    assert error["details"][0]["metadata"]["retry_after_seconds"] == "5"
    # A cancel is not a new turn.
    assert (await client.post("/tasks/x:cancel", headers=bearer("alice"), json={})).is_success


async def test_a_burst_cannot_slip_past_the_cap(turn_client, gate):
    client, _ = turn_client
    gate.max_per_principal = 3
    responses = await asyncio.gather(
        *(client.post("/", headers=bearer("alice"), json=rpc("SendMessage")) for _ in range(12))
    )
    admitted = [r for r in responses if "task" in r.json()]
    refused = [r for r in responses if r.json().get("error", {}).get("code") == -32029]
    assert (len(admitted), len(refused)) == (3, 9)
    assert gate.running("alice") == 3


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"method": "SendMessage"}',
        b'{"method": "SendMessage", "params": 5}',
    ],
)
async def test_malformed_requests_reach_the_app(turn_client, gate, body):
    client, _ = turn_client
    gate.observe("alice", "busy", WORKING)
    response = await client.post("/", headers=bearer("alice"), content=body)
    assert response.status_code != 429
    assert "-32029" not in response.text
