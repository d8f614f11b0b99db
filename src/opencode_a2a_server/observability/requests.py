"""The request middleware: request id, one log line, metrics and a span per request.

Payloads are logged only on request (A2A_LOG_PAYLOADS), with secrets redacted.
"""

from __future__ import annotations

import json
import logging
import re
import time
import weakref
from typing import TYPE_CHECKING, Any

from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import REQUEST_ID_HEADER, accepted_request_id, request_id

if TYPE_CHECKING:
    from .metrics import Metrics

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


# Where the JSON-RPC endpoint notes the method it served (see `note_method`).
METHOD_KEY = "opencode_a2a.method"
# Routes that are not A2A operations; everything else besides `POST /` is A2A REST.
OWN_ROUTES = frozenset({"/health", "/metrics", "/.well-known/agent-card.json"})


def note_method(scope: Scope, method: str) -> None:
    """Label this request with the JSON-RPC method it called (a known name or "unknown")."""
    scope[METHOD_KEY] = method


def request_labels(scope: Scope) -> tuple[str, str, str]:
    """(method, transport, protocol) for a served request, from a bounded set of values.

    JSON-RPC requests are labelled with their method, REST requests with their route
    template (`GET /tasks/{id}`); requests answered before routing (refused by auth, a
    limit, or matching no route) with `unrouted`.
    """
    if METHOD_KEY in scope:
        method = scope[METHOD_KEY]
        protocol = "0.3" if "/" in method else _protocol_header(scope)
        return method, "jsonrpc", protocol
    template = route_template(scope)
    if template is None:
        return "unrouted", "http", "-"
    label = f"{scope['method']} {template}"
    if template in OWN_ROUTES:
        return label, "http", "-"
    if template == "/":  # the JSON-RPC route, refused before it read the method
        return "invalid", "jsonrpc", _protocol_header(scope)
    protocol = "0.3" if template.startswith("/v1/") else _protocol_header(scope)
    return label, "http+json", protocol


# Per application: each endpoint's routes, to find the template of a served request.
_ROUTE_TABLES: weakref.WeakKeyDictionary[Any, dict[Any, list[Any]]] = weakref.WeakKeyDictionary()


def route_template(scope: Scope) -> str | None:
    """The path template of the route that served the request (`/tasks/{id}:cancel`).

    Starlette's router leaves the route in the scope; FastAPI's leaves only the
    endpoint, which is looked up among the application's routes.
    """
    path_params = scope.get("path_params") or {}
    tenant = path_params.get("tenant")
    prefix = "/{tenant}" if tenant is not None else ""
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return prefix + template
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is None or app is None:
        return None
    try:
        table = _ROUTE_TABLES[app]
    except KeyError:
        table = _ROUTE_TABLES[app] = _endpoint_table(getattr(app, "routes", []))
    except TypeError:  # not weak-referenceable
        table = _endpoint_table(getattr(app, "routes", []))
    path = scope["path"]
    if tenant is not None:
        path = path[len(str(tenant)) + 1 :]
    for candidate in table.get(endpoint, ()):
        if candidate.path_regex.match(path):
            return prefix + str(candidate.path)
    return None


def _endpoint_table(routes: list[Any]) -> dict[Any, list[Any]]:
    table: dict[Any, list[Any]] = {}
    for route in routes:
        if isinstance(route, Route):
            table.setdefault(route.endpoint, []).append(route)
        elif isinstance(route, Mount):
            for endpoint, found in _endpoint_table(route.routes).items():
                table.setdefault(endpoint, []).extend(found)
    return table


def _protocol_header(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"a2a-version":
            version = value.decode("latin-1").strip()
            break
    else:
        return "0.3"  # the spec: no header means 0.3
    if not version or version == "0.3":
        return "0.3"
    return "1.0" if version.split(".")[0] == "1" else "other"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class RequestLogMiddleware:
    """Per request: an id, one log line (never headers), metrics, and a span if tracing."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        log_payloads: bool = False,
        body_limit: int = 4096,
        metrics: Metrics | None = None,
        tracer: Any = None,
    ) -> None:
        self.app = app
        self.log_payloads = log_payloads
        self.body_limit = body_limit
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        rid = accepted_request_id(_header(scope, REQUEST_ID_HEADER.encode()))
        token = request_id.set(rid)
        status = 0
        streaming = False
        body: list[bytes] = []
        metrics = self.metrics

        async def logged_receive() -> Message:
            message = await receive()
            if self.log_payloads and message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def logged_send(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                streaming = any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in headers
                )
                if streaming and metrics is not None:
                    metrics.active_streams.inc()
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        span_scope = None
        span = None
        if self.tracer is not None:
            from .tracing import server_span

            span_scope = server_span(self.tracer, scope)
            span = span_scope.__enter__()
        try:
            await self.app(scope, logged_receive, logged_send)
        finally:
            elapsed = time.monotonic() - started
            method, transport, protocol = request_labels(scope)
            user = scope.get("user")
            principal = getattr(user, "display_name", "-") if user is not None else "-"
            if metrics is not None:
                if streaming:
                    metrics.active_streams.dec()
                metrics.observe_request(method, transport, protocol, status, elapsed)
            if span_scope is not None:
                from .tracing import finish_server_span

                attributes = {
                    "a2a.method": method,
                    "a2a.transport": transport,
                    "a2a.protocol_version": protocol,
                    "enduser.id": principal,
                    "request.id": rid,
                }
                finish_server_span(span, method, attributes, status)
                span_scope.__exit__(None, None, None)
            line = "request %s %s status=%s principal=%s duration_ms=%.1f"
            args: list[Any] = [scope["method"], scope["path"], status, principal, elapsed * 1000]
            if self.log_payloads and body:
                line += " body=%s"
                args.append(redacted_body(b"".join(body), self.body_limit))
            fields = {
                "http_method": scope["method"],
                "path": scope["path"],
                "method": method,
                "transport": transport,
                "status": status,
                "principal": principal,
                "duration_ms": round(elapsed * 1000, 1),
            }
            log.info(line, *args, extra=fields)
            request_id.reset(token)
