"""The AgentExecutor: turns each A2A message into one OpenCode turn."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import Message, TaskState
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format

from ..errors import InvalidRequest, UpstreamError, UpstreamHTTPError, failure_from_exception
from ..store.bindings import BindingStore
from ..upstream.client import OpenCodeClient
from ..upstream.events import EventHub
from .directories import resolve_directory
from .mapping import prompt_parts, session_title
from .stream import TaskStream
from .turn import Turn, TurnRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorOptions:
    workspace_root: Path
    allow_directory_override: bool = True
    default_model: dict[str, str] | None = None
    stream_timeout: float | None = None


class OpenCodeExecutor(AgentExecutor):
    """Runs turns, one at a time per OpenCode session, and cancels them on request."""

    def __init__(
        self,
        *,
        client: OpenCodeClient,
        hub: EventHub,
        bindings: BindingStore,
        options: ExecutorOptions,
    ) -> None:
        self.client = client
        self.hub = hub
        self.bindings = bindings
        self.options = options
        self._turns: dict[str, Turn] = {}
        self._session_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        if message is None:
            raise InvalidParamsError("The request carries no message.")
        try:
            plan = await self._plan(context, message)
        except InvalidRequest as exc:
            raise InvalidParamsError(exc.message) from None
        except UpstreamError as exc:
            stream = await self._open_task(context, message, event_queue)
            failure = failure_from_exception(exc)
            await stream.status(failure.state, failure.message, metadata=failure.metadata())
            return
        stream = await self._open_task(context, message, event_queue)
        lock = self._session_locks.setdefault(plan.session_id, asyncio.Lock())
        async with lock:
            turn = Turn(
                client=self.client,
                hub=self.hub,
                stream=stream,
                request=plan,
                stream_timeout=self.options.stream_timeout,
            )
            self._turns[stream.task_id] = turn
            started = time.monotonic()
            try:
                await turn.run()
            finally:
                self._turns.pop(stream.task_id, None)
                log.info(
                    "turn task=%s context=%s session=%s principal=%s state=%s duration_ms=%.0f",
                    stream.task_id,
                    stream.context_id,
                    plan.session_id,
                    _principal(context),
                    TaskState.Name(stream.final_state or 0),
                    (time.monotonic() - started) * 1000,
                )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        turn = self._turns.get(context.task_id or "")
        if turn is not None:
            await turn.cancel()

    # -- planning a turn ------------------------------------------------------

    async def _open_task(
        self, context: RequestContext, message: Message, queue: EventQueue
    ) -> TaskStream:
        task_id = context.task_id or ""
        context_id = context.context_id or ""
        if context.current_task is None:
            message.task_id = task_id
            message.context_id = context_id
            task = new_task_from_user_message(message)
            await queue.enqueue_event(task)
        stream = TaskStream(queue, task_id, context_id)
        await stream.status(TaskState.TASK_STATE_WORKING)
        return stream

    async def _plan(self, context: RequestContext, message: Message) -> TurnRequest:
        """Validate the request and resolve directory, session and model."""
        meta = _request_metadata(context, message)
        opencode = _object(meta.get("opencode"), "metadata.opencode")
        shared = _object(meta.get("shared"), "metadata.shared")
        directory = resolve_directory(
            opencode.get("directory"),
            self.options.workspace_root,
            allow_override=self.options.allow_directory_override,
        )
        parts = prompt_parts(list(message.parts))
        body: dict[str, Any] = {"parts": parts}
        model = _model(shared.get("model")) or self.options.default_model
        if model:
            body["model"] = model
        owner = _principal(context)
        session_ref = _object(shared.get("session"), "metadata.shared.session").get("id")
        title = session_title(parts)
        session_id, title = await self._session_for(
            owner, context.context_id or "", directory, session_ref, title
        )
        return TurnRequest(
            session_id=session_id, session_title=title, directory=directory, body=body
        )

    async def _session_for(
        self, owner: str, context_id: str, directory: str, session_ref: Any, title: str
    ) -> tuple[str, str]:
        if session_ref is not None:
            return await self._explicit_session(owner, context_id, directory, session_ref)
        binding = await self.bindings.get(owner, context_id, directory)
        if binding is not None:
            return binding.session_id, title
        session = await self.client.create_session(directory, title)
        session_id = str(session["id"])
        await self.bindings.bind(owner, context_id, directory, session_id, title)
        return session_id, str(session.get("title") or title)

    async def _explicit_session(
        self, owner: str, context_id: str, directory: str, session_ref: Any
    ) -> tuple[str, str]:
        if not isinstance(session_ref, str) or not session_ref.startswith("ses"):
            raise InvalidRequest(
                "metadata.shared.session.id must be an OpenCode session id (ses…)."
            )
        try:
            session = await self.client.get_session(session_ref, directory)
        except UpstreamHTTPError as exc:
            if exc.status == 404:
                raise InvalidRequest(f"OpenCode has no session {session_ref}.") from None
            raise
        if await self.bindings.claim(owner, session_ref, str(session.get("title") or "")) != owner:
            raise InvalidRequest(f"Session {session_ref} belongs to another caller.")
        await self.bindings.bind(owner, context_id, directory, session_ref, "")
        return session_ref, str(session.get("title") or "")


def _principal(context: RequestContext) -> str:
    user = context.call_context.user if context.call_context else None
    return user.user_name if user is not None else ""


def _request_metadata(context: RequestContext, message: Message) -> dict[str, Any]:
    """`params.metadata` merged over `message.metadata` (request-level keys win)."""
    merged: dict[str, Any] = json_format.MessageToDict(message.metadata)
    for key, value in (context.metadata or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be an object.")
    return value


def _model(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    model = _object(value, "metadata.shared.model")
    provider, model_id = model.get("providerID"), model.get("modelID")
    if not (isinstance(provider, str) and provider and isinstance(model_id, str) and model_id):
        raise InvalidRequest(
            "metadata.shared.model needs non-empty string fields providerID and modelID."
        )
    return {"providerID": provider, "modelID": model_id}
