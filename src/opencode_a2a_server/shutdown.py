"""Graceful shutdown: drain running turns, then leave the rest to the next process.

On the first SIGTERM (or SIGINT) the server keeps listening but starts *draining*:
messages that would start a turn are refused at once (JSON-RPC `-32030`, HTTP+JSON
HTTP 503, type `SHUTTING_DOWN`, with `Retry-After`), `/health` answers 503 `draining`
so a load balancer takes the replica out, and everything else (reading and cancelling
tasks, answering asks, open streams) goes on. Running turns may finish for up to
A2A_SHUTDOWN_GRACE_SECONDS; turns that end meanwhile end as usual (stored, pushed).

Then every turn still going is stopped here (`stop_turn`):

- OpenCode runs apart from this process (OPENCODE_BASE_URL): the turn goes on in
  OpenCode. Its task stays `working` (or `input-required`), its stream gets a last
  `working` status that says so and ends, and its lease is handed off: a restarted
  process, or another replica at its next lease check, re-attaches it at once.
- OpenCode is this process's child: it stops with us, so the turn cannot go on. It is
  aborted in OpenCode and its task ends `failed` (`SERVER_SHUTDOWN`, the partial
  answer kept), so the client learns now and can send the message again.

A second signal stops waiting: the same hand-off happens at once. Only after all this
does uvicorn's own shutdown begin, so its timeout never cuts the grace short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from a2a.types.a2a_pb2 import TaskState
from starlette.types import ASGIApp, Receive, Scope, Send

from .security.http import send_refusal
from .security.input import read_body
from .security.limits import _REST_SEND, _parse, _starts_turn

if TYPE_CHECKING:
    from .execution.executor import OpenCodeExecutor
    from .execution.turn import Turn

log = logging.getLogger(__name__)

SHUTTING_DOWN_CODE = -32030
RETRY_AFTER_SECONDS = 5
POLL_SECONDS = 0.2
SETTLE_SECONDS = 3.0  # after the hand-off, for the last events to be stored and pushed

HANDOFF_TEXT = (
    "This server is shutting down. The turn goes on in OpenCode and is picked up again "
    "by a restarted or another replica of this service: subscribe to the task again "
    "(or read it) to follow it."
)
ENDED_TEXT = (
    "This server shut down before the turn finished, and the OpenCode it runs stopped "
    "with it, so the turn was stopped (A2A_SHUTDOWN_GRACE_SECONDS). What it had "
    "answered so far is kept; send the message again to go on."
)


class Drain:
    """The shutdown sequence of one server process."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self.stopped = False  # turns handed off; only health and card are served
        self.forced = False
        self.exit_server: Callable[[bool], None] | None = None  # set by the CLI
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._deadline = 0.0

    def attach(self) -> None:
        """Bind to the running event loop (at startup); signals are honoured from now."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    def request(self) -> bool:
        """A stop signal arrived (called from the signal handler).

        Returns False when the application is not up yet: the caller stops as usual.
        """
        if self._loop is None or self._loop.is_closed():
            return False
        self._loop.call_soon_threadsafe(self._on_signal)
        return True

    def _on_signal(self) -> None:
        assert self._loop is not None and self._wake is not None
        if not self.draining:
            self.draining = True
            self._deadline = self._loop.time() + self.grace
        else:
            self.forced = True
            log.warning("second stop signal: not waiting for running turns any longer")
        self._wake.set()

    async def supervise(
        self,
        running: Callable[[], int],
        busy: Callable[[], int],
        stop_turns: Callable[[], Awaitable[None]],
    ) -> None:
        """Wait for a stop signal, drain, stop the remaining turns, then stop the server.

        `running` counts the turns working now; `busy` is 0 once nothing is left to
        wait for (turns, requests the SDK is still storing, push deliveries).
        """
        assert self._loop is not None and self._wake is not None
        await self._wake.wait()
        log.info(
            "stop signal: draining, %d turn(s) running; waiting up to %g s "
            "(A2A_SHUTDOWN_GRACE_SECONDS)",
            running(),
            self.grace,
        )
        while not self.forced:
            remaining = self._deadline - self._loop.time()
            if busy() == 0 or remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(POLL_SECONDS, remaining))
        left = running()
        if left:
            log.warning("shutdown grace over: stopping %d running turn(s)", left)
        else:
            log.info("no turn running any more: shutting down")
        await stop_turns()
        self.stopped = True
        if self.exit_server is not None:
            self.exit_server(self.forced)

    async def settle(self, busy: Callable[[], int]) -> None:
        """Wait a little for events already published to be stored and pushed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0 if self.forced else SETTLE_SECONDS)
        for _ in range(int(SETTLE_SECONDS / 0.05)):
            if not busy() or loop.time() >= deadline:
                return
            await asyncio.sleep(0.05)


async def stop_turn(
    executor: OpenCodeExecutor, turn: Turn, task_id: str, upstream_continues: bool
) -> None:
    """Before its runner is cancelled: hand a turn off, or end it (see the module doc)."""
    if upstream_continues:
        executor.handed_off.add(task_id)
        if not turn.paused:
            await _bounded(
                turn.stream.status(
                    TaskState.TASK_STATE_WORKING,
                    HANDOFF_TEXT,
                    metadata={"opencode": {"handoff": {"reason": "shutdown"}}},
                )
            )
        return
    await _bounded(
        turn.stream.status(
            TaskState.TASK_STATE_FAILED,
            ENDED_TEXT,
            metadata={
                "shared": {"session": {"id": turn.session_id}},
                "opencode": {"error": {"type": "SERVER_SHUTDOWN", "retryable": True}},
            },
        )
    )
    for ask in await executor.interrupts.pending_for_task(task_id):
        await _bounded(executor.interrupts.withdraw(ask, "shutdown"))
    await _bounded(executor.client.abort(turn.session_id, turn.request.directory))


async def _bounded(work: Awaitable[Any], timeout: float = 3.0) -> None:
    try:
        await asyncio.wait_for(work, timeout)
    except Exception as exc:
        log.warning("shutdown step failed: %s", exc or type(exc).__name__)


class DrainMiddleware:
    """While draining, refuses messages that would start a turn; once stopped, all but
    health and the card."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.drain.draining:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if scope["method"] == "GET" and (path == "/health" or path.startswith("/.well-known/")):
            await self.app(scope, receive, send)
            return
        rpc = path == "/"
        request: dict[str, Any] | None = None
        if scope["method"] == "POST" and (rpc or _REST_SEND.match(path)):
            body, receive = await read_body(receive)
            request = _parse(body)
        starts_turn = request is not None and _starts_turn(request, rpc=rpc)
        if self.drain.stopped or starts_turn:
            await _refuse(send, request, rpc=rpc)
            return
        await self.app(scope, receive, send)


SHUTTING_DOWN_MESSAGE = (
    "The server is shutting down and takes no new turns; retry in a few seconds, "
    "on another replica or after the restart."
)


async def _refuse(send: Send, request: dict[str, Any] | None, *, rpc: bool) -> None:
    await send_refusal(
        send,
        request,
        rpc=rpc,
        jsonrpc_code=SHUTTING_DOWN_CODE,
        http_status=503,
        status="UNAVAILABLE",
        reason="SHUTTING_DOWN",
        message=SHUTTING_DOWN_MESSAGE,
        details={"retry_after_seconds": RETRY_AFTER_SECONDS},
        retry_after=RETRY_AFTER_SECONDS,
    )
