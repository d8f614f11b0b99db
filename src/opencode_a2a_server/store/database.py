"""The database engine: SQLite file by default, PostgreSQL when configured."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str) -> AsyncEngine:
    """Create the async engine; a SQLite file's folder is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


_UPSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def upsert_statement(
    engine: AsyncEngine, table: Table, keys: Sequence[str], *, update: bool = True
) -> Any | None:
    """`INSERT … ON CONFLICT (keys)` for the engine's dialect, built to be reused.

    With `update`, a conflicting row takes the new values of every other column; without,
    the existing row is kept. None on a database without ON CONFLICT (neither SQLite nor
    PostgreSQL): the caller keeps its portable statements for that case.
    """
    insert = _UPSERTS.get(engine.dialect.name)
    if insert is None:
        return None
    statement = insert(table)
    index = [table.c[key] for key in keys]
    if not update:
        return statement.on_conflict_do_nothing(index_elements=index)
    others = {c.name: statement.excluded[c.name] for c in table.c if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=index, set_=others)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
