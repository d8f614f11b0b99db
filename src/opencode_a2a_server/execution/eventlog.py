"""A bounded per-task log of published events, for resubscribe with Last-Event-ID.

Every event a turn publishes carries `metadata.shared.stream.sequence`; streamed SSE
frames use it as their `id`. A client that reconnects with `Last-Event-ID` gets the
events it missed from this log, then live events.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from typing import Any

from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import TaskArtifactUpdateEvent, TaskStatusUpdateEvent
from google.protobuf import json_format

LoggedEvent = TaskStatusUpdateEvent | TaskArtifactUpdateEvent

# In a serialized frame the stream metadata comes last, after any parts, so the last
# `"sequence": N` is the event's own.
_SEQUENCE = re.compile(r'"sequence":\s*(\d+)(?:\.0)?')
# A whole-Task frame (the snapshot a stream starts with) is not a numbered event.
_TASK_FRAME = re.compile(r'"task":\s*\{|"kind":\s*"task"')


def sequence_in_json(data: str) -> int | None:
    """The event sequence of one serialized SSE frame, if it is a numbered event."""
    if _TASK_FRAME.search(data):
        return None
    found = _SEQUENCE.findall(data)
    return int(found[-1]) if found else None


def sequence_of(event: Any) -> int | None:
    """The sequence of a status or artifact update (from its stream metadata)."""
    if isinstance(event, TaskArtifactUpdateEvent):
        meta = event.artifact.metadata
    elif isinstance(event, TaskStatusUpdateEvent):
        meta = event.metadata
    else:
        return None
    stream = json_format.MessageToDict(meta).get("shared", {}).get("stream", {})
    value = stream.get("sequence")
    return int(value) if isinstance(value, int | float) else None


class _TaskLog:
    __slots__ = ("events", "finished_at")

    def __init__(self, size: int) -> None:
        self.events: deque[tuple[int, LoggedEvent]] = deque(maxlen=size)
        self.finished_at: float | None = None


class EventLog:
    """The last `size` events of each running task.

    A resubscribe to a finished task is answered with its stored snapshot, so a task's
    log is kept only `retention` seconds after its turn ends (for a reconnect racing
    the end), and never for more than `max_tasks` tasks.
    """

    def __init__(self, size: int = 500, retention: float = 10.0, max_tasks: int = 2000) -> None:
        self.size = size
        self.retention = retention
        self.max_tasks = max_tasks
        self._tasks: OrderedDict[str, _TaskLog] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tasks)

    def record(self, task_id: str, sequence: int, event: LoggedEvent) -> None:
        log = self._tasks.get(task_id)
        if log is None:
            self._prune()
            log = self._tasks[task_id] = _TaskLog(self.size)
        log.events.append((sequence, event))

    def finish(self, task_id: str) -> None:
        log = self._tasks.get(task_id)
        if log is not None:
            log.finished_at = time.monotonic()
        self._prune()

    def since(self, task_id: str, sequence: int) -> list[tuple[int, LoggedEvent]]:
        """Logged events after `sequence`, oldest first."""
        log = self._tasks.get(task_id)
        if log is None:
            return []
        return [(seq, event) for seq, event in log.events if seq > sequence]

    def _prune(self) -> None:
        """Drop expired logs, then the oldest finished ones, then the oldest, to fit."""
        now = time.monotonic()
        for task_id, log in list(self._tasks.items()):
            if log.finished_at is not None and now - log.finished_at > self.retention:
                del self._tasks[task_id]
        excess = len(self._tasks) - self.max_tasks + 1
        if excess <= 0:
            return
        finished = [t for t, log in self._tasks.items() if log.finished_at is not None]
        for task_id in list(dict.fromkeys(finished + list(self._tasks)))[:excess]:
            del self._tasks[task_id]


class RecordingQueue:
    """An EventQueue front that logs every sequenced event before passing it on."""

    def __init__(self, queue: EventQueue, log: EventLog, task_id: str) -> None:
        self._queue = queue
        self._log = log
        self._task_id = task_id

    async def enqueue_event(self, event: Any) -> None:
        sequence = sequence_of(event)
        if sequence is not None:
            self._log.record(self._task_id, sequence, event)
        await self._queue.enqueue_event(event)
