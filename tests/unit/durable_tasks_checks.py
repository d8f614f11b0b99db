"""Checks of UpsertTaskStore shared by the SQLite unit test and the PostgreSQL e2e test."""

from __future__ import annotations

from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.tasks import DatabaseTaskStore
from a2a.types.a2a_pb2 import (
    Artifact,
    ListTasksRequest,
    Message,
    Part,
    Role,
    Task,
    TaskState,
    TaskStatus,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from opencode_a2a_server.handler import Principal as Caller
from opencode_a2a_server.store.durable_tasks import UpsertTaskStore


def sample_task(task_id: str, state: int = TaskState.TASK_STATE_WORKING) -> Task:
    task = Task(id=task_id, context_id="ctx-1", status=TaskStatus(state=state))
    task.status.timestamp.FromSeconds(1_790_000_000)
    task.artifacts.append(
        Artifact(artifact_id=f"{task_id}:response", name="response", parts=[Part(text="hé")])
    )
    task.history.append(Message(message_id="m-1", role=Role.ROLE_USER, parts=[Part(text="ping")]))
    task.metadata.update({"shared": {"session": {"id": "ses_1"}}})
    return task


async def rows(engine: AsyncEngine, store: DatabaseTaskStore) -> list[dict[str, Any]]:
    table: Any = store.task_model.__table__
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(table.c.id))
        return [dict(row._mapping) for row in result]


async def check_round_trip(ours: AsyncEngine, theirs: AsyncEngine) -> None:
    """Our upsert writes the rows the SDK's own save writes, and the SDK reads them back."""
    context = ServerCallContext(user=Caller("alice"))
    upsert = UpsertTaskStore(ours)
    reference = DatabaseTaskStore(theirs)
    await upsert.initialize()
    await reference.initialize()
    for store in (upsert, reference):
        await store.save(sample_task("t-1"), context)
        await store.save(sample_task("t-1", TaskState.TASK_STATE_COMPLETED), context)
        await store.save(sample_task("t-2"), context)
    assert await rows(ours, upsert) == await rows(theirs, reference)
    got = await upsert.get("t-1", context)
    assert got == sample_task("t-1", TaskState.TASK_STATE_COMPLETED)
    assert await upsert.get("t-1", ServerCallContext(user=Caller("bob"))) is None
    listed = await upsert.list(ListTasksRequest(), context)
    assert sorted(t.id for t in listed.tasks) == ["t-1", "t-2"]
