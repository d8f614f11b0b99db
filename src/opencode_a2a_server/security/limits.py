"""Per-principal limits that answer at once: a request rate and a cap on running turns.

- `RateLimitMiddleware`: a token bucket per principal (A2A_RATE_LIMIT_PER_MINUTE).
  Every authenticated request takes one token; an empty bucket answers HTTP 429 with
  `Retry-After` before the body is read, whatever the transport.
- `TurnLimitMiddleware` + `TurnGate`: at most N turns of one principal in state
  submitted/working (A2A_MAX_CONCURRENT_TURNS_PER_PRINCIPAL; input-required turns do
  not count). A message that would start one more turn is refused at once: HTTP 429
  (HTTP+JSON) or JSON-RPC error -32029 `TOO_MANY_ACTIVE_TURNS`, never a stream.
  Follow-up messages on an existing task (answers to asks) are not new turns and pass.

The gate learns task states from the task store the request handler writes through
(`TurnGate.track`), and holds a reservation from the moment a request passes until its
task appears, so a burst of simultaneous requests cannot slip past the cap.
The gRPC listener (grpc_server.py) uses the same limiter and gate.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope
from a2a.server.tasks import TaskStore
from a2a.types.a2a_pb2 import ListTasksRequest, ListTasksResponse, Task, TaskState
from starlette.types import ASGIApp, Receive, Scope, Send

from .http import principal_of_scope, send_json, send_refusal
from .input import read_body

TOO_MANY_ACTIVE_TURNS_CODE = -32029
TURN_RETRY_AFTER_SECONDS = 5
MAX_BUCKETS = 10_000

# Paths that start a turn over HTTP+JSON: 1.0 and 0.3 (/v1), optionally with a tenant.
_REST_SEND = re.compile(r"^(?:/[^/]+)?(?:/v1)?/message:(?:send|stream)$")
_JSONRPC_TURN_METHODS = frozenset(
    {
        "SendMessage",
        "SendStreamingMessage",
        "message/send",
        "message/stream",
        "opencode.sessions.prompt_async",
        "opencode.sessions.command",
    }
)
_RUNNING = frozenset({TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING})
_WAITING = frozenset({TaskState.TASK_STATE_INPUT_REQUIRED})


# -- request rate ---------------------------------------------------------------------


def rate_limited_message(per_minute: int, retry_after: int) -> str:
    return (
        f"Too many requests: at most {per_minute} per minute per caller "
        f"(A2A_RATE_LIMIT_PER_MINUTE); retry in {retry_after} s."
    )


def too_many_turns_message(cap: int, retry_after: int) -> str:
    return (
        f"Too many active turns: this caller already has {cap} running "
        f"(A2A_MAX_CONCURRENT_TURNS_PER_PRINCIPAL); wait for one to finish or cancel it, "
        f"then retry in about {retry_after} s."
    )


class RateLimiter:
    """A token bucket per principal: `per_minute` requests, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, principal: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = self._clock()
        tokens, last = self._buckets.get(principal, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[principal] = (tokens - 1.0, now)
            self._prune(now)
            return 0.0
        self._buckets[principal] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        if len(self._buckets) <= MAX_BUCKETS:
            return
        full = [
            name
            for name, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.capacity
        ]
        for name in full:
            del self._buckets[name]


class RateLimitMiddleware:
    """HTTP 429 + Retry-After when a principal's bucket is empty (runs after auth)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_of_scope(scope) if scope["type"] == "http" else ""
        if not principal:  # public routes and non-HTTP scopes
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(principal)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        per_minute = int(self.limiter.capacity)
        await send_json(
            send,
            429,
            {
                "error": rate_limited_message(per_minute, retry_after),
                "type": "RATE_LIMITED",
                "retry_after_seconds": retry_after,
            },
            [(b"retry-after", str(retry_after).encode())],
        )


# -- running turns --------------------------------------------------------------------


class _Reservation:
    __slots__ = ("open", "principal")

    def __init__(self, principal: str) -> None:
        self.principal = principal
        self.open = True


class TurnGate:
    """Counts each principal's running turns and admits new ones up to `max_per_principal`."""

    def __init__(self, max_per_principal: int) -> None:
        self.max_per_principal = max_per_principal
        self._states: dict[tuple[str, str], int] = {}
        self._running: dict[str, set[str]] = {}
        self._reserved: dict[str, deque[_Reservation]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_per_principal > 0

    def track(self, store: TaskStore) -> TaskStore:
        """The store to give the request handler: it reports task states to this gate."""
        return _TrackingTaskStore(store, self) if self.enabled else store

    def running(self, principal: str) -> int:
        return len(self._running.get(principal, ()))

    def reserve(self, principal: str) -> _Reservation | None:
        """A slot for one new turn, or None when the principal is at the cap."""
        queue = self._reserved.setdefault(principal, deque())
        if self.running(principal) + len(queue) >= self.max_per_principal:
            if not queue:
                del self._reserved[principal]
            return None
        reservation = _Reservation(principal)
        queue.append(reservation)
        return reservation

    def release(self, reservation: _Reservation) -> None:
        """The request is over; a reservation no task took is given back."""
        if not reservation.open:
            return
        reservation.open = False
        queue = self._reserved.get(reservation.principal)
        if queue is not None:
            try:
                queue.remove(reservation)
            except ValueError:
                pass
            if not queue:
                del self._reserved[reservation.principal]

    def observe(self, principal: str, task_id: str, state: int) -> None:
        """A task of `principal` was saved in `state`."""
        key = (principal, task_id)
        new = key not in self._states
        running = self._running.setdefault(principal, set())
        if state in _RUNNING or state in _WAITING:
            self._states[key] = state
            if state in _RUNNING:
                running.add(task_id)
            else:
                running.discard(task_id)
            if new and state in _RUNNING:
                self._take_reservation(principal)
        else:
            self._states.pop(key, None)
            running.discard(task_id)
        if not running:
            del self._running[principal]

    def forget(self, principal: str, task_id: str) -> None:
        self.observe(principal, task_id, TaskState.TASK_STATE_UNSPECIFIED)

    def _take_reservation(self, principal: str) -> None:
        queue = self._reserved.get(principal)
        if queue:
            queue.popleft().open = False
            if not queue:
                del self._reserved[principal]


class _TrackingTaskStore(TaskStore):
    """Passes everything to the real store and tells the gate each task's state."""

    def __init__(self, inner: TaskStore, gate: TurnGate) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await self._inner.save(task, context)
        self._gate.observe(resolve_user_scope(context), task.id, task.status.state)

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        return await self._inner.get(task_id, context)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        return await self._inner.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await self._inner.delete(task_id, context)
        self._gate.forget(resolve_user_scope(context), task_id)


class TurnLimitMiddleware:
    """Refuses a message that would start a principal's N+1st running turn, at once."""

    def __init__(self, app: ASGIApp, gate: TurnGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_of_scope(scope) if scope["type"] == "http" else ""
        if not principal or scope["method"] != "POST" or not self._candidate(scope["path"]):
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        rpc = scope["path"] == "/"
        request = _parse(body)
        if request is None or not _starts_turn(request, rpc=rpc):
            await self.app(scope, replay, send)
            return
        reservation = self.gate.reserve(principal)
        if reservation is None:
            await self._refuse(send, request, rpc=rpc)
            return
        try:
            await self.app(scope, replay, send)
        finally:
            self.gate.release(reservation)

    @staticmethod
    def _candidate(path: str) -> bool:
        return path == "/" or bool(_REST_SEND.match(path))

    async def _refuse(self, send: Send, request: dict[str, Any], *, rpc: bool) -> None:
        cap = self.gate.max_per_principal
        retry = TURN_RETRY_AFTER_SECONDS
        await send_refusal(
            send,
            request,
            rpc=rpc,
            jsonrpc_code=TOO_MANY_ACTIVE_TURNS_CODE,
            http_status=429,
            status="RESOURCE_EXHAUSTED",
            reason="TOO_MANY_ACTIVE_TURNS",
            message=too_many_turns_message(cap, retry),
            details={"retry_after_seconds": retry, "max_concurrent_turns": cap},
            retry_after=retry,
        )


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _starts_turn(request: dict[str, Any], *, rpc: bool) -> bool:
    if rpc:
        if request.get("method") not in _JSONRPC_TURN_METHODS:
            return False
        params = request.get("params")
        if not isinstance(params, dict):
            return False
        if str(request["method"]).startswith("opencode."):
            return True
        request = params
    message = request.get("message")
    if not isinstance(message, dict):
        return False  # the handler refuses it; not a turn
    return not (message.get("taskId") or message.get("task_id"))
