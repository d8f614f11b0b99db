"""Pending permission and question asks, durable so they can be answered after a restart."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, Text, and_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()

interrupts = Table(
    "interrupts",
    metadata,
    Column("request_id", String(255), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("owner", String(255), nullable=False, index=True),
    Column("task_id", String(255), nullable=False, index=True),
    Column("context_id", String(255), nullable=False),
    Column("session_id", String(255), nullable=False),
    Column("directory", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("resolution", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

PENDING = "pending"
RESOLVING = "resolving"
RESOLVED = "resolved"
EXPIRED = "expired"


@dataclass
class Ask:
    """One permission or question OpenCode is waiting on."""

    request_id: str
    kind: str  # "permission" | "question"
    owner: str
    task_id: str
    context_id: str
    session_id: str
    directory: str
    details: dict[str, Any]
    created_at: float
    expires_at: float
    status: str = PENDING
    resolution: dict[str, Any] | None = field(default=None)

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


class InterruptStore:
    """Rows of asks; state changes are compare-and-set so an ask is answered once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._ready = False

    async def initialize(self) -> None:
        """Make sure the schema is current (the app does this at startup too)."""
        if not self._ready:
            from .migrations import upgrade

            await upgrade(self._engine)
            self._ready = True

    async def add(self, ask: Ask) -> None:
        await self.initialize()
        async with self._engine.begin() as conn:
            existing = await conn.execute(
                select(interrupts.c.request_id).where(interrupts.c.request_id == ask.request_id)
            )
            if existing.first() is not None:
                return
            await conn.execute(interrupts.insert().values(**_row(ask)))

    async def get(self, request_id: str) -> Ask | None:
        await self.initialize()
        query = select(interrupts).where(interrupts.c.request_id == request_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _ask(row) if row else None

    async def pending(
        self, *, owner: str | None = None, kind: str | None = None, task_id: str | None = None
    ) -> list[Ask]:
        await self.initialize()
        clauses: list[ColumnElement[bool]] = [interrupts.c.status.in_((PENDING, RESOLVING))]
        if owner is not None:
            clauses.append(interrupts.c.owner == owner)
        if kind is not None:
            clauses.append(interrupts.c.kind == kind)
        if task_id is not None:
            clauses.append(interrupts.c.task_id == task_id)
        query = select(interrupts).where(and_(*clauses)).order_by(interrupts.c.created_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_ask(row) for row in rows]

    async def transition(
        self,
        request_id: str,
        from_status: str,
        to_status: str,
        resolution: dict[str, Any] | None = None,
    ) -> bool:
        """Move an ask between states; False if it was not in `from_status` (lost a race)."""
        await self.initialize()
        values: dict[str, Any] = {"status": to_status}
        if resolution is not None:
            values["resolution"] = json.dumps(resolution)
        statement = (
            update(interrupts)
            .where(interrupts.c.request_id == request_id, interrupts.c.status == from_status)
            .values(**values)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def purge(self, older_than: float) -> None:
        """Forget asks whose expiry is before `older_than` (past the tombstone window)."""
        await self.initialize()
        async with self._engine.begin() as conn:
            await conn.execute(interrupts.delete().where(interrupts.c.expires_at < older_than))


def _row(ask: Ask) -> dict[str, Any]:
    return {
        "request_id": ask.request_id,
        "kind": ask.kind,
        "owner": ask.owner,
        "task_id": ask.task_id,
        "context_id": ask.context_id,
        "session_id": ask.session_id,
        "directory": ask.directory,
        "details": json.dumps(ask.details),
        "status": ask.status,
        "resolution": json.dumps(ask.resolution) if ask.resolution is not None else None,
        "created_at": ask.created_at,
        "expires_at": ask.expires_at,
    }


def _ask(row: Any) -> Ask:
    return Ask(
        request_id=row["request_id"],
        kind=row["kind"],
        owner=row["owner"],
        task_id=row["task_id"],
        context_id=row["context_id"],
        session_id=row["session_id"],
        directory=row["directory"],
        details=json.loads(row["details"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        resolution=json.loads(row["resolution"]) if row["resolution"] else None,
    )
