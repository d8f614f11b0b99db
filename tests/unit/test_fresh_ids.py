"""FreshIds: ids made here for requests that named none skip the database lookups."""

from __future__ import annotations

from a2a.auth.user import UnauthenticatedUser
from a2a.server.context import ServerCallContext
from a2a.server.id_generator import IDGeneratorContext
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import Task, TaskState, TaskStatus

from opencode_a2a_server.store.ids import FreshIds
from opencode_a2a_server.store.tasks import WriteBehindTaskStore


def test_a_made_up_id_is_fresh_until_used_and_a_client_id_never():
    ids = FreshIds()
    made = ids.generate(IDGeneratorContext())
    assert ids.is_fresh(made) and not ids.is_fresh("named-by-the-client")
    assert ids.used("named-by-the-client") is False
    assert ids.used(made) is True
    assert ids.used(made) is False, "a second message in that context may have a binding"
    assert not ids.is_fresh(made)


def test_only_the_most_recent_ids_are_remembered():
    ids = FreshIds(remember=2)
    first, second, third = (ids.generate(IDGeneratorContext()) for _ in range(3))
    assert not ids.is_fresh(first)  # forgotten: callers fall back to the lookup
    assert ids.is_fresh(second) and ids.is_fresh(third)


class GetCounting(InMemoryTaskStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, task_id, context=None):  # type: ignore[no-untyped-def]
        self.gets += 1
        return await super().get(task_id, context)


async def test_the_store_answers_for_a_new_task_without_the_database():
    inner = GetCounting()
    store = WriteBehindTaskStore(inner, flush_interval=60)
    context = ServerCallContext(user=UnauthenticatedUser())
    try:
        task_id = store.fresh_ids.generate(IDGeneratorContext())
        assert await store.get(task_id, context) is None
        assert inner.gets == 0
        done = Task(
            id=task_id, context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED)
        )
        await store.save(done, context)
        assert await store.settled(task_id)
        got = await store.get(task_id, context)  # stored now: read from the database
        assert got is not None and got.status.state == TaskState.TASK_STATE_COMPLETED
        assert inner.gets == 1
        assert await store.get("a-client-id", context) is None
        assert inner.gets == 2
    finally:
        await store.aclose()
