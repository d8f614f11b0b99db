"""The a2a-sdk request handler, with the few behaviours this service refines.

- Messages are validated before the SDK starts a task, so a client mistake gets a
  clear -32602 and leaves no failed task behind.
- A message to a task that waits for input must answer its ask.
- Cancelling a task that is already canceled returns it (idempotent).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue_v2 import Event
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    Message,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format

from .errors import AdapterError, UpstreamError
from .execution.executor import OpenCodeExecutor, merge_metadata, principal_of
from .execution.interrupts import answer_from_message
from .execution.stream import TERMINAL_STATES


class OpenCodeRequestHandler(DefaultRequestHandler):
    """DefaultRequestHandler with input validation up front and an idempotent cancel."""

    def __init__(self, *, agent_executor: OpenCodeExecutor, **kwargs: object) -> None:
        super().__init__(agent_executor=agent_executor, **kwargs)  # type: ignore[arg-type]
        self.executor = agent_executor

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        await self._precheck(params, context)
        return await super().on_message_send(params, context)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        await self._precheck(params, context)
        async for event in super().on_message_send_stream(params, context):
            yield event

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        """Cancelling a task that is already canceled returns it unchanged."""
        stored = await self._versioned_store.get(params.id, context)
        if stored is not None and stored.task.status.state == TaskState.TASK_STATE_CANCELED:
            return stored.task
        result = await super().on_cancel_task(params, context)
        assert result is not None
        return result

    async def _precheck(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        message = params.message
        owner = principal_of(context)
        try:
            if message.task_id:
                await self._check_follow_up(message, context, owner)
                return
            meta = merge_metadata(
                json_format.MessageToDict(message.metadata),
                json_format.MessageToDict(params.metadata),
            )
            await self.executor.plan(message, meta, owner)
        except AdapterError as exc:
            if isinstance(exc, UpstreamError):
                return  # the turn itself reports upstream trouble, as a failed task
            raise InvalidParamsError(exc.message) from None

    async def _check_follow_up(
        self, message: Message, context: ServerCallContext, owner: str
    ) -> None:
        stored = await self._versioned_store.get(message.task_id, context)
        if stored is None or stored.task.status.state in TERMINAL_STATES:
            return  # the SDK answers unknown and finished tasks
        task = stored.task
        if task.status.state != TaskState.TASK_STATE_INPUT_REQUIRED:
            raise InvalidParamsError(
                f"Task {task.id} is {TaskState.Name(task.status.state)}: it takes a new "
                "message only when it needs input. Wait for it, cancel it, or send a new "
                "message without taskId to start another turn in the same context."
            )
        ask = await self.executor.pending_ask(task.id, message)
        answer_from_message(message, ask)
        await self.executor.interrupts.find(ask.request_id, owner)
