"""WriteBehindTaskStore: state changes are written at once (in the background), chunks lazily."""

from __future__ import annotations

import asyncio

import pytest
from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import (
    Artifact,
    ListTasksRequest,
    Part,
    Task,
    TaskState,
    TaskStatus,
)

from opencode_a2a_server.handler import Principal as NamedUser
from opencode_a2a_server.store.gate import WriteGate
from opencode_a2a_server.store.tasks import WriteBehindTaskStore


class CountingStore(InMemoryTaskStore):
    """The durable store underneath: records every save it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[Task] = []

    async def save(self, task: Task, context: ServerCallContext) -> None:
        copy = Task()
        copy.CopyFrom(task)
        self.saved.append(copy)
        await super().save(task, context)

    def states(self) -> list[str]:
        return [TaskState.Name(t.status.state) for t in self.saved]


CONTEXT = ServerCallContext(user=NamedUser("alice"))


def task(state: int = TaskState.TASK_STATE_WORKING, text: str = "", task_id: str = "t1") -> Task:
    result = Task(id=task_id, context_id="c1", status=TaskStatus(state=state))
    if text:
        result.artifacts.append(Artifact(artifact_id="t1:response", parts=[Part(text=text)]))
    return result


def text_of(stored: Task | None) -> str:
    assert stored is not None
    return stored.artifacts[0].parts[0].text if stored.artifacts else ""


@pytest.fixture
def inner() -> CountingStore:
    return CountingStore()


@pytest.fixture
async def store(inner):
    store = WriteBehindTaskStore(inner, flush_interval=60)  # flushes only when asked
    yield store
    await store.aclose()


async def test_the_first_save_is_written_through(store, inner):
    await store.save(task(TaskState.TASK_STATE_SUBMITTED), CONTEXT)
    await store.settle()
    assert inner.states() == ["TASK_STATE_SUBMITTED"]


async def test_many_saves_in_one_state_are_buffered_until_flush(store, inner):
    await store.save(task(), CONTEXT)
    await store.settle()
    streamed = ""
    for i in range(200):
        streamed += f"w{i} "
        await store.save(task(text=streamed), CONTEXT)
    await store.settle()
    assert len(inner.saved) == 1, "chunks in the same state are not written one by one"
    assert text_of(await inner.get("t1", CONTEXT)) == ""

    await store.flush()
    assert len(inner.saved) == 2
    assert text_of(await inner.get("t1", CONTEXT)) == streamed

    await store.flush()  # nothing pending: no write
    assert len(inner.saved) == 2


async def test_buffered_changes_are_flushed_later_on_their_own(inner):
    store = WriteBehindTaskStore(inner, flush_interval=0.02)
    try:
        await store.save(task(), CONTEXT)
        await store.settle()
        for i in range(20):
            await store.save(task(text="x" * (i + 1)), CONTEXT)
        assert len(inner.saved) == 1
        for _ in range(100):
            if len(inner.saved) > 1:
                break
            await asyncio.sleep(0.01)
        assert len(inner.saved) == 2, "one lazy write for all twenty chunks"
        assert text_of(await inner.get("t1", CONTEXT)) == "x" * 20
    finally:
        await store.aclose()


async def test_a_state_change_is_written_at_once_with_the_latest_content(store, inner):
    await store.save(task(), CONTEXT)
    await store.settle()
    await store.save(task(text="partial"), CONTEXT)
    await store.save(task(TaskState.TASK_STATE_INPUT_REQUIRED, text="partial answer"), CONTEXT)
    await store.settle()
    assert inner.states() == ["TASK_STATE_WORKING", "TASK_STATE_INPUT_REQUIRED"]
    assert text_of(await inner.get("t1", CONTEXT)) == "partial answer"
    assert store._live == {}, "a task waiting for input is read from the database"
    # Back to working is a state change again.
    await store.save(task(text="partial answer"), CONTEXT)
    await store.settle()
    assert inner.states()[-1] == "TASK_STATE_WORKING"


async def test_states_that_pass_before_a_write_starts_are_written_as_the_latest(store, inner):
    await store.save(task(), CONTEXT)
    await store.save(task(TaskState.TASK_STATE_INPUT_REQUIRED, text="ask"), CONTEXT)
    await store.settle()
    assert inner.states() == ["TASK_STATE_INPUT_REQUIRED"]


async def test_get_returns_the_latest_in_memory_copy(store, inner):
    await store.save(task(), CONTEXT)
    await store.settle()
    await store.save(task(text="newest"), CONTEXT)
    assert text_of(await inner.get("t1", CONTEXT)) == ""
    got = await store.get("t1", CONTEXT)
    assert text_of(got) == "newest"
    # A copy: changing it does not change the store.
    got.artifacts[0].parts[0].text = "tampered"
    assert text_of(await store.get("t1", CONTEXT)) == "newest"


async def test_the_durable_copy_is_not_changed_by_the_caller(store, inner):
    # The live entry follows the caller's object (the SDK updates one Task in place;
    # copying it on every chunk would cost a full copy per chunk), but what is written
    # is a copy: later changes reach the database only when saved again.
    original = task(text="one")
    await store.save(original, CONTEXT)
    await store.settle()
    original.artifacts[0].parts[0].text = "changed by the caller"
    assert text_of(await inner.get("t1", CONTEXT)) == "one"
    copy = await store.get("t1", CONTEXT)
    copy.artifacts[0].parts[0].text = "changed by a reader"
    assert text_of(await store.get("t1", CONTEXT)) == "changed by the caller"


async def test_get_falls_back_to_the_inner_store(store, inner):
    await inner.save(task(TaskState.TASK_STATE_COMPLETED, text="old", task_id="t9"), CONTEXT)
    assert (await store.get("t9", CONTEXT)).status.state == TaskState.TASK_STATE_COMPLETED
    assert await store.get("missing", CONTEXT) is None


@pytest.mark.parametrize(
    "final",
    [
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    ],
)
async def test_a_terminal_state_is_persisted_and_released(store, inner, final):
    await store.save(task(), CONTEXT)
    await store.save(task(text="full answer"), CONTEXT)
    await store.save(task(final, text="full answer"), CONTEXT)
    assert await store.settled("t1")
    stored = await inner.get("t1", CONTEXT)
    assert stored.status.state == final
    assert text_of(stored) == "full answer"
    assert store._live == {}, "finished tasks are not kept in memory"
    assert (await store.get("t1", CONTEXT)).status.state == final


async def test_tasks_are_kept_apart_per_owner(store, inner):
    bob = ServerCallContext(user=NamedUser("bob"))
    await store.save(task(text="alice's"), CONTEXT)
    await store.save(task(text="bob's"), bob)
    assert text_of(await store.get("t1", CONTEXT)) == "alice's"
    assert text_of(await store.get("t1", bob)) == "bob's"
    await store.settle()
    assert len(inner.saved) == 2


async def test_list_flushes_first(store, inner):
    await store.save(task(), CONTEXT)
    await store.save(task(text="latest"), CONTEXT)
    response = await store.list(ListTasksRequest(), CONTEXT)
    assert [text_of(t) for t in response.tasks] == ["latest"]


async def test_delete_removes_both_copies(store, inner):
    await store.save(task(), CONTEXT)
    await store.save(task(text="pending"), CONTEXT)
    await store.delete("t1", CONTEXT)
    assert await store.get("t1", CONTEXT) is None
    await store.flush()
    assert await inner.get("t1", CONTEXT) is None


async def test_aclose_writes_pending_changes(inner):
    store = WriteBehindTaskStore(inner, flush_interval=60)
    await store.save(task(), CONTEXT)
    await store.save(task(text="last words"), CONTEXT)
    await store.aclose()
    assert text_of(await inner.get("t1", CONTEXT)) == "last words"
    assert store._flusher is None or store._flusher.done()


class SlowStore(CountingStore):
    """An inner store whose writes take a while (a real database round trip)."""

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await asyncio.sleep(0.05)
        await super().save(task, context)


async def test_a_change_saved_during_a_lazy_flush_is_flushed_too():
    inner = SlowStore()
    store = WriteBehindTaskStore(inner, flush_interval=0.01)
    try:
        await store.save(task(), CONTEXT)
        await store.settle()
        await store.save(task(text="one"), CONTEXT)
        await asyncio.sleep(0.03)  # the lazy flush is now inside the slow inner save
        await store.save(task(text="one two"), CONTEXT)
        await asyncio.sleep(0.3)  # many flush intervals later
        assert text_of(await inner.get("t1", CONTEXT)) == "one two"
    finally:
        await store.aclose()


async def test_the_client_does_not_wait_for_a_state_write_but_readers_see_it():
    inner = SlowStore()
    store = WriteBehindTaskStore(inner, flush_interval=60)
    try:
        await asyncio.wait_for(store.save(task(), CONTEXT), 0.01)  # the write takes 50 ms
        await store.save(task(TaskState.TASK_STATE_COMPLETED, text="done"), CONTEXT)
        assert inner.saved == []
        got = await store.get("t1", CONTEXT)
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        assert await store.settled("t1")
        # In order: the final state is the one that stays.
        assert inner.states()[-1] == "TASK_STATE_COMPLETED"
        assert (await inner.get("t1", CONTEXT)).status.state == TaskState.TASK_STATE_COMPLETED
    finally:
        await store.aclose()


class FailingOnceStore(CountingStore):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def save(self, task: Task, context: ServerCallContext) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        await super().save(task, context)


async def test_a_failed_state_write_is_retried_by_the_flush():
    inner = FailingOnceStore()
    store = WriteBehindTaskStore(inner, flush_interval=0.01)
    try:
        await store.save(task(TaskState.TASK_STATE_COMPLETED, text="kept"), CONTEXT)
        assert await store.settled("t1", timeout=2)
        assert text_of(await inner.get("t1", CONTEXT)) == "kept"
    finally:
        await store.aclose()


async def test_settled_gives_up_after_its_timeout(store):
    await store.save(task(), CONTEXT)  # still working: never final
    assert await store.settled("t1", timeout=0.05) is False


async def test_state_writes_wait_while_a_new_turn_holds_the_gate() -> None:
    gate = WriteGate(max_wait=5.0)
    inner = CountingStore()
    store = WriteBehindTaskStore(inner, gate=gate)
    hold = gate.hold()
    await store.save(task(TaskState.TASK_STATE_WORKING), CONTEXT)
    await asyncio.sleep(0.05)
    assert inner.saved == []  # the prompt is not out yet
    hold.release()
    await store.settle()
    assert inner.states() == ["TASK_STATE_WORKING"]


async def test_state_writes_go_ahead_after_the_gates_longest_wait() -> None:
    gate = WriteGate(max_wait=0.05)
    inner = CountingStore()
    store = WriteBehindTaskStore(inner, gate=gate)
    hold = gate.hold()  # never released in time: writes must not starve
    await store.save(task(TaskState.TASK_STATE_COMPLETED), CONTEXT)
    await store.settle()
    assert inner.states() == ["TASK_STATE_COMPLETED"]
    hold.release()
