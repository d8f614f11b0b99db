"""BearerAuthMiddleware and BodyLimitMiddleware around a tiny Starlette app."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opencode_a2a_server.auth import BearerAuthMiddleware, BodyLimitMiddleware

TOKEN = "correct-horse-battery-staple"
LIMIT = 1024
CARD_PATH = "/.well-known/agent-card.json"


async def card(request: Request) -> JSONResponse:
    return JSONResponse({"name": "card"})


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.user.display_name, "scopes": request.auth.scopes})


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "chunked": "content-length" not in request.headers,
        }
    )


def build_app() -> BearerAuthMiddleware:
    app = Starlette(
        routes=[
            Route(CARD_PATH, card),
            Route("/whoami", whoami),
            Route("/echo", echo, methods=["POST"]),
        ]
    )
    # The same order as the service: auth outermost, then the body limit.
    return BearerAuthMiddleware(BodyLimitMiddleware(app, max_bytes=LIMIT), token=TOKEN)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://adapter") as c:
        yield c


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- bearer auth -------------------------------------------------------------------------


async def test_no_token_is_401_with_a_challenge(client):
    response = await client.get("/whoami")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="opencode-a2a-server"'
    assert response.json() == {"error": "Unauthorized: send Authorization: Bearer <token>."}


@pytest.mark.parametrize(
    "headers",
    [
        bearer("wrong"),
        bearer(TOKEN + "x"),
        bearer(TOKEN[:-1]),
        bearer(""),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["wrong", "longer", "shorter", "empty", "basic-scheme", "no-scheme"],
)
async def test_wrong_credentials_are_401(client, headers):
    response = await client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_right_token_passes_and_sets_the_user(client):
    response = await client.get("/whoami", headers=bearer())
    assert response.status_code == 200
    assert response.json() == {"user": "default", "scopes": ["authenticated"]}


async def test_the_scheme_is_case_insensitive(client):
    response = await client.get("/whoami", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


async def test_the_agent_card_is_public(client):
    response = await client.get(CARD_PATH)
    assert response.status_code == 200
    assert response.json() == {"name": "card"}


async def test_401_does_not_read_or_leak_the_body(client):
    response = await client.post("/echo", content=b"x" * 10)
    assert response.status_code == 401
    assert "size" not in response.json()


# -- body limit ---------------------------------------------------------------------------


async def test_content_length_over_the_limit_is_413(client):
    response = await client.post("/echo", headers=bearer(), content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == {"error": "Request body too large", "max_bytes": LIMIT}
    assert response.headers["connection"] == "close"


async def test_content_length_at_the_limit_passes(client):
    body = b"y" * LIMIT
    response = await client.post("/echo", headers=bearer(), content=body)
    assert response.status_code == 200
    assert response.json() == {
        "size": LIMIT,
        "sha256": hashlib.sha256(body).hexdigest(),
        "chunked": False,
    }


async def test_chunked_body_over_the_limit_is_413(client):
    response = await client.post(
        "/echo", headers=bearer(), content=chunks(b"a" * 600, b"b" * 600, b"c" * 600)
    )
    assert response.status_code == 413
    assert response.json()["max_bytes"] == LIMIT


async def test_small_chunked_body_arrives_intact(client):
    parts = (b'{"jsonrpc": "2.0",', b' "method": "SendMessage",', b"", b' "id": 1}')
    body = b"".join(parts)
    response = await client.post("/echo", headers=bearer(), content=chunks(*parts))
    assert response.status_code == 200
    assert response.json() == {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "chunked": True,
    }


async def test_chunked_body_exactly_at_the_limit_passes(client):
    response = await client.post(
        "/echo", headers=bearer(), content=chunks(b"a" * (LIMIT // 2), b"b" * (LIMIT // 2))
    )
    assert response.status_code == 200
    assert response.json()["size"] == LIMIT


async def test_requests_without_a_body_pass(client):
    response = await client.get("/whoami", headers=bearer())
    assert response.status_code == 200


async def test_the_token_is_checked_before_the_body_limit(client):
    response = await client.post("/echo", content=b"x" * (LIMIT + 1))
    assert response.status_code == 401


# -- draining a refused body (pure ASGI, to see what the middleware reads) -------------


class Recorder:
    """An ASGI receive/send pair over a scripted body, counting what was read."""

    def __init__(self, chunks: list[bytes], *, endless: bool = False) -> None:
        self.chunks = chunks
        self.endless = endless
        self.read = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.endless:
            self.read += 1
            return {"type": "http.request", "body": b"z" * 1000, "more_body": True}
        index = self.read
        self.read += 1
        if index < len(self.chunks):
            more = index < len(self.chunks) - 1
            return {"type": "http.request", "body": self.chunks[index], "more_body": more}
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)


async def never_called(scope, receive, send):
    raise AssertionError("the app must not see a refused request")


def http_scope(content_length: int | None) -> dict:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return {"type": "http", "method": "POST", "path": "/echo", "headers": headers}


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_refused_body_is_read_to_its_end_before_the_413(declared):
    body = [b"x" * 800, b"x" * 800, b"x" * 800, b""]
    io = Recorder(body)
    middleware = BodyLimitMiddleware(never_called, max_bytes=LIMIT)
    await middleware(http_scope(2400 if declared else None), io.receive, io.send)
    assert io.read == len(body), "every body message was consumed, none more"
    assert io.sent[0]["status"] == 413


async def test_draining_stops_at_the_drain_limit(monkeypatch):
    from opencode_a2a_server import auth

    monkeypatch.setattr(auth, "DRAIN_LIMIT", 10_000)
    io = Recorder([], endless=True)
    middleware = BodyLimitMiddleware(never_called, max_bytes=LIMIT)
    await middleware(http_scope(None), io.receive, io.send)
    assert io.sent[0]["status"] == 413
    assert io.read <= 2 + 10_000 // 1000 + 1
