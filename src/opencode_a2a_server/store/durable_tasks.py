"""The durable task table, written with one upsert statement per save.

The a2a-sdk's DatabaseTaskStore saves through the ORM (`session.merge`: a SELECT, then
an INSERT or UPDATE, with unit-of-work bookkeeping around both). A turn saves its task
two or three times, and that ORM work was the largest single part of the adapter's CPU
per turn. This store writes the same rows (same table, same JSON columns, so the SDK's
own reads and listings are unchanged) with a single INSERT … ON CONFLICT DO UPDATE on
SQLite and PostgreSQL, and falls back to the SDK's save on any other database.
"""

from __future__ import annotations

from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.tasks import DatabaseTaskStore
from a2a.types.a2a_pb2 import Task
from google.protobuf.json_format import MessageToDict

from .database import upsert_statement


class UpsertTaskStore(DatabaseTaskStore):
    """DatabaseTaskStore whose `save` is one upsert (reads are the SDK's own)."""

    _upsert: Any = None

    async def save(self, task: Task, context: ServerCallContext) -> None:
        statement = self._upsert_statement()
        if statement is None:
            await super().save(task, context)
            return
        await self._ensure_initialized()
        row = task_row(task, self.owner_resolver(context))
        async with self.engine.begin() as conn:
            await conn.execute(statement, row)

    def _upsert_statement(self) -> Any:
        """Built once: the statement's construction costs more than its execution."""
        if self._upsert is None and self.core_to_model_conversion is None:
            table: Any = self.task_model.__table__
            self._upsert = upsert_statement(self.engine, table, ["id"])
        return self._upsert


def task_row(task: Task, owner: str) -> dict[str, Any]:
    """The task's row, column by column, as the SDK's store writes it (protocol 1.0)."""
    return {
        "id": task.id,
        "context_id": task.context_id,
        "kind": "task",
        "owner": owner,
        "last_updated": (
            task.status.timestamp.ToDatetime() if task.status.HasField("timestamp") else None
        ),
        "status": MessageToDict(task.status),
        "artifacts": [MessageToDict(artifact) for artifact in task.artifacts],
        "history": [MessageToDict(message) for message in task.history],
        "metadata": MessageToDict(task.metadata) if task.metadata.fields else None,
        "protocol_version": "1.0",
    }
