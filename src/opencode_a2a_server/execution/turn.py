"""Turn: one A2A task driving one OpenCode prompt, from prompt to a final state.

The turn subscribes to the EventHub before prompting, streams text, reasoning and tool
calls as they arrive, and finishes on `session.idle` by reconciling with the messages
OpenCode stored, so the final Task agrees with OpenCode even if events were late.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from a2a.types.a2a_pb2 import TaskState

from ..errors import (
    TurnFailure,
    UpstreamError,
    UpstreamUnreachable,
    failure_from_exception,
    failure_from_session_error,
)
from ..store.interrupts import Ask
from ..upstream.client import OpenCodeClient
from ..upstream.events import EventHub, StreamLost, StreamRestored, Subscription
from .changes import FileCaps, changes_parts, file_notice, turn_changed_files, turn_diff
from .interrupts import InterruptService, ask_text
from .mapping import TEXT_SEPARATOR, text_of_parts, tool_call_data, usage_of
from .stream import TaskStream

log = logging.getLogger(__name__)

HUB_CONNECT_TIMEOUT = 3.0
SILENCE_PROBE_SECONDS = 30.0
RECONCILE_ATTEMPTS = 40
RECONCILE_INTERVAL = 0.05
SUMMARY_WAIT = 3.0


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    FINISHING = "finishing"
    DONE = "done"


@dataclass
class TurnRequest:
    """What to send to OpenCode for one turn."""

    session_id: str
    session_title: str
    directory: str
    body: dict[str, Any]
    command: dict[str, Any] | None = None  # run a slash command instead of a prompt
    include_files: bool = False  # attach changed files' contents to `changes`
    file_caps: FileCaps = field(default_factory=FileCaps)


@dataclass
class _Block:
    """What has been streamed of one OpenCode text or reasoning part.

    Deltas are kept as a list and joined only when the whole text is asked for (a part
    update to compare with), so a long answer costs linear time, not quadratic.
    """

    kind: str
    message_id: str
    chunks: list[str] = field(default_factory=list)
    length: int = 0

    def add(self, delta: str) -> None:
        self.chunks.append(delta)
        self.length += len(delta)

    @property
    def emitted(self) -> str:
        if len(self.chunks) > 1:
            self.chunks[:] = ["".join(self.chunks)]
        return self.chunks[0] if self.chunks else ""


@dataclass
class _Progress:
    """Everything the turn has learned from the event stream so far."""

    posted_at_ms: float = 0.0
    user_message_id: str | None = None
    assistant: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: dict[str, _Block] = field(default_factory=dict)
    pending_deltas: dict[str, list[str]] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    streamed: dict[str, bool] = field(default_factory=dict)
    failure: TurnFailure | None = None
    early_failure: TurnFailure | None = None
    aborted: bool = False
    # The turn's parts as the events last showed them, by message: with every message
    # complete this is what OpenCode stored, so no read-back is needed.
    parts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # Events may have been missed (stream lost, resumed) or superseded (retries).
    unreliable: bool = False


class Turn:
    """A small state machine: STARTING -> RUNNING -> FINISHING -> DONE."""

    def __init__(
        self,
        *,
        client: OpenCodeClient,
        hub: EventHub,
        stream: TaskStream,
        request: TurnRequest,
        interrupts: InterruptService,
        owner: str,
        stream_timeout: float | None = None,
    ) -> None:
        self.client = client
        self.hub = hub
        self.stream = stream
        self.request = request
        self.interrupts = interrupts
        self.owner = owner
        self.stream_timeout = stream_timeout
        self.phase = Phase.STARTING
        self.canceled = False
        self._progress = _Progress()
        self._pending: dict[str, Ask] = {}
        self._declined: str | None = None
        self._settled = asyncio.Event()
        self._prompted = asyncio.Event()  # the prompt went out (or the turn ended first)
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._pushback: Any = None
        # Called once the turn's OpenCode user message is known (for leases).
        self.on_user_message: Callable[[str], Coroutine[Any, Any, None]] | None = None
        self.first_text_at: float | None = None  # time.monotonic() of the first text delta

    @property
    def session_id(self) -> str:
        return self.request.session_id

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        """Drive the turn to a final state; never leaves the task `working`."""
        await self._guarded(self._run())

    async def resume(self, user_message_id: str | None, posted_at_ms: float) -> None:
        """Re-attach to a turn this service was driving before it restarted."""
        self._progress.posted_at_ms = posted_at_ms
        self._progress.user_message_id = user_message_id
        await self._guarded(self._resume())

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, UpstreamError):
                log.exception("turn for task %s failed", self.stream.task_id)
            await self._fail(failure_from_exception(exc))
        finally:
            self.phase = Phase.DONE
            self._prompted.set()
            self._settled.set()

    # -- pausing for input ------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def paused(self) -> bool:
        return bool(self._pending) and not self.done

    async def wait_settled(self) -> None:
        """Wait until the turn waits for input or has ended."""
        await self._settled.wait()

    async def wait_prompted(self) -> None:
        """Wait until OpenCode has taken the prompt (or the turn ended without it)."""
        await self._prompted.wait()

    def resuming(self) -> None:
        """An answer is on its way: the turn is no longer settled."""
        if not self.done:
            self._settled.clear()

    def answer_failed(self) -> None:
        """The answer could not be delivered: the turn still waits."""
        if self._pending:
            self._settled.set()

    async def reannounce(self, reason: str) -> None:
        """Publish input-required again for the oldest pending ask, with a reason."""
        if self._pending:
            await self._announce(next(iter(self._pending.values())), prefix=reason)

    async def cancel(self) -> None:
        """End the task `canceled` and abort the OpenCode turn (idempotent).

        The status goes out first: once the abort lands the turn may finish on its own,
        and a stream that has already closed would never see the cancellation.
        """
        if self.canceled:
            return
        self.canceled = True
        await self.stream.status(
            TaskState.TASK_STATE_CANCELED,
            "Canceled at the client's request.",
            metadata=self._session_metadata(),
        )
        for ask in list(self._pending.values()):
            await self.interrupts.withdraw(ask, "canceled")
        self._pending.clear()
        try:
            await self.client.abort(self.session_id, self.request.directory)
        except UpstreamError as exc:
            log.warning("abort of session %s failed: %s", self.session_id, exc.message)
        self._settled.set()

    async def _run(self) -> None:
        await self._ensure_hub()
        with self.hub.subscribe(self.session_id) as subscription:
            self._progress.posted_at_ms = time.time() * 1000 - 5
            starter = await self._start(subscription)
            self._prompted.set()
            try:
                self.phase = Phase.RUNNING
                await self._consume(subscription)
                self.phase = Phase.FINISHING
                await self._finish(subscription)
            finally:
                if starter is not None:
                    starter.cancel()

    async def _resume(self) -> None:
        """Like `_run`, without prompting: re-sync from what OpenCode stored first."""
        self._progress.unreliable = True
        await self._ensure_hub()
        with self.hub.subscribe(self.session_id) as subscription:
            self.phase = Phase.RUNNING
            await self._seed_from_storage()
            for ask in await self.interrupts.pending_for_task(self.stream.task_id):
                self._pending[ask.request_id] = ask
            if self._pending and self.stream.stored_state == TaskState.TASK_STATE_INPUT_REQUIRED:
                self._settled.set()  # the task already says input-required
            elif self._pending:
                # The process stopped before the input-required status was stored.
                await self._announce(next(iter(self._pending.values())))
            elif not await self._session_busy():
                self.phase = Phase.FINISHING
                await self._finish(subscription)
                return
            await self._consume(subscription)
            self.phase = Phase.FINISHING
            await self._finish(subscription)

    async def _seed_from_storage(self) -> None:
        """Learn the turn's messages and parts, so later events stream correctly."""
        history = await self.client.messages(self.session_id, self.request.directory)
        for entry in self._select_turn(history):
            info = entry["info"]
            self._progress.assistant[str(info.get("id"))] = info
            for part in entry.get("parts") or []:
                if part.get("type") in ("text", "reasoning") and not part.get("synthetic"):
                    block = _Block(part["type"], str(info.get("id")))
                    block.add(part.get("text") or "")
                    self._progress.blocks[str(part.get("id"))] = block
                    if block.length:
                        self._progress.streamed[part["type"]] = True
        if self._progress.user_message_id and self.on_user_message:
            await self.on_user_message(self._progress.user_message_id)

    async def _start(self, subscription: Subscription) -> asyncio.Task[None] | None:
        """Send the prompt; a command's call blocks until the turn ends, so it runs aside."""
        if self.request.command is None:
            await self.client.prompt_async(
                self.session_id, self.request.directory, self.request.body
            )
            return None
        return asyncio.create_task(self._post_command(subscription), name="opencode-command")

    async def _post_command(self, subscription: Subscription) -> None:
        body = {**self.request.command} if self.request.command else {}
        try:
            await self.client.send(
                "POST",
                f"/session/{self.session_id}/command",
                directory=self.request.directory,
                json_body=body,
                timeout=None,  # the events say when it is done, however long it takes
            )
        except Exception as exc:
            subscription.put(exc)

    async def _ensure_hub(self) -> None:
        if await self.hub.wait_connected(HUB_CONNECT_TIMEOUT):
            return
        await self.client.health()  # raises UpstreamUnreachable with the real cause
        raise UpstreamUnreachable(
            f"OpenCode at {self.client.base_url} answers, but its event stream is not connected"
        )

    # -- consuming events -----------------------------------------------------

    async def _consume(self, subscription: Subscription) -> None:
        silence = self.stream_timeout or SILENCE_PROBE_SECONDS
        while True:
            try:
                item = await self._next(subscription, silence)
            except TimeoutError:
                if await self._silence_says_done():
                    return
                continue
            if isinstance(item, Exception):
                raise item
            if isinstance(item, StreamLost):
                self._progress.unreliable = True
                await self._on_stream_lost(item)
                continue
            if isinstance(item, StreamRestored):
                self._progress.unreliable = True
                if not await self._session_busy():
                    return
                continue
            if await self._handle(item):
                return

    async def _next(self, subscription: Subscription, timeout: float) -> Any:
        """The next event, with text deltas already queued for the same part merged.

        OpenCode can emit hundreds of deltas within milliseconds; one A2A chunk per
        burst keeps the stream as fast as the client can take it.
        """
        if self._pushback is not None:
            item, self._pushback = self._pushback, None
        else:
            item = await subscription.get(timeout=timeout)
        if not isinstance(item, dict) or not _is_delta(item):
            return item
        merged = None
        while (following := subscription.get_nowait()) is not None:
            if isinstance(following, dict) and _is_delta(following) and _same_part(item, following):
                merged = merged or [item["properties"]["delta"]]
                merged.append(following["properties"]["delta"])
                continue
            self._pushback = following
            break
        if merged is None:
            return item
        props = {**item["properties"], "delta": "".join(str(d or "") for d in merged)}
        return {**item, "properties": props}

    async def _silence_says_done(self) -> bool:
        """After a long silence: finished if OpenCode says the session is idle."""
        if not await self._session_busy():
            return True
        if self.stream_timeout is not None:
            raise UpstreamUnreachable(
                f"OpenCode sent no event for {self.stream_timeout:g} s "
                "(OPENCODE_TIMEOUT_STREAM); the turn was abandoned"
            )
        return False

    async def _session_busy(self) -> bool:
        status = await self.client.session_status(self.request.directory)
        return self.session_id in status

    async def _on_stream_lost(self, signal: StreamLost) -> None:
        try:
            await self.client.health()
        except UpstreamUnreachable as exc:
            raise UpstreamUnreachable(
                f"OpenCode became unreachable during the turn ({signal.reason}); {exc.message}"
            ) from exc

    async def _handle(self, event: dict[str, Any]) -> bool:
        """Apply one event; True when the turn's session went idle."""
        kind = event.get("type")
        props = event.get("properties") or {}
        own = props.get("sessionID") == self.session_id
        if kind == "message.part.delta":
            await self._on_delta(props)
        elif kind == "message.part.updated":
            await self._on_part(props.get("part") or {})
        elif kind == "message.updated" and own:
            self._on_message(props.get("info") or {})
        elif kind == "session.status" and own:
            await self._on_status(props.get("status") or {})
        elif kind == "session.error" and own:
            self._on_error(props.get("error") or {})
        elif kind in ("permission.asked", "question.asked"):
            await self._on_ask(kind.split(".")[0], props)
        elif kind in ("permission.replied", "question.replied", "question.rejected"):
            await self._on_resolved(kind, props)
        elif kind == "session.idle" and own:
            return self._idle_is_ours()
        return False

    async def _on_ask(self, kind: str, props: dict[str, Any]) -> None:
        """OpenCode waits for a permission or an answer: the task needs input."""
        if self.canceled or not props.get("id"):
            return
        ask = self.interrupts.new_ask(
            kind,
            props,
            owner=self.owner,
            task_id=self.stream.task_id,
            context_id=self.stream.context_id,
            directory=self.request.directory,
        )
        await self.interrupts.register(ask)
        self._pending[ask.request_id] = ask
        if len(self._pending) == 1:
            await self._announce(ask)

    async def _announce(self, ask: Ask, prefix: str = "") -> None:
        interrupt = {
            "request_id": ask.request_id,
            "type": ask.kind,
            "phase": "asked",
            "details": ask.details,
        }
        text = ask_text(ask.kind, ask.details)
        await self.stream.status(
            TaskState.TASK_STATE_INPUT_REQUIRED,
            f"{prefix}\n\n{text}" if prefix else text,
            metadata={"shared": {"interrupt": interrupt, "session": self._session_ref()}},
            data={"interrupt": interrupt},
        )
        self._settled.set()

    async def _on_resolved(self, kind: str, props: dict[str, Any]) -> None:
        request_id = str(props.get("requestID"))
        ask = self._pending.pop(request_id, None)
        if ask is None:
            return
        if kind == "permission.replied":
            resolution: dict[str, Any] = {"reply": props.get("reply")}
        elif kind == "question.replied":
            resolution = {"answers": props.get("answers")}
        else:
            resolution = {"rejected": True}
        await self.interrupts.observed_resolution(request_id, resolution)
        stored = await self.interrupts.store.get(request_id)
        if stored is not None and stored.resolution:
            resolution = {**resolution, **stored.resolution}
        if _declines(ask.kind, resolution):
            self._declined = "expired" if resolution.get("withdrawn") == "expired" else ask.kind
        interrupt = {
            "request_id": request_id,
            "type": ask.kind,
            "phase": "resolved",
            "resolution": resolution,
        }
        meta = {"shared": {"interrupt": interrupt, "session": self._session_ref()}}
        if self._pending:
            await self.stream.status(TaskState.TASK_STATE_WORKING, metadata=meta)
            await self._announce(next(iter(self._pending.values())))
            return
        self._settled.clear()
        await self.stream.status(TaskState.TASK_STATE_WORKING, metadata=meta)

    def _idle_is_ours(self) -> bool:
        progress = self._progress
        if progress.user_message_id is not None:
            return True
        if progress.early_failure is not None:
            progress.failure = progress.early_failure
            return True
        return False

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Side work (bookkeeping writes) that must not hold up streaming."""
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _on_message(self, info: dict[str, Any]) -> None:
        progress = self._progress
        role = info.get("role")
        if role == "user" and progress.user_message_id is None:
            created = (info.get("time") or {}).get("created") or 0
            if created >= progress.posted_at_ms:
                progress.user_message_id = info.get("id")
                if self.on_user_message is not None and progress.user_message_id:
                    self._background(self.on_user_message(progress.user_message_id))
        elif role == "assistant" and progress.user_message_id is not None:
            if info.get("parentID") == progress.user_message_id:
                progress.assistant[str(info.get("id"))] = info

    async def _on_status(self, status: dict[str, Any]) -> None:
        if status.get("type") != "retry" or self._progress.user_message_id is None:
            return
        self._progress.unreliable = True  # the failed attempt's parts are not kept
        attempt = status.get("attempt")
        reason = status.get("message") or "the model provider failed"
        await self.stream.status(
            TaskState.TASK_STATE_WORKING,
            f"The model provider failed ({reason}); OpenCode is retrying (attempt {attempt}).",
            metadata={"opencode": {"retry": {"attempt": attempt, "message": reason}}},
        )

    def _on_error(self, error: dict[str, Any]) -> None:
        failure = failure_from_session_error(error)
        progress = self._progress
        if progress.user_message_id is None:
            # Before our message exists the error may trail a previous turn; it counts
            # only if this prompt never produces a message (e.g. an unknown model).
            progress.early_failure = failure or progress.early_failure
            return
        if failure is None:
            progress.aborted = True
        elif progress.failure is None:
            progress.failure = failure

    async def _on_part(self, part: dict[str, Any]) -> None:
        message_id = part.get("messageID")
        if message_id not in self._progress.assistant:
            return
        kind = part.get("type")
        part_id = str(part.get("id"))
        self._progress.parts.setdefault(message_id, {})[part_id] = part
        if kind in ("text", "reasoning"):
            if part.get("synthetic") or part.get("ignored"):
                return
            block = self._progress.blocks.setdefault(part_id, _Block(kind, message_id))
            for delta in self._progress.pending_deltas.pop(part_id, []):
                await self._emit_delta(block, delta)
            text = part.get("text") or ""
            if len(text) > block.length and text.startswith(block.emitted):
                await self._emit_delta(block, text[block.length :])
        elif kind == "tool":
            data = tool_call_data(part)
            files = file_notice(part)
            if files:
                data["files"] = files
            if self._progress.tools.get(part_id) != data and not self._pending:
                # While OpenCode waits for an answer the stream ends with the
                # input-required status; the next update carries the whole state.
                self._progress.tools[part_id] = data
                await self.stream.tool_call(part_id, data, message_id)

    async def _on_delta(self, props: dict[str, Any]) -> None:
        if props.get("field") != "text" or props.get("messageID") not in self._progress.assistant:
            return
        part_id = str(props.get("partID"))
        delta = str(props.get("delta") or "")
        block = self._progress.blocks.get(part_id)
        if block is None:
            self._progress.pending_deltas.setdefault(part_id, []).append(delta)
            return
        await self._emit_delta(block, delta)

    async def _emit_delta(self, block: _Block, delta: str) -> None:
        if not delta:
            return
        if self.first_text_at is None and block.kind == "text":
            self.first_text_at = time.monotonic()
        prefix = ""
        if not block.length and self._progress.streamed.get(block.kind):
            prefix = TEXT_SEPARATOR
        block.add(delta)
        self._progress.streamed[block.kind] = True
        await self.stream.text_chunk(block.kind, prefix + delta, block.message_id)

    # -- finishing --------------------------------------------------------------

    async def _finish(self, subscription: Subscription) -> None:
        if self.canceled:
            return
        stored = await self._stored_turn()
        infos = [entry["info"] for entry in stored]
        texts = [t for entry in stored for t in text_of_parts(entry["parts"], "text")]
        reasoning = [t for entry in stored for t in text_of_parts(entry["parts"], "reasoning")]
        last_id = infos[-1].get("id") if infos else None
        # A block that was streamed is always replaced by what OpenCode stored, even
        # when that is empty (partial output of retried attempts is not kept).
        streamed = self._progress.streamed
        if reasoning or streamed.get("reasoning"):
            await self.stream.text_snapshot("reasoning", TEXT_SEPARATOR.join(reasoning), last_id)
        if texts or streamed.get("text"):
            await self.stream.text_snapshot("text", TEXT_SEPARATOR.join(texts), last_id)
        await self._publish_changes(stored, subscription)
        failure = self._progress.failure or _stored_failure(infos)
        if failure is not None:
            await self._fail(failure, usage=usage_of(infos))
            return
        if self._declined is not None:
            await self.stream.status(
                TaskState.TASK_STATE_CANCELED,
                _DECLINED[self._declined],
                metadata=self._session_metadata(
                    usage=usage_of(infos), opencode={"declined": self._declined}
                ),
            )
            return
        if self._progress.aborted or _stored_aborted(infos):
            await self.stream.status(
                TaskState.TASK_STATE_CANCELED,
                "The OpenCode turn was aborted.",
                metadata=self._session_metadata(),
            )
            return
        metadata = self._session_metadata(usage=usage_of(infos))
        await self.stream.status(TaskState.TASK_STATE_COMPLETED, metadata=metadata)

    async def _publish_changes(
        self, stored: list[dict[str, Any]], subscription: Subscription
    ) -> None:
        """The `changes` artifact, when the turn changed files (git workspaces)."""
        user_id = self._progress.user_message_id
        if user_id is None or not turn_changed_files(stored):
            return
        diffs = await self._final_summary(subscription, user_id)
        if diffs is None:
            diffs = await turn_diff(self.client, self.session_id, self.request.directory, user_id)
        if not diffs:
            return
        parts = changes_parts(
            diffs, self.request.directory, self.request.include_files, self.request.file_caps
        )
        await self.stream.artifact(f"{self.stream.task_id}:changes", "changes", parts)

    async def _final_summary(
        self, subscription: Subscription, user_id: str
    ) -> list[dict[str, Any]] | None:
        """The turn's diff as OpenCode summarises it on the user message after idle.

        OpenCode finishes that summary just after `session.idle`; until then a diff
        request may miss the last step's changes.
        """
        deadline = time.monotonic() + SUMMARY_WAIT
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = await subscription.get(timeout=remaining)
            except TimeoutError:
                return None
            if not isinstance(item, dict) or item.get("type") != "message.updated":
                continue
            info = (item.get("properties") or {}).get("info") or {}
            summary = info.get("summary") if isinstance(info, dict) else None
            if info.get("id") == user_id and isinstance(summary, dict):
                diffs = summary.get("diffs")
                if isinstance(diffs, list):
                    return [d for d in diffs if isinstance(d, dict) and d.get("file")]
        return None

    async def _stored_turn(self) -> list[dict[str, Any]]:
        """The turn's assistant messages as OpenCode stored them, once all are complete.

        When the events showed every message and part to its end, they are what OpenCode
        stored; otherwise (missed events, retries, errors) the messages are read back.
        """
        seen = self._seen_turn()
        if seen is not None:
            return seen
        entries: list[dict[str, Any]] = []
        for _ in range(RECONCILE_ATTEMPTS):
            history = await self.client.messages(self.session_id, self.request.directory)
            entries = self._select_turn(history)
            if all(_message_done(entry["info"]) for entry in entries):
                return entries
            await asyncio.sleep(RECONCILE_INTERVAL)
        return entries

    def _seen_turn(self) -> list[dict[str, Any]] | None:
        """The turn's messages as the events showed them, if they are known to be whole."""
        progress = self._progress
        if (
            progress.unreliable
            or progress.failure is not None
            or progress.aborted
            or progress.pending_deltas
            or not progress.assistant
        ):
            return None
        entries = []
        for message_id in sorted(progress.assistant):
            info = progress.assistant[message_id]
            if not (info.get("time") or {}).get("completed") or info.get("error"):
                return None
            parts = progress.parts.get(message_id, {})
            ordered = [parts[part_id] for part_id in sorted(parts)]
            if not all(_part_done(part) for part in ordered):
                return None
            entries.append({"info": info, "parts": ordered})
        return entries

    def _select_turn(self, history: list[Any]) -> list[dict[str, Any]]:
        user_id = self._progress.user_message_id
        if user_id is None:
            for entry in history:
                info = entry.get("info") or {}
                created = (info.get("time") or {}).get("created") or 0
                if info.get("role") == "user" and created >= self._progress.posted_at_ms:
                    user_id = info.get("id")
        if user_id is None:
            return []
        self._progress.user_message_id = user_id
        return [
            entry
            for entry in history
            if (entry.get("info") or {}).get("role") == "assistant"
            and entry["info"].get("parentID") == user_id
        ]

    async def _fail(self, failure: TurnFailure, usage: dict[str, Any] | None = None) -> None:
        if self.canceled:
            return
        metadata = self._session_metadata(usage=usage, opencode=failure.metadata()["opencode"])
        await self.stream.status(failure.state, failure.message, metadata=metadata)

    def _session_ref(self) -> dict[str, str]:
        return {"id": self.session_id, "title": self.request.session_title}

    def _session_metadata(
        self, usage: dict[str, Any] | None = None, opencode: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        shared: dict[str, Any] = {"session": self._session_ref()}
        if usage is not None:
            shared["usage"] = usage
        metadata: dict[str, Any] = {"shared": shared}
        extra = dict(opencode or {})
        if self._progress.user_message_id:
            # The OpenCode message this task is, e.g. to revert exactly this turn.
            extra["message_id"] = self._progress.user_message_id
        if extra:
            metadata["opencode"] = extra
        return metadata


_DECLINED = {
    "permission": "The permission was declined, so OpenCode stopped the turn.",
    "question": "The question was dismissed, so OpenCode stopped the turn.",
    "expired": "Nobody answered OpenCode's ask in time (A2A_INTERRUPT_REQUEST_TTL_SECONDS), "
    "so it was declined and OpenCode stopped the turn.",
}


def _declines(kind: str, resolution: dict[str, Any]) -> bool:
    """A reject without feedback (or a dismissed question) ends OpenCode's turn."""
    if kind == "permission":
        return resolution.get("reply") == "reject" and not resolution.get("message")
    return bool(resolution.get("rejected"))


def _is_delta(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "message.part.delta"


def _same_part(first: dict[str, Any], second: dict[str, Any]) -> bool:
    a, b = first.get("properties") or {}, second.get("properties") or {}
    return (
        a.get("partID") == b.get("partID")
        and a.get("messageID") == b.get("messageID")
        and a.get("field") == b.get("field")
    )


def _part_done(part: dict[str, Any]) -> bool:
    """A text or reasoning part is whole once it has an end time; others as they come."""
    if part.get("type") not in ("text", "reasoning"):
        return True
    if part.get("synthetic") or part.get("ignored"):
        return True
    return bool((part.get("time") or {}).get("end"))


def _message_done(info: dict[str, Any]) -> bool:
    return bool((info.get("time") or {}).get("completed")) or bool(info.get("error"))


def _stored_failure(infos: list[dict[str, Any]]) -> TurnFailure | None:
    for info in reversed(infos):
        error = info.get("error")
        if isinstance(error, dict):
            return failure_from_session_error(error)
    return None


def _stored_aborted(infos: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(info.get("error"), dict) and info["error"].get("name") == "MessageAbortedError"
        for info in infos
    )
