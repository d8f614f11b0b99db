"""The a2a-sdk request handler, with the few behaviours this service refines.

- Messages are validated before the SDK starts a task, so a client mistake gets a
  clear -32602 and leaves no failed task behind.
- A message to a task that waits for input must answer its ask.
- Cancelling a task that is already canceled returns it (idempotent).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from a2a.auth.user import User
from a2a.server.agent_execution import RequestContext, SimpleRequestContextBuilder
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue_v2 import Event
from a2a.server.id_generator import IDGenerator
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format

from .errors import AdapterError, UpstreamError
from .execution.eventlog import sequence_of
from .execution.executor import RESUME_KEY, OpenCodeExecutor, merge_metadata, principal_of
from .execution.interrupts import answer_from_message
from .execution.mapping import to_struct
from .execution.stream import TERMINAL_STATES
from .push import PushUrlRefused, screen_url
from .store.leases import Lease

TAIL_INTERVAL = 0.5
SETTLED = TERMINAL_STATES | {
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}


async def _tail_store(
    store: Any, task: Task, context: ServerCallContext
) -> AsyncGenerator[Event, None]:
    """Snapshot, then changes read from the shared store until the task settles."""
    yield task
    last = task
    changed = False
    while True:
        await asyncio.sleep(TAIL_INTERVAL)
        stored = await store.get(task.id, context)
        if stored is None:
            return
        current = stored.task
        seen = {a.artifact_id: a for a in last.artifacts}
        for artifact in current.artifacts:
            if seen.get(artifact.artifact_id) != artifact:
                yield TaskArtifactUpdateEvent(
                    task_id=current.id,
                    context_id=current.context_id,
                    artifact=artifact,
                    append=False,
                )
        if current.status != last.status:
            changed = True
            yield TaskStatusUpdateEvent(
                task_id=current.id,
                context_id=current.context_id,
                status=current.status,
                metadata=current.metadata,
            )
            if current.status.state in SETTLED:
                return
        if current.status.state in TERMINAL_STATES and not changed:
            return
        last = current


def _last_event_id(context: ServerCallContext) -> int | None:
    headers = context.state.get("headers") or {}
    value = headers.get("last-event-id")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class Principal(User):
    """A caller acting inside the service (recovery, extension methods)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._name


class OpenCodeRequestHandler(DefaultRequestHandler):
    """DefaultRequestHandler with input validation up front and an idempotent cancel."""

    def __init__(
        self,
        *,
        agent_executor: OpenCodeExecutor,
        push_allowed_hosts: frozenset[str] = frozenset(),
        task_ids: IDGenerator | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault(
            "request_context_builder",
            SimpleRequestContextBuilder(
                task_store=kwargs.get("task_store"),  # type: ignore[arg-type]
                task_id_generator=task_ids,
                context_id_generator=agent_executor.new_contexts,
            ),
        )
        super().__init__(agent_executor=agent_executor, **kwargs)  # type: ignore[arg-type]
        self.executor = agent_executor
        self.push_allowed_hosts = push_allowed_hosts

    def requests_in_flight(self) -> int:
        """Requests the SDK is still working through: a turn's run up to its last event
        stored (the SDK holds a task's request lock until then)."""
        tasks = list(self._active_task_registry._active_tasks.values())
        return sum(1 for task in tasks if task._request_lock.locked())

    def undelivered(self) -> int:
        """Events published but not yet taken by the streams that follow their task
        (so a shutdown can let them go out before it closes the queues)."""
        waiting = 0
        for task in list(self._active_task_registry._active_tasks.values()):
            for source in (task._event_queue_agent, task._event_queue_subscribers):
                waiting += source._incoming_queue.qsize()
                waiting += sum(sink.queue.qsize() for sink in list(source._sinks))
        return waiting

    async def _reject_unsafe_push_url(self, url: str) -> None:
        """Screen a webhook URL when a push config is created (clear -32602 if refused)."""
        try:
            await screen_url(url, self.push_allowed_hosts)
        except PushUrlRefused as exc:
            raise InvalidParamsError(str(exc)) from None

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

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """A finished task answers with its final snapshot (and the stream ends)."""
        stored = await self._versioned_store.get(params.id, context)
        if stored is not None and stored.task.status.state in TERMINAL_STATES:
            yield stored.task
            return
        if stored is not None and await self.executor.remote_lease(params.id):
            # Another replica runs this turn: follow it through the shared store.
            async for event in _tail_store(self._versioned_store, stored.task, context):
                yield event
            return
        last_seen = _last_event_id(context)
        replayed = -1
        first = True
        async for event in super().on_subscribe_to_task(params, context):
            sequence = sequence_of(event)
            if sequence is not None and sequence <= replayed:
                continue  # already sent from the log
            yield event
            if first and last_seen is not None:
                # After the snapshot: what the client missed, from the event log.
                for sequence, missed in self.executor.event_log.since(params.id, last_seen):
                    replayed = sequence
                    yield missed
            first = False

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        """Cancelling a task that is already canceled returns it unchanged."""
        stored = await self._versioned_store.get(params.id, context)
        if stored is not None and stored.task.status.state == TaskState.TASK_STATE_CANCELED:
            return stored.task
        if stored is not None and stored.task.status.state not in TERMINAL_STATES:
            lease = await self.executor.remote_lease(params.id)
            if lease is not None:
                await self.executor.abort_remote(lease)
        result = await super().on_cancel_task(params, context)
        assert result is not None
        return result

    async def resume_task(self, lease: Lease) -> bool:
        """Re-attach a turn after a restart: run a resume request on the task.

        Returns False (and drops the lease) when the task has ended meanwhile.
        """
        call = ServerCallContext(user=Principal(lease.owner), state={"headers": {}})
        stored = await self._versioned_store.get(lease.task_id, call)
        if stored is None or stored.task.status.state in TERMINAL_STATES:
            return False
        task = stored.task
        # Reusing the task's first message id keeps the SDK from adding it to history.
        first = task.history[0].message_id if task.history else str(uuid.uuid4())
        message = Message(
            role=Role.ROLE_USER,
            message_id=first,
            task_id=task.id,
            context_id=task.context_id,
            parts=[Part(text="resume")],
            metadata=to_struct({"opencode": {RESUME_KEY: True}}),
        )
        self.executor.expect_resume(lease)
        active = await self._active_task_registry.get_or_create(
            task.id, call_context=call, context_id=task.context_id
        )
        await active.enqueue_request(
            RequestContext(
                call_context=call,
                request=SendMessageRequest(message=message),
                task_id=task.id,
                context_id=task.context_id,
                task=task,
            )
        )
        return True

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
            plan = await self.executor.plan(message, meta, owner)
            # The session can be created while the SDK sets the request up.
            if self.executor.start_session_early(message, plan):
                await asyncio.sleep(0)  # let its request go out before the SDK's work
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
        if await self.executor.remote_lease(task.id) is not None:
            raise InvalidParamsError(
                f"Task {task.id} runs on another replica: answer its ask with the "
                "a2a.interrupt.* methods (any replica), or send this message to the "
                "replica running it (route a context's requests to one replica)."
            )
        if task.status.state != TaskState.TASK_STATE_INPUT_REQUIRED:
            raise InvalidParamsError(
                f"Task {task.id} is {TaskState.Name(task.status.state)}: it takes a new "
                "message only when it needs input. Wait for it, cancel it, or send a new "
                "message without taskId to start another turn in the same context."
            )
        ask = await self.executor.pending_ask(task.id, message)
        answer_from_message(message, ask)
        await self.executor.interrupts.find(ask.request_id, owner)
