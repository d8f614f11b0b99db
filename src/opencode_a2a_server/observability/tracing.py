"""Optional OpenTelemetry tracing (the `otel` extra), exported over OTLP/HTTP.

On only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
and OpenTelemetry is installed; otherwise this module imports nothing of it and the
request path pays nothing. Spans: one server span per request (named after the A2A
method or REST route), and one client span per OpenCode HTTP call beneath it. The
exporter honours the standard OTEL_* variables (headers, timeout, service name).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from .. import __version__

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "opencode-a2a-server"
_tracer: Any = None
_configured = False


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


def tracer() -> Any:
    """The process's tracer, set up on first use; None when tracing is off."""
    global _tracer, _configured
    if not _configured:
        _configured = True
        _tracer = _setup() if tracing_requested() else None
    return _tracer


def _setup() -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
            "install the `otel` extra (opencode-a2a-server[otel]) for tracing"
        )
        return None
    attributes = {"service.version": __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("OpenTelemetry tracing on, exporting spans over OTLP/HTTP")
    return provider.get_tracer("opencode_a2a_server", __version__)


def server_span(tracer: Any, scope: MutableMapping[str, Any]) -> Any:
    """A context manager for the server span of one request (parent from `traceparent`)."""
    from opentelemetry import propagate, trace

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    return tracer.start_as_current_span(
        f"HTTP {scope.get('method', '')}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": scope.get("method", ""), "url.path": scope["path"]},
        record_exception=False,
        set_status_on_exception=True,
    )


def finish_server_span(span: Any, name: str, attributes: dict[str, Any], status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.update_name(name)
    span.set_attributes(attributes)
    span.set_attribute("http.response.status_code", status)
    if status >= 500 or status == 0:
        span.set_status(Status(StatusCode.ERROR))


class _ClientSpan:
    """Starts a client span, makes it current and puts its context into `headers`."""

    def __init__(self, tracer: Any, name: str, method: str, headers: dict[str, str]) -> None:
        from opentelemetry import trace

        self._scope = tracer.start_as_current_span(
            "opencode " + name,
            kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": method, "opencode.operation": name},
        )
        self._headers = headers

    def __enter__(self) -> Any:
        from opentelemetry import propagate

        span = self._scope.__enter__()
        propagate.inject(self._headers)
        return span

    def __exit__(self, *exc: object) -> None:
        self._scope.__exit__(None, None, None)


def client_span(tracer: Any, name: str, method: str, headers: dict[str, str]) -> Any:
    return _ClientSpan(tracer, name, method, headers)


def mark_error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", type(exc).__name__)


def fastapi_telemetry_off() -> dict[str, Any]:
    """FastAPI keyword arguments that turn off its own OpenTelemetry spans (FastAPI
    0.165+ opens them whenever a tracer provider is set): the request span here names
    the A2A method, and one server span per request is enough."""
    import inspect

    from fastapi import FastAPI

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
