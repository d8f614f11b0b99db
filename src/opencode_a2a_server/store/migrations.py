"""Versioned schema migrations for this service's own tables.

`serve` applies them at startup; `opencode-a2a-server migrate` applies them and exits.
Each migration runs once, in order, in its own transaction; `schema_version` records
the last one applied. The a2a-sdk creates and migrates its own `tasks` table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """Session bindings, session owners and pending asks."""
    existing = set(inspect(conn).get_table_names())
    if "session_bindings" not in existing:
        conn.execute(
            text(
                "CREATE TABLE session_bindings ("
                " owner VARCHAR(255) NOT NULL,"
                " context_id TEXT NOT NULL,"
                " session_id VARCHAR(255) NOT NULL,"
                " directory VARCHAR(4096) NOT NULL,"
                " created_at FLOAT NOT NULL,"
                " PRIMARY KEY (owner, context_id))"
            )
        )
    if "session_owners" not in existing:
        conn.execute(
            text(
                "CREATE TABLE session_owners ("
                " session_id VARCHAR(255) NOT NULL PRIMARY KEY,"
                " owner VARCHAR(255) NOT NULL,"
                " title VARCHAR(255) NOT NULL)"
            )
        )
    if "interrupts" not in existing:
        conn.execute(
            text(
                "CREATE TABLE interrupts ("
                " request_id VARCHAR(255) NOT NULL PRIMARY KEY,"
                " kind VARCHAR(32) NOT NULL,"
                " owner VARCHAR(255) NOT NULL,"
                " task_id VARCHAR(255) NOT NULL,"
                " context_id VARCHAR(255) NOT NULL,"
                " session_id VARCHAR(255) NOT NULL,"
                " directory TEXT NOT NULL,"
                " details TEXT NOT NULL,"
                " status VARCHAR(32) NOT NULL,"
                " resolution TEXT,"
                " created_at FLOAT NOT NULL,"
                " expires_at FLOAT NOT NULL)"
            )
        )
        conn.execute(text("CREATE INDEX ix_interrupts_owner ON interrupts (owner)"))
        conn.execute(text("CREATE INDEX ix_interrupts_task_id ON interrupts (task_id)"))


def _v2_turn_leases(conn: Connection) -> None:
    """Which process drives each running turn, so a restarted or other replica can
    tell a live turn from an orphaned one; and a lookup index for bindings."""
    conn.execute(
        text(
            "CREATE TABLE turn_leases ("
            " task_id VARCHAR(255) NOT NULL PRIMARY KEY,"
            " owner VARCHAR(255) NOT NULL,"
            " context_id VARCHAR(255) NOT NULL,"
            " session_id VARCHAR(255) NOT NULL,"
            " directory TEXT NOT NULL,"
            " user_message_id VARCHAR(255),"
            " posted_at_ms FLOAT NOT NULL,"
            " replica VARCHAR(255) NOT NULL,"
            " heartbeat FLOAT NOT NULL)"
        )
    )
    conn.execute(text("CREATE INDEX ix_session_bindings_session ON session_bindings (session_id)"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "session bindings, owners and asks", _v1_initial),
    Migration(2, "turn leases for restart recovery and replicas", _v2_turn_leases),
)
LATEST = MIGRATIONS[-1].version


def _current(conn: Connection) -> int:
    tables = set(inspect(conn).get_table_names())
    if "schema_version" not in tables:
        conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO schema_version (version) VALUES (0)"))
        return 0
    return int(conn.execute(text("SELECT version FROM schema_version")).scalar_one())


def _upgrade(conn: Connection, target: int) -> list[int]:
    applied = []
    for migration in MIGRATIONS:
        if migration.version > target:
            break
        if migration.version <= _current(conn):
            continue
        with conn.begin_nested():
            migration.apply(conn)
            conn.execute(text("UPDATE schema_version SET version = :v"), {"v": migration.version})
        applied.append(migration.version)
    return applied


async def upgrade(engine: AsyncEngine, target: int = LATEST) -> list[int]:
    """Apply pending migrations up to `target`; returns the versions applied.

    Concurrent starters (several replicas) are serialised by the database: the
    version row is updated in the same transaction as each migration.
    """
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(7281942)"))
        return await conn.run_sync(_upgrade, target)


async def current_version(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        if "schema_version" not in tables:
            return 0
        return int((await conn.execute(text("SELECT version FROM schema_version"))).scalar_one())
