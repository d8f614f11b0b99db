"""Turn leases: which process drives each running turn.

A lease lives from a turn's prompt to its end. A process refreshes the heartbeat of
its leases; a restarted process adopts the leases it held before, and any process
adopts leases whose heartbeat went stale, so no task is left `working`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from .database import upsert_statement

metadata = MetaData()

turn_leases = Table(
    "turn_leases",
    metadata,
    Column("task_id", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("context_id", String(255), nullable=False),
    Column("session_id", String(255), nullable=False),
    Column("directory", Text, nullable=False),
    Column("user_message_id", String(255), nullable=True),
    Column("posted_at_ms", Float, nullable=False),
    Column("replica", String(255), nullable=False),
    Column("heartbeat", Float, nullable=False),
)


# Every turn takes, notes and releases its lease: built once, executed with parameters.
_DROP = delete(turn_leases).where(turn_leases.c.task_id == bindparam("key_task"))
_TAKE = turn_leases.insert()
_NOTE = (
    update(turn_leases)
    .where(turn_leases.c.task_id == bindparam("key_task"))
    .values(user_message_id=bindparam("message_id"))
)


@dataclass(frozen=True)
class Lease:
    task_id: str
    owner: str
    context_id: str
    session_id: str
    directory: str
    user_message_id: str | None
    posted_at_ms: float
    replica: str
    heartbeat: float


class LeaseStore:
    def __init__(self, engine: AsyncEngine, replica: str) -> None:
        self._engine = engine
        self.replica = replica
        # One statement instead of delete + insert (None on a database without it).
        self._take = upsert_statement(engine, turn_leases, ["task_id"])

    async def take(self, lease: Lease) -> None:
        row = {**lease.__dict__, "replica": self.replica, "heartbeat": time.time()}
        async with self._engine.begin() as conn:
            if self._take is not None:
                await conn.execute(self._take, row)
                return
            await conn.execute(_DROP, {"key_task": lease.task_id})
            await conn.execute(_TAKE, row)

    async def note_message(self, task_id: str, user_message_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(_NOTE, {"key_task": task_id, "message_id": user_message_id})

    async def release(self, task_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(_DROP, {"key_task": task_id})

    async def hand_off(self, task_id: str) -> None:
        """Leave a turn this process stops driving to the next one (shutdown).

        The heartbeat goes to 0, so the lease reads as stale at once: a restarted
        process, or any other replica at its next lease check, adopts it without
        waiting for the stale timeout. The replica name changes too, so this process's
        own heartbeat no longer refreshes it.
        """
        async with self._engine.begin() as conn:
            await conn.execute(
                update(turn_leases)
                .where(turn_leases.c.task_id == task_id, turn_leases.c.replica == self.replica)
                .values(heartbeat=0.0, replica=f"handed-off:{self.replica}")
            )

    async def holder(self, task_id: str) -> Lease | None:
        """The lease on a task's turn, if any process holds one."""
        query = select(turn_leases).where(turn_leases.c.task_id == task_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return Lease(**{k: row[k] for k in Lease.__dataclass_fields__}) if row else None

    async def heartbeat(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(turn_leases)
                .where(turn_leases.c.replica == self.replica)
                .values(heartbeat=time.time())
            )

    async def adopt(self, stale_after: float, *, own: bool) -> list[Lease]:
        """Claim every stale lease (and, at startup, this replica's old ones)."""
        cutoff = time.time() - stale_after
        condition = turn_leases.c.heartbeat < cutoff
        if own:
            condition = or_(turn_leases.c.replica == self.replica, condition)
        async with self._engine.begin() as conn:
            rows = (await conn.execute(select(turn_leases).where(condition))).mappings().all()
            adopted = []
            for row in rows:
                claimed = await conn.execute(
                    update(turn_leases)
                    .where(
                        turn_leases.c.task_id == row["task_id"],
                        turn_leases.c.heartbeat == row["heartbeat"],
                        turn_leases.c.replica == row["replica"],
                    )
                    .values(replica=self.replica, heartbeat=time.time())
                )
                if claimed.rowcount:
                    adopted.append(Lease(**{k: row[k] for k in Lease.__dataclass_fields__}))
        return adopted
