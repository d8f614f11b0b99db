"""A task store that writes at state changes, not once per streamed chunk.

The a2a-sdk saves the task after every event it processes; for a streamed answer that
is one write per token. This store keeps the live copy in memory and writes it through
when the task's state changes (and at the latest `flush_interval` seconds after other
changes), so a long answer costs a handful of writes instead of thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks import TaskStore
from a2a.types.a2a_pb2 import ListTasksRequest, ListTasksResponse, Task

log = logging.getLogger(__name__)


class _Entry:
    __slots__ = ("context", "dirty", "persisted_state", "task")

    def __init__(self, task: Task, context: ServerCallContext) -> None:
        self.task = task
        self.context = context
        self.persisted_state: int | None = None
        self.dirty = False


class WriteBehindTaskStore(TaskStore):
    """Wraps a durable TaskStore; state changes are written at once, chunks lazily."""

    def __init__(
        self,
        inner: TaskStore,
        *,
        owner_resolver: OwnerResolver = resolve_user_scope,
        flush_interval: float = 1.0,
    ) -> None:
        self._inner = inner
        self._owner = owner_resolver
        self._flush_interval = flush_interval
        self._live: dict[tuple[str, str], _Entry] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def save(self, task: Task, context: ServerCallContext) -> None:
        key = (self._owner(context), task.id)
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = _Entry(task, context)
        # The SDK updates one Task object in place for the whole request: keeping a
        # reference (and copying only when writing) avoids a full copy per chunk.
        entry.task = task
        entry.context = context
        if entry.persisted_state != task.status.state:
            await self._write(key, entry)
        else:
            entry.dirty = True
            self._schedule_flush()

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        entry = self._live.get((self._owner(context), task_id))
        if entry is not None:
            copy = Task()
            copy.CopyFrom(entry.task)
            return copy
        return await self._inner.get(task_id, context)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        await self.flush()
        return await self._inner.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        self._live.pop((self._owner(context), task_id), None)
        await self._inner.delete(task_id, context)

    async def flush(self) -> None:
        """Write every pending change now."""
        for key, entry in list(self._live.items()):
            if entry.dirty:
                await self._write(key, entry)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    async def _write(self, key: tuple[str, str], entry: _Entry) -> None:
        entry.dirty = False
        snapshot = Task()
        snapshot.CopyFrom(entry.task)
        await self._inner.save(snapshot, entry.context)
        entry.persisted_state = snapshot.status.state
        if _is_final(snapshot.status.state) and not entry.dirty:
            self._live.pop(key, None)

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(), name="task-store-flush")

    async def _flush_later(self) -> None:
        # Loops: a change saved while a flush is writing must not wait for the next save.
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("writing buffered task updates failed")
            if not any(entry.dirty for entry in self._live.values()):
                return


def _is_final(state: int) -> bool:
    from ..execution.stream import TERMINAL_STATES

    return state in TERMINAL_STATES
