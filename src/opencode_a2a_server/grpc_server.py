"""The gRPC listener (A2A_GRPC_PORT): A2A 1.0 and 0.3 over gRPC on one `grpc.aio` server.

Imported only when A2A_GRPC_PORT is set; it needs the `grpc` extra (a2a-sdk[grpc]).
Both services share the request handler of the HTTP routes, so tasks, sessions and asks
are the same whichever transport a caller uses.

The HTTP guards apply here too, in the same order, in an interceptor around every call:

1. authentication: metadata `authorization: Bearer <token>`, checked by the same
   Authenticator; refused -> UNAUTHENTICATED (JWT key set unreachable -> UNAVAILABLE);
2. the request rate per principal (the same buckets as HTTP) -> RESOURCE_EXHAUSTED,
   reason RATE_LIMITED;
3. the input checks of security/input.py, on the request as JSON -> INVALID_ARGUMENT;
4. the running-turn cap (the same TurnGate) -> RESOURCE_EXHAUSTED, reason
   TOO_MANY_ACTIVE_TURNS.

The body limit is gRPC's own maximum receive message size (A2A_MAX_REQUEST_BODY_BYTES);
larger messages get RESOURCE_EXHAUSTED from gRPC before anything reads them. The caller
reaches the request handler as the same `Principal` the HTTP side produces, so ownership
is one rule for every transport.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

from .errors import StartupError

try:
    import grpc
    import grpc.aio
    from a2a.compat.v0_3 import a2a_v0_3_pb2_grpc
    from a2a.compat.v0_3.grpc_handler import CompatGrpcHandler
    from a2a.server.request_handlers.grpc_handler import (
        DefaultGrpcServerCallContextBuilder,
        GrpcHandler,
    )
    from a2a.types import a2a_pb2_grpc
    from a2a.utils.grpc_status import status_to_grpc
    from google.rpc import error_details_pb2, status_pb2
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise StartupError(
        f"A2A_GRPC_PORT is set but gRPC support is not installed ({exc}); install the "
        "`grpc` extra (pip install 'opencode-a2a-server[grpc]'), or unset A2A_GRPC_PORT"
    ) from None

from a2a.auth.user import UnauthenticatedUser, User
from a2a.utils.errors import A2AError, InvalidParamsError, InvalidRequestError
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from .auth import JWKS_RETRY_AFTER, Authenticator, Unauthorized
from .config import Settings
from .handler import OpenCodeRequestHandler, Principal
from .observability import redacted_body
from .observability.metrics import Metrics
from .security.input import inspect
from .security.jwt import JwksUnavailable
from .security.limits import (
    TURN_RETRY_AFTER_SECONDS,
    RateLimiter,
    TurnGate,
    rate_limited_message,
    too_many_turns_message,
)
from .shutdown import RETRY_AFTER_SECONDS, SHUTTING_DOWN_MESSAGE, Drain

log = logging.getLogger(__name__)
request_log = logging.getLogger("opencode_a2a_server.requests")

SERVICE_V1 = "/lf.a2a.v1.A2AService/"
SERVICE_V03 = "/a2a.v1.A2AService/"
_TURN_METHODS = frozenset({"SendMessage", "SendStreamingMessage"})
ERROR_DOMAIN = "opencode-a2a-server"

# The principal of the call being served. Each gRPC call runs in its own asyncio task,
# so a value set by the interceptor is seen by exactly that call's handler.
_CALLER: ContextVar[str] = ContextVar("opencode_a2a_grpc_caller", default="")

Behavior = Callable[[Any, Any], Any]


class _CallerContextBuilder(DefaultGrpcServerCallContextBuilder):
    """The SDK's gRPC context, with the principal the interceptor authenticated."""

    def build_user(self, context: grpc.aio.ServicerContext) -> User:
        name = _CALLER.get()
        return Principal(name) if name else UnauthenticatedUser()


@contextlib.contextmanager
def _as_caller(principal: str) -> Iterator[None]:
    token = _CALLER.set(principal)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a stream closed from another context
            _CALLER.reset(token)


class GrpcListener:
    """The gRPC server: created, bound and started in the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        handler: OpenCodeRequestHandler,
        *,
        authenticator: Authenticator,
        limiter: RateLimiter | None,
        gate: TurnGate,
    ) -> None:
        assert settings.a2a_grpc_port is not None
        self.address = _address(settings.a2a_host, settings.a2a_grpc_port)
        self.max_message_bytes = settings.a2a_max_request_body_bytes
        self.v1 = GrpcHandler(handler, context_builder=_CallerContextBuilder())
        self.v03 = CompatGrpcHandler(handler, context_builder=_CallerContextBuilder())
        self.guard = _Guard(
            authenticator=authenticator,
            limiter=limiter,
            gate=gate,
            workspace_root=settings.workspace_root,
            aborts={SERVICE_V1: self.v1.abort_context, SERVICE_V03: self.v03.abort_context},
            log_payloads=settings.a2a_log_payloads,
            body_limit=settings.a2a_log_body_limit,
        )
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Bind and serve (inside the running event loop, which grpc.aio binds to)."""
        server = grpc.aio.server(
            interceptors=[self.guard],
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                # Without this, Linux lets a second process share the port silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(self.v1, server)
        a2a_v0_3_pb2_grpc.add_A2AServiceServicer_to_server(self.v03, server)
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen for gRPC on {self.address}: {exc}") from None
        if not bound:
            raise StartupError(f"cannot listen for gRPC on {self.address} (A2A_GRPC_PORT)")
        await server.start()
        self.server = server
        log.info("gRPC listening on %s (A2A 1.0 and 0.3, plaintext)", self.address)

    async def stop(self, grace: float) -> None:
        """Refuse new calls; give running ones `grace` seconds, then cancel them."""
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host or '0.0.0.0'}:{port}"


class _Guard(grpc.aio.ServerInterceptor):
    """Authentication, rate, input and turn checks before a call reaches its service."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        limiter: RateLimiter | None,
        gate: TurnGate,
        workspace_root: Path,
        aborts: dict[str, Callable[[A2AError, Any], Awaitable[None]]],
        log_payloads: bool,
        body_limit: int,
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.gate = gate
        self.workspace_root = workspace_root
        self.aborts = aborts
        self.log_payloads = log_payloads
        self.body_limit = body_limit
        self.drain: Drain | None = None  # set by the app: refuse new turns while draining
        self.metrics: Metrics | None = None

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: UNIMPLEMENTED
        method = str(details.method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # A2A has no client-streaming methods

    def _unary(self, method: str, inner: Behavior) -> Behavior:
        async def behavior(request: Message, context: grpc.aio.ServicerContext) -> Any:
            async with self._guarded(method, request, context):
                return await inner(request, context)

        return behavior

    def _stream(self, method: str, inner: Behavior) -> Behavior:
        async def behavior(
            request: Message, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async with self._guarded(method, request, context):
                async for item in inner(request, context):
                    yield item

        return behavior

    @contextlib.asynccontextmanager
    async def _guarded(
        self, method: str, request: Message, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """Authenticate and admit one call, run it as its caller, and log it."""
        started = time.monotonic()
        principal = ""
        failed = False
        try:
            principal = await self._authenticate(context)
            reservation = await self._admit(method, request, context, principal)
            try:
                with _as_caller(principal):
                    yield
            finally:
                if reservation is not None:
                    self.gate.release(reservation)
        except BaseException:
            failed = True
            raise
        finally:
            self._log(method, request, context, principal, started, failed)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> str:
        presented = _bearer(context.invocation_metadata())
        try:
            return await self.authenticator.authenticate(presented)
        except Unauthorized as exc:
            message = (
                f"Unauthorized: {exc.reason}."
                if exc.reason
                else "Unauthorized: send the metadata `authorization: Bearer <token>`."
            )
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, message)
        except JwksUnavailable:
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "Cannot check the token now: the JWT issuer's keys (A2A_JWT_JWKS_URL) "
                f"could not be fetched; retry in {JWKS_RETRY_AFTER} s.",
                (("retry-after", str(JWKS_RETRY_AFTER)),),
            )

    async def _admit(
        self,
        method: str,
        request: Message,
        context: grpc.aio.ServicerContext,
        principal: str,
    ) -> Any:
        """Rate, input and turn checks; the turn reservation to release afterwards."""
        if self.limiter is not None:
            wait = self.limiter.take(principal)
            if wait > 0:
                retry = max(1, int(wait + 0.999))
                await _refuse(
                    context,
                    rate_limited_message(int(self.limiter.capacity), retry),
                    "RATE_LIMITED",
                    {"retry_after_seconds": str(retry)},
                )
        service, _, name = method.rpartition("/")
        service += "/"
        legacy = service == SERVICE_V03
        problem = inspect(
            json_format.MessageToDict(request), self.workspace_root, legacy_rest=legacy
        )
        if problem is not None:
            error_type = InvalidParamsError if problem.code == -32602 else InvalidRequestError
            await self.aborts[service](error_type(message=problem.message), context)
            raise AssertionError("abort returned")  # pragma: no cover
        starts_turn = name in _TURN_METHODS and _starts_turn(request)
        if starts_turn and self.drain is not None and self.drain.draining:
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                SHUTTING_DOWN_MESSAGE,
                (("retry-after", str(RETRY_AFTER_SECONDS)),),
            )
        if not self.gate.enabled or not starts_turn:
            return None
        reservation = self.gate.reserve(principal)
        if reservation is None:
            cap = self.gate.max_per_principal
            await _refuse(
                context,
                too_many_turns_message(cap, TURN_RETRY_AFTER_SECONDS),
                "TOO_MANY_ACTIVE_TURNS",
                {
                    "retry_after_seconds": str(TURN_RETRY_AFTER_SECONDS),
                    "max_concurrent_turns": str(cap),
                },
            )
        return reservation

    def _log(
        self,
        method: str,
        request: Message,
        context: grpc.aio.ServicerContext,
        principal: str,
        started: float,
        failed: bool,
    ) -> None:
        code = context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        status = code.name if isinstance(code, grpc.StatusCode) else str(code)
        if self.metrics is not None:
            service, _, name = method.rpartition("/")
            protocol = "0.3" if f"{service}/" == SERVICE_V03 else "1.0"
            self.metrics.observe_request(name, "grpc", protocol, status, time.monotonic() - started)
        line = "request GRPC %s status=%s principal=%s duration_ms=%.1f"
        args: list[Any] = [
            method,
            status,
            principal or "-",
            (time.monotonic() - started) * 1000,
        ]
        if self.log_payloads:
            line += " body=%s"
            body = json.dumps(json_format.MessageToDict(request)).encode()
            args.append(redacted_body(body, self.body_limit))
        request_log.info(line, *args)


def _bearer(metadata: Any) -> bytes:
    for key, value in metadata or ():
        if str(key).lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, presented = text.partition(" ")
        if scheme.lower() == "bearer":
            return presented.strip().encode("latin-1", errors="replace")
        return b""
    return b""


def _starts_turn(request: Message) -> bool:
    """A send without a task id starts a turn (1.0 `message`, 0.3 `request`)."""
    for field in ("message", "request"):
        if field in request.DESCRIPTOR.fields_by_name:
            return not getattr(request, field).task_id
    return False


async def _abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    trailing: tuple[tuple[str, str | bytes], ...] = (),
) -> NoReturn:
    await context.abort(code, message, trailing_metadata=trailing)
    raise AssertionError("abort returned")  # pragma: no cover


async def _refuse(
    context: grpc.aio.ServicerContext, message: str, reason: str, metadata: dict[str, str]
) -> NoReturn:
    """RESOURCE_EXHAUSTED with an ErrorInfo detail and a `retry-after` trailer."""
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    status.details.append(detail)
    rich = status_to_grpc(status)
    trailing = (*rich.trailing_metadata, ("retry-after", metadata["retry_after_seconds"]))
    await _abort(context, rich.code, rich.details, trailing)
