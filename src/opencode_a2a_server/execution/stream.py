"""TaskStream: publishes one task's A2A events, numbered, and never after a terminal state."""

from __future__ import annotations

import asyncio
from typing import Any

from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import Part, Role, Task, TaskState
from google.protobuf import json_format

from .mapping import to_struct

TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)
# States after which this turn publishes nothing more (input-required pauses, not ends).
FINAL_STATES = TERMINAL_STATES | {TaskState.TASK_STATE_AUTH_REQUIRED}

BLOCK_ARTIFACTS = {
    "text": ("response", "response"),
    "reasoning": ("reasoning", "reasoning"),
}


class TaskStream:
    """The A2A side of one turn: artifact chunks and status updates for one task."""

    def __init__(self, queue: EventQueue, task_id: str, context_id: str) -> None:
        self.task_id = task_id
        self.context_id = context_id
        self._updater = TaskUpdater(queue, task_id, context_id)
        self._sequence = 0
        self._started: set[str] = set()
        self._names: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.final_state: int | None = None
        self.stored_state: int | None = None  # the state a resumed task was stored in

    def continue_after(self, task: Task) -> None:
        """Pick up numbering and artifacts from a stored task (after a restart)."""
        self.stored_state = task.status.state
        for artifact in task.artifacts:
            self._started.add(artifact.artifact_id)
            meta = json_format.MessageToDict(artifact.metadata)
            sequence = meta.get("shared", {}).get("stream", {}).get("sequence")
            if isinstance(sequence, int | float):
                self._sequence = max(self._sequence, int(sequence))

    @property
    def closed(self) -> bool:
        return self.final_state is not None

    def artifact_id(self, block: str, suffix: str = "") -> str:
        base = BLOCK_ARTIFACTS[block][0] if block in BLOCK_ARTIFACTS else block
        return f"{self.task_id}:{base}{suffix}"

    def _stream_meta(self, block: str, message_id: str | None, **extra: Any) -> dict[str, Any]:
        self._sequence += 1
        meta: dict[str, Any] = {
            "block_type": block,
            "message_id": message_id or f"{self.task_id}:assistant",
            "event_id": f"{self.task_id}:stream:{self._sequence}",
            "sequence": self._sequence,
        }
        meta.update(extra)
        return {"shared": {"stream": meta}}

    async def text_chunk(self, block: str, text: str, message_id: str | None) -> None:
        """Stream a delta of the text or reasoning block (appended to what came before)."""
        async with self._lock:
            if self.closed or not text:
                return
            artifact_id = self.artifact_id(block)
            append = artifact_id in self._started
            self._started.add(artifact_id)
            self._names[artifact_id] = BLOCK_ARTIFACTS[block][1]
            await self._updater.add_artifact(
                [Part(text=text)],
                artifact_id=artifact_id,
                name=BLOCK_ARTIFACTS[block][1],
                metadata=self._stream_meta(block, message_id, source="stream"),
                append=append,
            )

    async def text_snapshot(self, block: str, text: str, message_id: str | None) -> None:
        """Replace a text or reasoning block with its complete, final content."""
        async with self._lock:
            if self.closed:
                return
            artifact_id = self.artifact_id(block)
            self._started.add(artifact_id)
            self._names[artifact_id] = BLOCK_ARTIFACTS[block][1]
            await self._updater.add_artifact(
                [Part(text=text)],
                artifact_id=artifact_id,
                name=BLOCK_ARTIFACTS[block][1],
                metadata=self._stream_meta(block, message_id, source="final_snapshot"),
                append=False,
                last_chunk=True,
            )

    async def tool_call(self, part_id: str, data: dict[str, Any], message_id: str | None) -> None:
        """Publish the whole current state of one tool call (replacing the previous one)."""
        async with self._lock:
            if self.closed:
                return
            self._names[f"{self.task_id}:tool:{part_id}"] = "tool_call"
            await self._updater.add_artifact(
                [Part(data=_value(data), media_type="application/json")],
                artifact_id=f"{self.task_id}:tool:{part_id}",
                name="tool_call",
                metadata=self._stream_meta("tool_call", message_id, source="tool_part_update"),
                append=False,
                last_chunk=data.get("status") in ("completed", "error"),
            )

    async def artifact(self, artifact_id: str, name: str, parts: list[Part]) -> None:
        """Publish a whole artifact at once (`append: false`, `lastChunk: true`)."""
        async with self._lock:
            if self.closed:
                return
            self._names[artifact_id] = name
            await self._updater.add_artifact(
                parts, artifact_id=artifact_id, name=name, append=False, last_chunk=True
            )

    async def status(
        self,
        state: int,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> bool:
        """Publish a status; returns False if the task had already reached a final state.

        `text` (and `data`, as a JSON data part) become the status's agent message.
        """
        async with self._lock:
            if self.closed:
                return False
            message = None
            parts = [Part(text=text)] if text else []
            if data is not None:
                parts.append(Part(data=_value(data), media_type="application/json"))
            if parts:
                message = self._updater.new_agent_message(parts)
                message.role = Role.ROLE_AGENT
            if state in FINAL_STATES:
                self.final_state = state
            stream = self._stream_meta("status", None, source="status")["shared"]["stream"]
            stream.pop("block_type")
            stream.pop("message_id")
            metadata = dict(metadata or {})
            metadata["shared"] = {**metadata.get("shared", {}), "stream": stream}
            if state in TERMINAL_STATES and self._names:
                # What the finished task holds, for push receivers and stream clients.
                artifacts = [{"artifact_id": a, "name": n} for a, n in self._names.items()]
                metadata["opencode"] = {**metadata.get("opencode", {}), "artifacts": artifacts}
            await self._updater.update_status(state, message=message, metadata=metadata)  # type: ignore[arg-type]
            return True


def _value(data: dict[str, Any]) -> Any:
    from google.protobuf.struct_pb2 import Value

    value = Value()
    value.struct_value.CopyFrom(to_struct(data))
    return value
