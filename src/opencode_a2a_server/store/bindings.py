"""Which OpenCode session serves which (caller, contextId), and who owns each session."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Column, Float, MetaData, String, Table, Text, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .database import upsert_statement

metadata = MetaData()

session_bindings = Table(
    "session_bindings",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("context_id", Text, primary_key=True),
    Column("session_id", String(255), nullable=False),
    Column("directory", String(4096), nullable=False),
    Column("created_at", Float, nullable=False),
)

session_owners = Table(
    "session_owners",
    metadata,
    Column("session_id", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("title", String(255), nullable=False, default=""),
)


# Every turn on a new context runs these: built once, executed with parameters (their
# construction cost more CPU than their execution).
_UNBIND = session_bindings.delete().where(
    session_bindings.c.owner == bindparam("key_owner"),
    session_bindings.c.context_id == bindparam("key_context"),
)
_BIND = session_bindings.insert()
_OWNER_OF = select(session_owners.c.owner).where(
    session_owners.c.session_id == bindparam("key_session")
)
_CLAIM = session_owners.insert()


@dataclass(frozen=True)
class Binding:
    session_id: str
    directory: str


class BindingStore:
    """Durable map from (owner, context) to session, and from session to its owner."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # One statement each instead of delete + insert and select + insert (None on a
        # database without ON CONFLICT).
        self._rebind = upsert_statement(engine, session_bindings, ["owner", "context_id"])
        self._first_claim = upsert_statement(engine, session_owners, ["session_id"], update=False)

    async def get(self, owner: str, context_id: str, directory: str) -> Binding | None:
        query = select(session_bindings.c.session_id, session_bindings.c.directory).where(
            session_bindings.c.owner == owner,
            session_bindings.c.context_id == _key(context_id, directory),
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Binding(row.session_id, row.directory) if row else None

    async def bind(
        self, owner: str, context_id: str, directory: str, session_id: str, title: str
    ) -> None:
        """Record the binding and claim the session for `owner` (first owner wins)."""
        key = _key(context_id, directory)
        row = {
            "owner": owner,
            "context_id": key,
            "session_id": session_id,
            "directory": directory,
            "created_at": time.time(),
        }
        claim = {"session_id": session_id, "owner": owner, "title": title[:255]}
        if self._rebind is not None and self._first_claim is not None:
            async with self._engine.begin() as conn:
                await conn.execute(self._rebind, row)
                await conn.execute(self._first_claim, claim)
            return
        async with self._engine.begin() as conn:
            await conn.execute(_UNBIND, {"key_owner": owner, "key_context": key})
            await conn.execute(_BIND, row)
            claimed = await conn.execute(_OWNER_OF, {"key_session": session_id})
            if claimed.first() is None:
                await conn.execute(_CLAIM, claim)

    async def claim(self, owner: str, session_id: str, title: str = "") -> str:
        """Make `owner` the session's owner unless it has one; return the owner."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    session_owners.insert().values(
                        session_id=session_id, owner=owner, title=title[:255]
                    )
                )
            return owner
        except IntegrityError:
            return await self.owner_of(session_id) or owner

    async def context_of(self, owner: str, session_id: str) -> str | None:
        """A context of `owner` bound to the session, if any."""
        query = (
            select(session_bindings.c.context_id)
            .where(session_bindings.c.owner == owner, session_bindings.c.session_id == session_id)
            .order_by(session_bindings.c.created_at)
            .limit(1)
        )
        async with self._engine.connect() as conn:
            key = (await conn.execute(query)).scalar_one_or_none()
        return key.split("\x1f", 1)[0] if key else None

    async def owner_of(self, session_id: str) -> str | None:
        query = select(session_owners.c.owner).where(session_owners.c.session_id == session_id)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()


def _key(context_id: str, directory: str) -> str:
    """A context keeps one session per directory it has been used with."""
    return f"{context_id}\x1f{directory}"
