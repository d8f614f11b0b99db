"""Small ASGI helpers shared by the guards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.types import Scope, Send


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a JSON body, without involving the application."""
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


def principal_of_scope(scope: Scope) -> str:
    """The authenticated principal of a request ("" for public routes)."""
    user = scope.get("user")
    return str(getattr(user, "display_name", "")) if user is not None else ""


async def send_refusal(
    send: Send,
    request: dict[str, Any] | None,
    *,
    rpc: bool,
    jsonrpc_code: int,
    http_status: int,
    status: str,
    reason: str,
    message: str,
    details: dict[str, Any],
    retry_after: int,
) -> None:
    """Refuse a request before the application sees it, with `Retry-After`.

    JSON-RPC: HTTP 200 with an error whose `data` is `{"type": reason, **details}`.
    HTTP+JSON: `http_status` with a google.rpc-style error carrying an ErrorInfo
    (`reason`, domain `opencode-a2a-server`, `details` as string metadata).
    """
    headers = [(b"retry-after", str(retry_after).encode())]
    if rpc:
        request_id = (request or {}).get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            request_id = None
        error = {"code": jsonrpc_code, "message": message, "data": {"type": reason, **details}}
        await send_json(send, 200, {"jsonrpc": "2.0", "id": request_id, "error": error}, headers)
        return
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "opencode-a2a-server",
        "metadata": {key: str(value) for key, value in details.items()},
    }
    body = {"error": {"code": http_status, "status": status, "message": message, "details": [info]}}
    await send_json(send, http_status, body, headers)
