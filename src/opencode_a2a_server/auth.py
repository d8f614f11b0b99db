"""Request guards: bearer authentication and the request body limit (pure ASGI).

A caller is a principal. A presented bearer token is matched against the static tokens
(A2A_BEARER_TOKEN is principal `default`; A2A_CREDENTIALS_FILE binds more tokens to
names), then, when JWT is configured, validated as a JWT whose claim names the
principal. Tasks, sessions and asks are stored under that name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.authentication import AuthCredentials, SimpleUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security.credentials import (
    DEFAULT_PRINCIPAL,
    TokenTable,
    bearer_credential,
    load_credentials_file,
)
from .security.http import send_json
from .security.jwt import JwksUnavailable, JwtRejected, JwtSettings, JwtValidator

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/.well-known/agent-card.json"})
PRINCIPAL = DEFAULT_PRINCIPAL
# A refused body is read and dropped up to this size before answering 413; a client
# that keeps sending past it has its connection closed instead.
DRAIN_LIMIT = 16 * 1024 * 1024
REALM = b'Bearer realm="opencode-a2a-server"'
JWKS_RETRY_AFTER = 10


class Unauthorized(Exception):
    """No acceptable credentials; `reason` is safe to show the client."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class Authenticator:
    """Maps a presented bearer token to the principal it stands for."""

    def __init__(self, tokens: TokenTable, jwt: JwtValidator | None = None) -> None:
        if not tokens and jwt is None:
            raise ValueError("no authentication scheme is configured")
        self.tokens = tokens
        self.jwt = jwt

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        tokens = TokenTable()
        if settings.a2a_bearer_token is not None:
            tokens.add(bearer_credential(settings.a2a_bearer_token.get_secret_value()))
        if settings.a2a_credentials_file is not None:
            path = Path(settings.a2a_credentials_file)
            for credential in load_credentials_file(path):
                tokens.add(credential)
            _warn_if_readable_by_others(path)
        jwt = None
        if settings.jwt_enabled:
            jwt = JwtValidator(
                JwtSettings(
                    issuer=str(settings.a2a_jwt_issuer),
                    audience=str(settings.a2a_jwt_audience),
                    jwks_url=str(settings.a2a_jwt_jwks_url),
                    principal_claim=settings.a2a_jwt_principal_claim,
                )
            )
        return cls(tokens, jwt)

    async def authenticate(self, presented: bytes) -> str:
        """The principal, or Unauthorized / JwksUnavailable."""
        if not presented:
            raise Unauthorized()
        principal = self.tokens.match(presented) if self.tokens else None
        if principal is not None:
            return principal
        if self.jwt is None:
            raise Unauthorized()
        try:
            token = presented.decode("ascii")
        except UnicodeDecodeError:
            raise Unauthorized() from None
        if not self.jwt.looks_like_jwt(token):
            raise Unauthorized()
        try:
            return await self.jwt.principal(token)
        except JwtRejected as exc:
            raise Unauthorized(exc.reason) from None


class BearerAuthMiddleware:
    """Every route but the Agent Card needs `Authorization: Bearer <token>`."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        principal: str = PRINCIPAL,
        *,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.app = app
        if authenticator is None:
            if token is None:
                raise ValueError("BearerAuthMiddleware needs a token or an authenticator")
            authenticator = Authenticator(TokenTable([bearer_credential(token, principal)]))
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(_bearer(scope))
        except Unauthorized as exc:
            await _unauthorized(send, exc.reason)
            return
        except JwksUnavailable:
            await send_json(
                send,
                503,
                {
                    "error": "Cannot check the token now: the JWT issuer's keys "
                    "(A2A_JWT_JWKS_URL) could not be fetched.",
                    "retry_after_seconds": JWKS_RETRY_AFTER,
                },
                [(b"retry-after", str(JWKS_RETRY_AFTER).encode())],
            )
            return
        scope["user"] = SimpleUser(principal)
        scope["auth"] = AuthCredentials(["authenticated"])
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, presented = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return bytes(presented.strip())
            return b""
    return b""


async def _unauthorized(send: Send, reason: str) -> None:
    challenge = REALM
    message = "Unauthorized: send Authorization: Bearer <token>."
    if reason:
        # RFC 6750: say why a token was refused (the reasons are fixed texts).
        challenge += b', error="invalid_token", error_description="' + reason.encode() + b'"'
        message = f"Unauthorized: {reason}."
    await send_json(send, 401, {"error": message}, [(b"www-authenticate", challenge)])


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "A2A_CREDENTIALS_FILE %s can be read by other users (mode %o); "
            "chmod 600 it, or store token_sha256 instead of token",
            path,
            mode & 0o777,
        )


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
        await send_json(
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
