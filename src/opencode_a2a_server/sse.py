"""SSE event ids on every streamed A2A event that carries a sequence number.

The a2a-sdk builds its streaming responses (JSON-RPC and HTTP+JSON, both protocol
versions) through `create_event_source_response`; `install()` wraps that one
function so each frame gets `id: <sequence>`, which clients send back as
`Last-Event-ID` when they resubscribe.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from sse_starlette.sse import ServerSentEvent

from .execution.eventlog import sequence_in_json

_MODULES = (
    "a2a.server.routes.jsonrpc_dispatcher",
    "a2a.server.routes.rest_dispatcher",
    "a2a.compat.v0_3.jsonrpc_adapter",
    "a2a.compat.v0_3.rest_adapter",
)


def with_id(item: Any) -> Any:
    """The same SSE item, with an `id` when its data carries a sequence."""
    if isinstance(item, ServerSentEvent):
        sequence = sequence_in_json(str(item.data or ""))
        if sequence is None or item.id:
            return item
        return ServerSentEvent(data=item.data, event=item.event, id=str(sequence))
    if isinstance(item, dict) and "id" not in item:
        sequence = sequence_in_json(str(item.get("data") or ""))
        if sequence is not None:
            return {**item, "id": str(sequence)}
    return item


async def _ids(content: AsyncIterable[Any]) -> AsyncIterator[Any]:
    async for item in content:
        yield with_id(item)


def install() -> None:
    """Wrap the SDK's SSE response factory in every module that uses it (idempotent)."""
    _eager_v03_rest_streams()
    import importlib

    from a2a.server.routes import common

    original = common.create_event_source_response

    def create(content: AsyncIterable[Any] | Iterable[Any], shutdown_grace_period: float = 0):
        if hasattr(content, "__aiter__"):
            content = _ids(content)  # type: ignore[arg-type]
        return original(content, shutdown_grace_period=shutdown_grace_period)

    create.__wrapped__ = original  # type: ignore[attr-defined]
    for name in _MODULES:
        module = importlib.import_module(name)
        current = module.create_event_source_response
        if getattr(current, "__wrapped__", None) is None:
            setattr(module, "create_event_source_response", create)  # noqa: B010


def _eager_v03_rest_streams() -> None:
    """0.3 HTTP+JSON streams: fail with a proper HTTP error before the stream starts.

    The SDK's 0.3 REST adapter starts the SSE response before the handler runs, so an
    error raised at the start (a refused message, an unknown task) became HTTP 200 and
    a dropped connection. Like its 1.0 REST routes, wait for the first event first.
    """
    from a2a.compat.v0_3 import rest_adapter
    from a2a.utils import json_utils
    from a2a.utils.error_handlers import rest_stream_error_handler
    from a2a.utils.errors import InvalidRequestError

    adapter = rest_adapter.REST03Adapter
    if getattr(adapter._handle_streaming_request, "_eager", False):
        return

    @rest_stream_error_handler
    async def handle(self: Any, method: Any, request: Any) -> Any:
        try:
            await request.body()
        except (ValueError, RuntimeError, OSError) as exc:
            raise InvalidRequestError(message=f"Failed to read the request body: {exc}") from exc
        stream = aiter(method(request, self._context_builder.build(request)))
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None

        async def frames() -> AsyncIterator[str]:
            if first is None:
                return
            yield json_utils.dumps(first)
            async for item in stream:
                yield json_utils.dumps(item)

        return rest_adapter.create_event_source_response(
            frames(), shutdown_grace_period=self._shutdown_grace_period
        )

    handle._eager = True  # type: ignore[attr-defined]
    adapter._handle_streaming_request = handle  # type: ignore[method-assign]
