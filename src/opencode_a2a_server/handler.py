"""The a2a-sdk request handler, with the few behaviours this service refines."""

from __future__ import annotations

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.types.a2a_pb2 import CancelTaskRequest, Task, TaskState


class OpenCodeRequestHandler(DefaultRequestHandler):
    """DefaultRequestHandler whose cancel is idempotent."""

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        """Cancelling a task that is already canceled returns it unchanged."""
        stored = await self._versioned_store.get(params.id, context)
        if stored is not None and stored.task.status.state == TaskState.TASK_STATE_CANCELED:
            return stored.task
        result = await super().on_cancel_task(params, context)
        assert result is not None
        return result
