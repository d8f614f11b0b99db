"""Push notifications that deliver: status changes POSTed to webhooks, in order, signed.

Delivery never blocks a turn: events go into a per-task queue that one worker drains
in order, with timeouts and retries with backoff. Webhook URLs are screened so push
cannot reach loopback, link-local or private addresses unless allow-listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.server.tasks import PushNotificationConfigStore, PushNotificationSender
from a2a.types.a2a_pb2 import StreamResponse, TaskPushNotificationConfig, TaskStatusUpdateEvent
from google.protobuf import json_format

from .execution.stream import TERMINAL_STATES

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-A2A-Signature"
TIMESTAMP_HEADER = "X-A2A-Timestamp"
TOKEN_HEADER = "X-A2A-Notification-Token"


class PushUrlRefused(ValueError):
    """The webhook URL may not be used; the message says why and what to change."""


async def screen_url(url: str, allowed_hosts: frozenset[str]) -> None:
    """Refuse URLs that are not http(s), or that resolve to non-public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushUrlRefused(f"Push URL {url!r} must be an absolute http(s) URL.")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if host in allowed_hosts or f"{host}:{port}" in allowed_hosts:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError:
        raise PushUrlRefused(f"Push URL host {host!r} does not resolve.") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PushUrlRefused(
                f"Push URL host {host!r} resolves to {address}, a non-public address; "
                "list it in A2A_PUSH_ALLOWED_HOSTS to allow it."
            )


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(key, timestamp + "." + body)."""
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass
class PushStats:
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _TaskQueue:
    events: asyncio.Queue[TaskStatusUpdateEvent] = field(default_factory=asyncio.Queue)
    last_key: tuple[int, str] | None = None
    worker: asyncio.Task[None] | None = None


class PushDispatcher(PushNotificationSender):
    """Delivers each task's status changes to its webhooks, in order, with retries."""

    def __init__(
        self,
        store: PushNotificationConfigStore,
        *,
        signing_key: str | None = None,
        allowed_hosts: frozenset[str] = frozenset(),
        attempts: int = 5,
        timeout: float = 10.0,
        backoff: float = 0.5,
    ) -> None:
        self.store = store
        self.signing_key = signing_key.encode() if signing_key else None
        self.allowed_hosts = allowed_hosts
        self.attempts = attempts
        self.backoff = backoff
        self.stats = PushStats()
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._tasks: dict[str, _TaskQueue] = {}

    @property
    def pending(self) -> int:
        """Tasks whose status changes are still being delivered."""
        return sum(1 for q in self._tasks.values() if q.worker is not None and not q.worker.done())

    async def send_notification(self, task_id: str, event: Any) -> None:
        """Queue a status change for delivery and return at once."""
        if not isinstance(event, TaskStatusUpdateEvent):
            return  # chunks are not pushed; the terminal status references artifacts
        meta = json_format.MessageToDict(event.metadata)
        interrupt = meta.get("shared", {}).get("interrupt", {})
        key = (event.status.state, str(interrupt.get("request_id", "")))
        queue = self._tasks.setdefault(task_id, _TaskQueue())
        if key == queue.last_key:
            return  # not a change
        queue.last_key = key
        queue.events.put_nowait(event)
        if queue.worker is None or queue.worker.done():
            queue.worker = asyncio.create_task(self._drain(task_id, queue), name=f"push:{task_id}")

    async def _drain(self, task_id: str, queue: _TaskQueue) -> None:
        while not queue.events.empty():
            event = queue.events.get_nowait()
            try:
                configs = await self.store.get_info_for_dispatch(task_id)
            except Exception:
                log.exception("reading push configs of task %s failed", task_id)
                continue
            for config in configs:
                await self._deliver(task_id, config, event)
        if queue.last_key is not None and queue.last_key[0] in TERMINAL_STATES:
            self._tasks.pop(task_id, None)  # nothing follows a terminal state

    async def _deliver(
        self, task_id: str, config: TaskPushNotificationConfig, event: TaskStatusUpdateEvent
    ) -> None:
        try:
            await screen_url(config.url, self.allowed_hosts)
        except PushUrlRefused as exc:
            self.stats.refused += 1
            log.warning("push for task %s not sent: %s", task_id, exc)
            return
        body = json.dumps(json_format.MessageToDict(StreamResponse(status_update=event))).encode()
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._http.post(
                    config.url, content=body, headers=self._headers(config, body)
                )
                if response.status_code < 300:
                    self.stats.delivered += 1
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt == self.attempts:
                break
            self.stats.retries += 1
            log.info("push for task %s to %s failed (%s); retrying", task_id, config.id, reason)
            await asyncio.sleep(delay)
            delay *= 2
        self.stats.failed += 1
        log.warning(
            "push for task %s to config %s failed after %d attempts (%s)",
            task_id,
            config.id,
            self.attempts,
            reason,
        )

    def _headers(self, config: TaskPushNotificationConfig, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if config.token:
            headers[TOKEN_HEADER] = config.token
        auth = config.authentication
        if config.HasField("authentication") and auth.scheme and auth.credentials:
            headers["Authorization"] = f"{auth.scheme} {auth.credentials}"
        if self.signing_key is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.signing_key, timestamp, body)
        return headers

    async def aclose(self) -> None:
        workers = [q.worker for q in self._tasks.values() if q.worker and not q.worker.done()]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await self._http.aclose()
