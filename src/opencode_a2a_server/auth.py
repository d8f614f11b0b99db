"""Request guards: bearer authentication and the request body limit (pure ASGI)."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.authentication import AuthCredentials, SimpleUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/.well-known/agent-card.json"})
PRINCIPAL = "default"
# A refused body is read and dropped up to this size before answering 413; a client
# that keeps sending past it has its connection closed instead.
DRAIN_LIMIT = 16 * 1024 * 1024


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BearerAuthMiddleware:
    """Every route but the Agent Card needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str, principal: str = PRINCIPAL) -> None:
        self.app = app
        self._token = token.encode()
        self._principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await _send_json(
                send,
                401,
                {"error": "Unauthorized: send Authorization: Bearer <A2A_BEARER_TOKEN>."},
                [(b"www-authenticate", b'Bearer realm="opencode-a2a-server"')],
            )
            return
        scope["user"] = SimpleUser(self._principal)
        scope["auth"] = AuthCredentials(["authenticated"])
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, presented = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(presented.strip(), self._token)
        return False


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _drain(receive, DRAIN_LIMIT)
            await self._refuse(send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read it here, counting, then replay it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_LIMIT)
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body_message: Message = {"type": "http.request", "body": b"".join(chunks)}
        await self.app(scope, _replay([body_message], receive), send)

    async def _refuse(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            {"error": "Request body too large", "max_bytes": self.max_bytes},
            [(b"connection", b"close")],
        )


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop a refused body, so the client sees the 413 and not a reset."""
    drained = 0
    while drained <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
