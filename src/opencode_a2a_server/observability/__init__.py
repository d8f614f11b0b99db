"""Observability: request and turn logs, Prometheus metrics, optional tracing.

- `requests`: the request middleware (request id, one log line, metrics, server span);
- `logs`: request id context, JSON line format, logging setup;
- `metrics`: the Prometheus metric objects of one application;
- `turns`: the per-turn log line and metrics;
- `upstream`: latency, errors, spans and request id of calls to OpenCode;
- `tracing`: OpenTelemetry, loaded only when an OTLP endpoint is configured;
- `listener`: the separate metrics port (A2A_METRICS_PORT).
"""

from .requests import RequestLogMiddleware, redact, redacted_body

__all__ = ["RequestLogMiddleware", "redact", "redacted_body"]
