"""What every call to OpenCode reports: latency, errors, a client span, the request id."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import UpstreamHTTPError, UpstreamUnreachable
from .logs import current_request_id

if TYPE_CHECKING:
    from .metrics import Metrics

# A path segment that is an id: OpenCode's `ses_…`, `msg_…`, `per_…` style, or anything
# with a digit or long enough to be generated. Route words (prompt_async) are neither.
_ID_SEGMENT = re.compile(r"[a-z]{2,5}_[0-9A-Za-z]{8,}|.*\d.*|.{25,}")


def operation(method: str, path: str) -> str:
    """`GET /session/{id}/message` for `GET /session/ses_2b9…/message`: a bounded label."""
    segments = [
        "{id}" if segment and _ID_SEGMENT.fullmatch(segment) else segment
        for segment in path.split("?", 1)[0].split("/")
    ]
    return f"{method} {'/'.join(segments)}"


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, UpstreamHTTPError):
        return "http_5xx" if exc.status >= 500 else "http_4xx"
    if isinstance(exc, UpstreamUnreachable):
        return "unreachable"
    return "other"


class UpstreamObserver:
    """Wraps one upstream HTTP call; without metrics or tracer only the request id is sent."""

    def __init__(self, metrics: Metrics | None = None, tracer: Any = None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    @contextmanager
    def call(self, method: str, path: str) -> Iterator[dict[str, str]]:
        """Yields the headers to send with the call (request id, trace context)."""
        headers: dict[str, str] = {}
        rid = current_request_id()
        if rid:
            headers["X-Request-ID"] = rid
        if self.metrics is None and self.tracer is None:
            yield headers
            return
        name = operation(method, path)
        started = time.perf_counter()
        error: str | None = None
        span_scope = self._span(name, method, headers)
        span = span_scope.__enter__() if span_scope is not None else None
        try:
            yield headers
        except BaseException as exc:
            error = error_kind(exc)
            if span is not None:
                _span_error(span, exc)
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe_upstream(name, time.perf_counter() - started, error)
            if span_scope is not None:
                span_scope.__exit__(None, None, None)

    def _span(self, name: str, method: str, headers: dict[str, str]) -> Any:
        if self.tracer is None:
            return None
        from .tracing import client_span

        return client_span(self.tracer, name, method, headers)


def _span_error(span: Any, exc: BaseException) -> None:
    from .tracing import mark_error

    mark_error(span, exc)
