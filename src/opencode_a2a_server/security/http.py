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
