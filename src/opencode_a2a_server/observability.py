"""Request logging: one line per request, and optional redacted payload logging."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("opencode_a2a_server.requests")

SECRET_KEYS = re.compile(r"token|password|secret|authorization|api[_-]?key|credential", re.I)
REDACTED = "***"


def redact(value: Any) -> Any:
    """A copy of a JSON value with every secret-looking field replaced."""
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_KEYS.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def redacted_body(body: bytes, limit: int) -> str:
    """The body for a log line: JSON with secrets redacted, cut to `limit` characters."""
    try:
        text = json.dumps(redact(json.loads(body)), ensure_ascii=False)
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = f"<{len(body)} bytes, not JSON>"
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


class RequestLogMiddleware:
    """Logs method, path, status and duration of every request (never headers)."""

    def __init__(self, app: ASGIApp, *, log_payloads: bool = False, body_limit: int = 4096) -> None:
        self.app = app
        self.log_payloads = log_payloads
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        body: list[bytes] = []

        async def logged_receive() -> Message:
            message = await receive()
            if self.log_payloads and message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, logged_receive, logged_send)
        finally:
            user = scope.get("user")
            principal = getattr(user, "display_name", "-") if user is not None else "-"
            line = "request %s %s status=%s principal=%s duration_ms=%.1f"
            args: list[Any] = [
                scope["method"],
                scope["path"],
                status,
                principal,
                (time.monotonic() - started) * 1000,
            ]
            if self.log_payloads and body:
                line += " body=%s"
                args.append(redacted_body(b"".join(body), self.body_limit))
            log.info(line, *args)
