"""EventHub: one upstream SSE subscription, fanned out to every turn by session.

OpenCode has no replay on its event stream, so the hub is connected before any turn
prompts, and a subscriber registers for its session before it sends the prompt.
Child sessions opened by subagents are routed to the subscribers of their parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..errors import UpstreamError
from .client import OpenCodeClient

log = logging.getLogger(__name__)

IGNORED_TYPES = frozenset(
    {
        "sync",
        "server.heartbeat",
        "plugin.added",
        "catalog.updated",
        "reference.updated",
        "integration.updated",
        "file.watcher.updated",
        "lsp.updated",
        "project.updated",
        "todo.updated",
    }
)


@dataclass(frozen=True)
class StreamLost:
    """The upstream event stream dropped; events may have been missed."""

    reason: str


@dataclass(frozen=True)
class StreamRestored:
    """The upstream event stream is back; subscribers should re-sync from OpenCode."""


# An event, a stream signal, or an error a turn's own helper task hands to its loop.
HubSignal = dict[str, Any] | StreamLost | StreamRestored | Exception


class Subscription:
    """The events of one session (and its child sessions), in arrival order."""

    def __init__(self, hub: EventHub, session_id: str) -> None:
        self.session_id = session_id
        self._hub = hub
        self._queue: asyncio.Queue[HubSignal] = asyncio.Queue()

    def put(self, item: HubSignal) -> None:
        self._queue.put_nowait(item)

    async def get(self, timeout: float | None = None) -> HubSignal:
        """Next event or signal; raises TimeoutError after `timeout` seconds of silence."""
        if not self._queue.empty():
            return self._queue.get_nowait()  # no timer task for an event already here
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    def get_nowait(self) -> HubSignal | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Keeps one `/global/event` stream open and routes its events by sessionID."""

    def __init__(self, client: OpenCodeClient, *, max_backoff: float = 5.0) -> None:
        self._client = client
        self._max_backoff = max_backoff
        self._subscribers: dict[str, set[Subscription]] = {}
        self._parents: dict[str, str] = {}
        self._connected = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="opencode-event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._connected.clear()

    async def wait_connected(self, timeout: float) -> bool:
        """True once the stream is open; False if it is not within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def retry_now(self) -> None:
        """Skip the backoff: OpenCode is known to be back (e.g. restarted)."""
        self._retry_now.set()

    def subscribe(self, session_id: str) -> Subscription:
        subscription = Subscription(self, session_id)
        self._subscribers.setdefault(session_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self._subscribers.get(subscription.session_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscribers[subscription.session_id]

    # -- the stream loop ------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        was_connected = False
        while True:
            try:
                async with self._client.stream_events() as response:
                    self._connected.set()
                    if was_connected:
                        self.reconnects += 1
                        self._broadcast(StreamRestored())
                    was_connected = True
                    backoff = 0.2
                    async for event in parse_sse(response.chunks()):
                        self.dispatch(event)
                reason = "OpenCode closed its event stream"
            except asyncio.CancelledError:
                raise
            except UpstreamError as exc:
                reason = exc.message
            except Exception as exc:  # a broken stream must never kill the hub
                reason = f"event stream failed ({type(exc).__name__}: {exc})"
            if self._connected.is_set():
                log.warning("upstream event stream lost: %s", reason)
                self._connected.clear()
                self._broadcast(StreamLost(reason))
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def dispatch(self, raw: dict[str, Any]) -> None:
        """Route one decoded `/global/event` (or `/event`) payload to its subscribers."""
        event = raw.get("payload", raw)
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind in IGNORED_TYPES:
            return
        props = event.get("properties")
        if not isinstance(props, dict):
            return
        session_id = props.get("sessionID")
        if not isinstance(session_id, str):
            return
        if kind == "session.created":
            self._remember_parent(session_id, props.get("info"))
        for subscription in self._subscribers_of(session_id):
            subscription.put(event)

    def _remember_parent(self, session_id: str, info: Any) -> None:
        if isinstance(info, dict) and isinstance(info.get("parentID"), str):
            self._parents[session_id] = info["parentID"]

    def _subscribers_of(self, session_id: str) -> list[Subscription]:
        found: list[Subscription] = []
        seen: set[str] = set()
        current: str | None = session_id
        while current is not None and current not in seen:
            seen.add(current)
            found.extend(self._subscribers.get(current, ()))
            current = self._parents.get(current)
        return found

    def _broadcast(self, signal: StreamLost | StreamRestored) -> None:
        for subs in list(self._subscribers.values()):
            for subscription in list(subs):
                subscription.put(signal)


MAX_EVENT_BYTES = 32 * 2**20  # one event larger than this means a broken stream


async def parse_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Decode the `data:` lines of an SSE byte stream into JSON objects, one per event.

    Works on the raw chunks as they arrive (a chunk may end anywhere, even inside a
    line ending), splitting events at blank lines; decoding line by line through a
    text layer cost more CPU than the rest of the hub.
    """
    buffer = b""
    async for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                continue  # maybe the first half of \r\n: wait for the next chunk
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            decoded = _decode_event(buffer[start:end])
            start = end + 2
            if decoded is not None:
                yield decoded
        buffer = buffer[start:]
        if len(buffer) > MAX_EVENT_BYTES:
            raise ValueError(f"an upstream event exceeded {MAX_EVENT_BYTES} bytes")


def _decode_event(block: bytes) -> dict[str, Any] | None:
    data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return None
    try:
        decoded = json.loads(b"\n".join(data))
    except ValueError:  # not JSON, or not UTF-8
        log.debug("skipping undecodable upstream event")
        return None
    return decoded if isinstance(decoded, dict) else None
