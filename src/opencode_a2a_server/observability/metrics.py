"""Prometheus metrics of one application instance (its own registry).

Every metric is named `opencode_a2a_*`. Labels take values from bounded sets only:
method names the adapter knows, route templates, templated upstream paths; never raw
paths or ids. Counters kept elsewhere (event-stream reconnects, push deliveries) and
the pending asks in the database are read when metrics are scraped, so nothing on the
streaming path pays for them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREFIX = "opencode_a2a_"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Distinct upstream operations kept as labels; beyond this they count as "other".
MAX_OPERATIONS = 64

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
TURN_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The metric objects, and what feeds the ones read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "Requests served, by A2A method (or REST route), transport, protocol and status.",
            ["method", "transport", "protocol", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from request to the end of its response (a stream's whole life).",
            ["method", "transport"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            PREFIX + "active_streams", "Server-sent event responses now open.", registry=r
        )
        self.turns = Counter(
            PREFIX + "turns", "Turns that ended, by final task state.", ["state"], registry=r
        )
        self.turn_duration = Histogram(
            PREFIX + "turn_duration_seconds",
            "Turn duration, from start to final state (waits for answers included).",
            ["state"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Time from a turn's start to its first streamed text.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.pending_asks = Gauge(
            PREFIX + "pending_asks",
            "Permission and question asks waiting for an answer (in the database).",
            registry=r,
        )
        self.upstream_duration = Histogram(
            PREFIX + "upstream_request_duration_seconds",
            "OpenCode HTTP request latency, by operation (method and templated path).",
            ["operation"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            PREFIX + "upstream_errors",
            "OpenCode HTTP requests that failed, by operation and kind.",
            ["operation", "kind"],
            registry=r,
        )
        self._sources = _Sources()
        r.register(self._sources)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._operations: set[str] = set()

    # -- feeding ------------------------------------------------------------------

    def observe_request(
        self, method: str, transport: str, protocol: str, status: int | str, seconds: float
    ) -> None:
        self.requests.labels(method, transport, protocol, str(status)).inc()
        self.request_duration.labels(method, transport).observe(seconds)

    def observe_turn(self, state: str, seconds: float, ttft: float | None) -> None:
        self.turns.labels(state).inc()
        self.turn_duration.labels(state).observe(seconds)
        if ttft is not None:
            self.time_to_first_token.observe(ttft)

    def operation_label(self, operation: str) -> str:
        if operation in self._operations:
            return operation
        if len(self._operations) >= MAX_OPERATIONS:
            return "other"
        self._operations.add(operation)
        return operation

    def observe_upstream(self, operation: str, seconds: float, error: str | None) -> None:
        operation = self.operation_label(operation)
        self.upstream_duration.labels(operation).observe(seconds)
        if error is not None:
            self.upstream_errors.labels(operation, error).inc()

    def watch_reconnects(self, read: Callable[[], int]) -> None:
        """Report the event hub's reconnect count (read at scrape time)."""
        self._sources.reconnects = read

    def watch_push(self, read: Callable[[], dict[str, int]]) -> None:
        """Report push delivery counts by result (read at scrape time)."""
        self._sources.push = read

    def refresh_with(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run `refresh` before each scrape (for values that need a query)."""
        self._refreshers.append(refresh)

    # -- reading ------------------------------------------------------------------

    async def render(self) -> bytes:
        """The exposition text, after refreshing what is read on demand."""
        for refresh in self._refreshers:
            try:
                await refresh()
            except Exception:
                log.exception("refreshing a metric failed")
        return generate_latest(self.registry)


class _Sources(Collector):
    """Counters owned by other objects, reported as they are when scraped."""

    def __init__(self) -> None:
        self.reconnects: Callable[[], int] | None = None
        self.push: Callable[[], dict[str, int]] | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        reconnects = CounterMetricFamily(
            PREFIX + "event_stream_reconnects",
            "Times the OpenCode event stream was re-established after it dropped.",
        )
        reconnects.add_metric([], self.reconnects() if self.reconnects else 0)
        yield reconnects
        push = CounterMetricFamily(
            PREFIX + "push_deliveries",
            "Push notification attempts by result (delivered, failed, retries, refused).",
            labels=["result"],
        )
        counts: dict[str, Any] = self.push() if self.push else {}
        for result in ("delivered", "failed", "retries", "refused"):
            push.add_metric([result], counts.get(result, 0))
        yield push
