"""The AgentExecutor: turns each A2A message into one OpenCode turn.

A turn runs in the background, owned by the executor: `execute()` waits only until
the turn needs input or ends. A follow-up message on a task that needs input answers
the pending ask, and `execute()` then waits for the same turn to settle again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import Message, TaskState
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format

from ..errors import (
    InvalidRequest,
    MethodError,
    UpstreamError,
    UpstreamHTTPError,
    failure_from_exception,
)
from ..observability.metrics import Metrics
from ..observability.turns import record_turn
from ..security.input import file_url_inside
from ..shutdown import stop_turn
from ..store.bindings import BindingStore
from ..store.gate import WriteGate
from ..store.ids import FreshIds
from ..store.interrupts import Ask
from ..store.leases import Lease, LeaseStore
from ..upstream.client import OpenCodeClient
from ..upstream.events import EventHub
from .changes import FileCaps
from .directories import DirectoryPolicy, resolve_directory
from .eventlog import EventLog, RecordingQueue
from .interrupts import InterruptService, answer_from_message
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
    file_caps: FileCaps = field(default_factory=FileCaps)


@dataclass(frozen=True)
class Plan:
    """A validated request: where and how to run the turn."""

    directory: str
    parts: list[dict[str, Any]]
    model: dict[str, str] | None
    session_ref: str | None
    session_title: str | None
    options: dict[str, Any]
    command: dict[str, Any] | None
    include_files: bool = False


class OpenCodeExecutor(AgentExecutor):
    """Runs turns, one at a time per OpenCode session, and cancels them on request."""

    metrics: Metrics | None = None  # set by the app: turn counts and durations

    def __init__(
        self,
        *,
        client: OpenCodeClient,
        hub: EventHub,
        bindings: BindingStore,
        interrupts: InterruptService,
        options: ExecutorOptions,
        leases: LeaseStore | None = None,
        event_log: EventLog | None = None,
        persisted: Callable[[str], Awaitable[object]] | None = None,
        gate: WriteGate | None = None,
    ) -> None:
        self.event_log = event_log or EventLog()
        self.client = client
        self.hub = hub
        self.bindings = bindings
        self.interrupts = interrupts
        self.options = options
        self.leases = leases
        # Waits until a task's final state is in the database (the lease is kept until).
        self.persisted = persisted
        # Held from a new turn's request until its prompt is out; writes wait at it.
        self.gate = gate or WriteGate()
        self._turns: dict[str, Turn] = {}
        self._resuming: dict[str, Lease] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self.handed_off: set[str] = set()  # turns left to the next process at shutdown
        self._session_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._binding_writes: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self.new_contexts = FreshIds()  # context ids for requests that name none
        # Sessions created while the SDK was still setting up their request, by message id.
        self._early: dict[str, tuple[str, asyncio.Task[dict[str, Any]]]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- the AgentExecutor interface -------------------------------------------------

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        if message is None:
            raise InvalidParamsError("The request carries no message.")
        task = context.current_task
        if _is_resume(message):
            await self._resume(context, event_queue)
            return
        if task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
            await self._answer(context, message)
            return
        hold = self.gate.hold()
        try:
            turn = await self._begin(context, message, event_queue)
            if turn is None:
                return
            await turn.wait_prompted()
        finally:
            hold.release()
        await turn.wait_settled()

    async def _begin(
        self, context: RequestContext, message: Message, event_queue: EventQueue
    ) -> Turn | None:
        """Open the task, find or create the session and start the turn (None: it failed)."""
        owner = principal_of(context.call_context)
        # A context id this process just made up has nothing bound to it yet.
        new_context = self.new_contexts.used(context.context_id or "")
        try:
            plan = await self.plan(message, request_metadata(context, message), owner)
        except InvalidRequest as exc:
            raise InvalidParamsError(exc.message) from None
        # The session is looked up or created while the SDK takes the new task in.
        preparing = asyncio.create_task(
            self._turn_request(
                plan,
                owner,
                context.context_id or "",
                new_context=new_context,
                message_id=message.message_id,
            )
        )
        await asyncio.sleep(0)  # let it send its first request before the task is opened
        try:
            stream = await self._open_task(context, message, event_queue)
        except BaseException:
            preparing.cancel()
            raise
        try:
            request = await preparing
        except UpstreamError as exc:
            failure = failure_from_exception(exc)
            await stream.status(failure.state, failure.message, metadata=failure.metadata())
            return None
        turn = Turn(
            client=self.client,
            hub=self.hub,
            stream=stream,
            request=request,
            interrupts=self.interrupts,
            owner=owner,
            stream_timeout=self.options.stream_timeout,
        )
        self._start(turn, owner)
        return turn

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        turn = self._turns.get(context.task_id or "")
        if turn is not None:
            await turn.cancel()

    def running(self) -> int:
        """Turns working now (not waiting for input, not ended)."""
        return sum(1 for turn in self._turns.values() if not turn.done and not turn.paused)

    async def aclose(self, *, upstream_continues: bool = True) -> None:
        """Stop driving turns (shutdown); see shutdown.py for what happens to each."""
        for task_id, turn in list(self._turns.items()):
            if not turn.done:
                await _quietly(stop_turn(self, turn, task_id, upstream_continues))
        for runner in list(self._runners):
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)

    # -- running turns in the background ------------------------------------------------

    def _start(self, turn: Turn, owner: str, lease: Lease | None = None) -> None:
        task_id = turn.stream.task_id
        self._turns[task_id] = turn
        runner = asyncio.create_task(self._run(turn, owner, lease), name=f"turn:{task_id}")
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _run(self, turn: Turn, owner: str, resumed: Lease | None) -> None:
        lock = self._session_locks.setdefault(turn.session_id, asyncio.Lock())
        started = time.monotonic()
        task_id = turn.stream.task_id
        taken: asyncio.Task[None] | None = None
        try:
            async with lock:
                if resumed is None and self.leases is not None:
                    # Written while the prompt goes out: the lease is for recovery and
                    # must not delay the turn.
                    taken = asyncio.create_task(self._take_lease(turn, owner))
                if self.leases is not None:
                    turn.on_user_message = _after(taken, self.leases.note_message, task_id)
                if resumed is not None:
                    await turn.resume(resumed.user_message_id, resumed.posted_at_ms)
                else:
                    await turn.run()
        finally:
            self._turns.pop(task_id, None)
            self.event_log.finish(task_id)
            await self._binding_written(owner, turn.stream.context_id, turn.request.directory)
            if taken is not None:
                await _quietly(taken)
            if self.leases is not None and task_id in self.handed_off:
                await _quietly(self.leases.hand_off(task_id))
            elif self.leases is not None:
                if self.persisted is not None:
                    await _quietly(self.persisted(task_id))
                await _quietly(self.leases.release(task_id))
            record_turn(turn, owner, started, self.metrics)

    def _bind_behind(
        self, owner: str, context_id: str, directory: str, session_id: str, title: str
    ) -> None:
        """Record a context's new session without holding up the prompt.

        A lookup for the same context waits for the write (`_binding_written`).
        """
        key = (owner, context_id, directory)

        async def bind() -> None:
            await self.gate.wait()
            await self.bindings.bind(owner, context_id, directory, session_id, title)

        write = asyncio.create_task(_quietly(bind()))
        self._binding_writes[key] = write

        def forget(done: asyncio.Task[None]) -> None:
            if self._binding_writes.get(key) is done:
                del self._binding_writes[key]

        write.add_done_callback(forget)

    async def _binding_written(self, owner: str, context_id: str, directory: str) -> None:
        write = self._binding_writes.get((owner, context_id, directory))
        if write is not None:
            await asyncio.shield(write)

    async def _take_lease(self, turn: Turn, owner: str) -> None:
        if self.leases is None:
            return
        posted_at_ms = time.time() * 1000 - 50  # before the prompt, whenever this is written
        await self.gate.wait()
        request = turn.request
        await self.leases.take(
            Lease(
                task_id=turn.stream.task_id,
                owner=owner,
                context_id=turn.stream.context_id,
                session_id=request.session_id,
                directory=request.directory,
                user_message_id=None,
                posted_at_ms=posted_at_ms,
                replica="",
                heartbeat=0.0,
            )
        )

    async def _resume(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Re-attach to a turn whose driving process went away (see recovery)."""
        task = context.current_task
        lease = self._resuming.pop(context.task_id or "", None)
        if task is None or lease is None:
            return
        recording = RecordingQueue(event_queue, self.event_log, task.id)
        stream = TaskStream(recording, task.id, task.context_id)  # type: ignore[arg-type]
        stream.continue_after(task)
        request = TurnRequest(
            session_id=lease.session_id,
            session_title=_session_title(task),
            directory=lease.directory,
            body={},
            file_caps=self.options.file_caps,
        )
        turn = Turn(
            client=self.client,
            hub=self.hub,
            stream=stream,
            request=request,
            interrupts=self.interrupts,
            owner=lease.owner,
            stream_timeout=self.options.stream_timeout,
        )
        self._start(turn, lease.owner, lease)
        await turn.wait_settled()

    async def remote_lease(self, task_id: str) -> Lease | None:
        """The lease of a turn another live replica drives (None if local or orphaned)."""
        if task_id in self._turns or self.leases is None:
            return None
        lease = await self.leases.holder(task_id)
        if lease is None or lease.replica == self.leases.replica:
            return None
        if time.time() - lease.heartbeat > LEASE_STALE_AFTER:
            return None
        return lease

    async def abort_remote(self, lease: Lease) -> None:
        """Cancel a turn another replica drives: withdraw its asks, abort OpenCode.

        The driving replica sees the abort and ends the task `canceled` too.
        """
        for ask in await self.interrupts.pending_for_task(lease.task_id):
            await self.interrupts.withdraw(ask, "canceled")
        await self.client.abort(lease.session_id, lease.directory)

    def expect_resume(self, lease: Lease) -> None:
        """The next resume request for this task re-attaches with this lease."""
        self._resuming[lease.task_id] = lease

    async def _answer(self, context: RequestContext, message: Message) -> None:
        """A follow-up message on a task that waits for input answers its ask."""
        task_id = context.task_id or ""
        owner = principal_of(context.call_context)
        turn = self._turns.get(task_id)
        try:
            ask = await self.pending_ask(task_id, message)
            answer = answer_from_message(message, ask)
        except (InvalidRequest, MethodError) as exc:
            raise InvalidParamsError(exc.message) from None
        if turn is None:
            raise InvalidParamsError(
                f"Task {task_id} waits for input, but the turn behind it is no longer running."
            )
        turn.resuming()
        try:
            await self.interrupts.resolve(owner, ask.request_id, answer)
        except (MethodError, UpstreamError) as exc:
            turn.answer_failed()
            await turn.reannounce(f"The answer could not be delivered ({exc.message}).")
            return
        await turn.wait_settled()

    async def pending_ask(self, task_id: str, message: Message) -> Ask:
        """The ask a follow-up message answers: the one it names, else the oldest."""
        asks = await self.interrupts.pending_for_task(task_id)
        if not asks:
            raise InvalidRequest(f"Task {task_id} has no pending ask to answer.")
        wanted = _named_request_id(message)
        for ask in asks:
            if wanted is None or ask.request_id == wanted:
                return ask
        raise InvalidRequest(f"Task {task_id} has no pending ask {wanted}.")

    # -- planning a turn -------------------------------------------------------------

    async def _open_task(
        self, context: RequestContext, message: Message, queue: EventQueue
    ) -> TaskStream:
        task_id = context.task_id or ""
        context_id = context.context_id or ""
        if context.current_task is None:
            message.task_id = task_id
            message.context_id = context_id
            await queue.enqueue_event(new_task_from_user_message(message))
        stream = TaskStream(RecordingQueue(queue, self.event_log, task_id), task_id, context_id)  # type: ignore[arg-type]
        await stream.status(TaskState.TASK_STATE_WORKING)
        return stream

    async def plan(self, message: Message, meta: dict[str, Any], owner: str) -> Plan:
        """Validate a new turn's message and metadata (raises InvalidRequest)."""
        opencode = _object(meta.get("opencode"), "metadata.opencode")
        shared = _object(meta.get("shared"), "metadata.shared")
        directory = resolve_directory(
            opencode.get("directory"),
            self.options.workspace_root,
            allow_override=self.options.allow_directory_override,
        )
        parts = prompt_parts(list(message.parts))
        for part in parts:
            if part["type"] == "file" and not file_url_inside(
                part["url"], self.options.workspace_root
            ):
                raise InvalidRequest(
                    "A file part's file: URL must name a file inside the workspace root "
                    "(OPENCODE_WORKSPACE_ROOT); send the bytes instead."
                )
        model = _model(shared.get("model")) or self.options.default_model
        session_ref = _object(shared.get("session"), "metadata.shared.session").get("id")
        options = prompt_options(opencode)
        command = _command(opencode.get("command"))
        include_files = opencode.get("include_files", False)
        if not isinstance(include_files, bool):
            raise InvalidRequest("metadata.opencode.include_files must be true or false.")
        title = None
        if session_ref is not None:
            title, directory = await self._check_session(
                session_ref, opencode.get("directory"), owner
            )
        if command is not None:
            await self._check_command(command["command"], directory)
        return Plan(directory, parts, model, session_ref, title, options, command, include_files)

    async def _check_command(self, name: str, directory: str) -> None:
        commands = await self.client.request("GET", "/command", directory=directory)
        known = [str(c.get("name")) for c in commands or [] if isinstance(c, dict)]
        if name not in known:
            raise InvalidRequest(
                f"OpenCode has no command {name!r} here; known commands: {', '.join(known)}."
            )

    async def _check_session(
        self, session_ref: Any, requested_directory: Any, owner: str
    ) -> tuple[str, str]:
        """An existing session's title and directory, if the caller may use it.

        A session runs in its own directory, which must lie inside the workspace root.
        """
        if not isinstance(session_ref, str) or not SESSION_ID.fullmatch(session_ref):
            raise InvalidRequest(
                "metadata.shared.session.id must be an OpenCode session id (ses_…)."
            )
        try:
            session = await self.client.get_session(session_ref)
        except UpstreamHTTPError as exc:
            if exc.status == 404:
                raise InvalidRequest(f"OpenCode has no session {session_ref}.") from None
            raise
        existing = await self.bindings.owner_of(session_ref)
        if existing is not None and existing != owner:
            raise InvalidRequest(f"Session {session_ref} belongs to another caller.")
        directory = str(session.get("directory") or "")
        policy = DirectoryPolicy(
            self.options.workspace_root, allow_override=self.options.allow_directory_override
        )
        if not policy.contains(directory):
            raise InvalidRequest(
                f"Session {session_ref} runs outside the workspace root (OPENCODE_WORKSPACE_ROOT)."
            )
        if requested_directory is not None and policy.resolve(requested_directory) != directory:
            raise InvalidRequest(
                f"Session {session_ref} runs in {directory}; leave metadata.opencode.directory "
                "out or give that directory."
            )
        return str(session.get("title") or ""), directory

    async def _turn_request(
        self,
        plan: Plan,
        owner: str,
        context_id: str,
        new_context: bool = False,
        message_id: str = "",
    ) -> TurnRequest:
        body: dict[str, Any] = {"parts": plan.parts, **plan.options}
        if plan.model:
            body["model"] = plan.model
        command = None
        if plan.command is not None:
            command = _command_body(plan, body)
        if plan.session_ref is not None:
            if (
                await self.bindings.claim(owner, plan.session_ref, plan.session_title or "")
                != owner
            ):
                raise InvalidRequest(f"Session {plan.session_ref} belongs to another caller.")
            await self.bindings.bind(owner, context_id, plan.directory, plan.session_ref, "")
            session_id, title = plan.session_ref, plan.session_title or ""
        else:
            session_id, title = await self._bound_session(
                owner, context_id, plan, new_context=new_context, message_id=message_id
            )
        return TurnRequest(
            session_id=session_id,
            session_title=title,
            directory=plan.directory,
            body=body,
            command=command,
            include_files=plan.include_files,
            file_caps=self.options.file_caps,
        )

    def start_session_early(self, message: Message, plan: Plan) -> bool:
        """Create the session of a new conversation while the SDK sets up its request.

        Called once the message is known to be valid; `_bound_session` takes the
        session over. One that no turn takes within EARLY_SESSION_TTL is deleted.
        """
        if message.task_id or message.context_id or plan.session_ref is not None:
            return False  # only a new conversation gets a new session for sure
        if not message.message_id or message.message_id in self._early:
            return False
        creating = asyncio.create_task(
            self.client.create_session(plan.directory, session_title(plan.parts))
        )
        self._early[message.message_id] = (plan.directory, creating)
        asyncio.get_running_loop().call_later(
            EARLY_SESSION_TTL, self._drop_early, message.message_id, creating
        )
        return True

    def _drop_early(self, message_id: str, creating: asyncio.Task[dict[str, Any]]) -> None:
        entry = self._early.get(message_id)
        if entry is None or entry[1] is not creating:
            return  # taken by its turn
        del self._early[message_id]
        directory = entry[0]

        async def delete() -> None:
            session = await creating
            await self.client.request("DELETE", f"/session/{session['id']}", directory=directory)

        cleanup = asyncio.create_task(_quietly(delete()))
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _bound_session(
        self,
        owner: str,
        context_id: str,
        plan: Plan,
        new_context: bool = False,
        message_id: str = "",
    ) -> tuple[str, str]:
        title = session_title(plan.parts)
        # Only a context this process made up can have an early session (see above).
        early = self._early.pop(message_id, None) if new_context and message_id else None
        if early is not None and early[0] != plan.directory:
            self._early[message_id] = early  # another request's: left to expire
            early = None
        if not new_context:  # a context the client did not name cannot have a binding
            await self._binding_written(owner, context_id, plan.directory)
            binding = await self.bindings.get(owner, context_id, plan.directory)
            if binding is not None:
                return binding.session_id, title
        if early is not None:
            session = await early[1]
        else:
            session = await self.client.create_session(plan.directory, title)
        session_id = str(session["id"])
        self._bind_behind(owner, context_id, plan.directory, session_id, title)
        return session_id, str(session.get("title") or title)


RESUME_KEY = "resume"
EARLY_SESSION_TTL = 30.0  # seconds an early session waits for its turn before deletion
SESSION_ID = re.compile(r"ses_[0-9A-Za-z]+")
LEASE_STALE_AFTER = 35.0  # seconds without heartbeat before a lease is adopted


def _is_resume(message: Message) -> bool:
    meta = json_format.MessageToDict(message.metadata)
    return bool(meta.get("opencode", {}).get(RESUME_KEY)) if isinstance(meta, dict) else False


def _session_title(task: Any) -> str:
    meta = json_format.MessageToDict(task.metadata)
    return str(meta.get("shared", {}).get("session", {}).get("title") or "")


def _after(
    first: asyncio.Task[None] | None, then: Callable[[str, str], Awaitable[None]], task_id: str
) -> Callable[[str], Coroutine[Any, Any, None]]:
    """`then(task_id, value)`, once `first` (if any) has finished."""

    async def run(value: str) -> None:
        if first is not None:
            await asyncio.shield(first)
        await then(task_id, value)

    return run


async def _quietly(work: Any) -> None:
    try:
        await work
    except Exception:
        log.exception("bookkeeping write failed")


def principal_of(call_context: ServerCallContext | None) -> str:
    user = call_context.user if call_context else None
    return user.user_name if user is not None else ""


def request_metadata(context: RequestContext, message: Message) -> dict[str, Any]:
    """`params.metadata` merged over `message.metadata` (request-level keys win)."""
    return merge_metadata(json_format.MessageToDict(message.metadata), context.metadata or {})


def merge_metadata(message_meta: dict[str, Any], request_meta: dict[str, Any]) -> dict[str, Any]:
    merged = dict(message_meta)
    for key, value in request_meta.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


PROMPT_OPTIONS = {"agent": str, "system": str, "variant": str, "tools": dict}


def prompt_options(opencode: dict[str, Any]) -> dict[str, Any]:
    """OpenCode prompt options from `metadata.opencode` (agent, system, variant, tools)."""
    options: dict[str, Any] = {}
    for key, kind in PROMPT_OPTIONS.items():
        value = opencode.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is str and not value.strip()):
            raise InvalidRequest(f"metadata.opencode.{key} must be a non-empty {kind.__name__}.")
        if key == "tools" and not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
        ):
            raise InvalidRequest("metadata.opencode.tools must map tool names to true/false.")
        options[key] = value
    return options


def _command(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    command = _object(value, "metadata.opencode.command")
    name, arguments = command.get("name"), command.get("arguments")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("metadata.opencode.command.name must be a non-empty string.")
    if arguments is not None and not isinstance(arguments, str):
        raise InvalidRequest("metadata.opencode.command.arguments must be a string.")
    return {"command": name.strip().lstrip("/"), "arguments": arguments}


def _command_body(plan: Plan, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /session/{id}/command`: the message text is the arguments unless given."""
    assert plan.command is not None
    arguments = plan.command["arguments"]
    if arguments is None:
        arguments = " ".join(p["text"] for p in plan.parts if p["type"] == "text").strip()
    command: dict[str, Any] = {"command": plan.command["command"], "arguments": arguments}
    files = [p for p in plan.parts if p["type"] == "file"]
    if files:
        command["parts"] = files
    if body.get("model"):
        command["model"] = f"{body['model']['providerID']}/{body['model']['modelID']}"
    for key in ("agent", "variant"):
        if key in body:
            command[key] = body[key]
    return command


def _named_request_id(message: Message) -> str | None:
    for part in message.parts:
        if part.WhichOneof("content") == "data":
            data = json_format.MessageToDict(part.data)
            if isinstance(data, dict) and isinstance(data.get("request_id"), str):
                return str(data["request_id"])
    return None


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
