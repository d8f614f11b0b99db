"""A task store that writes at state changes, not once per streamed chunk.

The a2a-sdk saves the task after every event it processes; for a streamed answer that
is one write per token. This store keeps the live copy in memory and writes it when the
task's state changes (and at the latest `flush_interval` seconds after other changes),
so a long answer costs a handful of writes instead of thousands.

The SDK sends an event to clients only after `save` returns, so a state change is
written in the background, in order per task: the client does not wait for the
database. Readers in this process get the live copy until the write has landed, and
`settled(task_id)` waits for a task's final state to be durable (the executor keeps
the turn's lease until then, so a crash in between is recovered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks import TaskStore
from a2a.types.a2a_pb2 import ListTasksRequest, ListTasksResponse, Task, TaskState

from .gate import WriteGate
from .ids import FreshIds

log = logging.getLogger(__name__)

INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED
STATE_WRITE_DELAY = 0.005  # seconds


class _Entry:
    __slots__ = ("context", "dirty", "lock", "persisted_state", "task", "writer")

    def __init__(self, task: Task, context: ServerCallContext) -> None:
        self.task = task
        self.context = context
        self.persisted_state: int | None = None
        self.dirty = False
        self.lock = asyncio.Lock()  # one write at a time, so writes land in order
        self.writer: asyncio.Task[None] | None = None


class WriteBehindTaskStore(TaskStore):
    """Wraps a durable TaskStore; state changes are written at once, chunks lazily."""

    def __init__(
        self,
        inner: TaskStore,
        *,
        owner_resolver: OwnerResolver = resolve_user_scope,
        flush_interval: float = 1.0,
        gate: WriteGate | None = None,
    ) -> None:
        self._inner = inner
        self._gate = gate or WriteGate()
        self._owner = owner_resolver
        self._flush_interval = flush_interval
        self._live: dict[tuple[str, str], _Entry] = {}
        # Task ids made here for new tasks: nothing is stored under them before a save.
        self.fresh_ids = FreshIds()
        self._flusher: asyncio.Task[None] | None = None

    async def save(self, task: Task, context: ServerCallContext) -> None:
        key = (self._owner(context), task.id)
        entry = self._live.get(key)
        if entry is None:
            self.fresh_ids.used(task.id)
            entry = self._live[key] = _Entry(task, context)
        # The SDK updates one Task object in place for the whole request: keeping a
        # reference (and copying only when writing) avoids a full copy per chunk.
        entry.task = task
        entry.context = context
        entry.dirty = True
        if entry.persisted_state != task.status.state:
            if entry.writer is None or entry.writer.done():
                entry.writer = asyncio.create_task(self._write_states(key, entry))
        else:
            self._schedule_flush()

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        entry = self._live.get((self._owner(context), task_id))
        if entry is not None:
            copy = Task()
            copy.CopyFrom(entry.task)
            return copy
        if self.fresh_ids.is_fresh(task_id):
            return None  # a new task, not saved yet: the database cannot have it
        return await self._inner.get(task_id, context)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        await self.flush()
        return await self._inner.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        entry = self._live.pop((self._owner(context), task_id), None)
        if entry is not None and entry.writer is not None:
            await asyncio.gather(entry.writer, return_exceptions=True)
        await self._inner.delete(task_id, context)

    async def flush(self) -> None:
        """Write every pending change now."""
        for key, entry in list(self._live.items()):
            if entry.dirty:
                await self._write(key, entry)

    async def settle(self) -> None:
        """Wait for the state writes in flight."""
        writers = [e.writer for e in self._live.values() if e.writer and not e.writer.done()]
        await asyncio.gather(*writers, return_exceptions=True)

    async def settled(self, task_id: str, timeout: float = 5.0) -> bool:
        """Wait (up to `timeout`) until the task's last state is in the database."""
        deadline = time.monotonic() + timeout
        while any(key[1] == task_id for key in self._live):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.settle()
        await self.flush()

    async def _write_states(self, key: tuple[str, str], entry: _Entry) -> None:
        """Write while the task's state differs from the stored one (a later chunk in the
        same state is left to the lazy flush)."""
        # The event that brought the change goes to its clients first: the write's own
        # work on the event loop (SQLAlchemy) would otherwise run ahead of it.
        await asyncio.sleep(STATE_WRITE_DELAY)
        await self._gate.wait()  # and after any new turn's prompt (see store/gate.py)
        try:
            while entry.dirty and entry.task.status.state != entry.persisted_state:
                await self._write(key, entry)
        except Exception:
            log.exception("writing task %s failed; retrying with the next flush", key[1])
            entry.dirty = True
        if entry.dirty:
            self._schedule_flush()

    async def _write(self, key: tuple[str, str], entry: _Entry) -> None:
        async with entry.lock:
            if not entry.dirty:
                return  # a write that just finished took the latest content
            entry.dirty = False
            snapshot = Task()
            snapshot.CopyFrom(entry.task)
            try:
                await self._inner.save(snapshot, entry.context)
            except BaseException:
                entry.dirty = True
                raise
            entry.persisted_state = snapshot.status.state
            if _is_settled(snapshot.status.state) and not entry.dirty:
                # Nothing more comes from this turn until someone answers or resumes
                # it; readers get the stored copy, and a new save starts a new entry.
                if self._live.get(key) is entry:
                    del self._live[key]

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(), name="task-store-flush")

    async def _flush_later(self) -> None:
        # Loops: a change saved while a flush is writing must not wait for the next save.
        while True:
            await asyncio.sleep(self._flush_interval)
            await self._gate.wait()
            try:
                await self.flush()
            except Exception:
                log.exception("writing buffered task updates failed")
            if not any(entry.dirty for entry in self._live.values()):
                return


def _is_settled(state: int) -> bool:
    """Terminal, or waiting for the client (input or auth required)."""
    from ..execution.stream import FINAL_STATES  # terminal states and auth-required

    return state in FINAL_STATES or state == INPUT_REQUIRED
