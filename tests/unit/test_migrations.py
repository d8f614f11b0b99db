"""Schema migrations: fresh databases, old databases, and databases from before migrations."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, text

from opencode_a2a_server.store.database import create_engine
from opencode_a2a_server.store.migrations import LATEST, current_version, upgrade


async def tables(engine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))


async def test_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert await upgrade(engine) == list(range(1, LATEST + 1))
    assert await current_version(engine) == LATEST
    assert {"session_bindings", "session_owners", "interrupts", "turn_leases"} <= await tables(
        engine
    )
    assert await upgrade(engine) == []  # idempotent
    await engine.dispose()


async def test_upgrade_from_version_1_keeps_data(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert await upgrade(engine, target=1) == [1]
    assert "turn_leases" not in await tables(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO session_owners (session_id, owner, title) "
                "VALUES ('ses_1', 'alice', 'kept')"
            )
        )
    assert await upgrade(engine) == [2]
    assert "turn_leases" in await tables(engine)
    async with engine.connect() as conn:
        owner = (await conn.execute(text("SELECT owner FROM session_owners"))).scalar_one()
    assert owner == "alice"
    await engine.dispose()


async def test_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the tables as the first releases created them
        conn.execute(
            "CREATE TABLE session_owners (session_id VARCHAR(255) PRIMARY KEY, "
            "owner VARCHAR(255) NOT NULL, title VARCHAR(255) NOT NULL)"
        )
        conn.execute("INSERT INTO session_owners VALUES ('ses_old', 'default', 't')")
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    assert await upgrade(engine) == [1, 2]
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT session_id FROM session_owners"))).all()
    assert [r[0] for r in rows] == ["ses_old"]
    await engine.dispose()


def test_migrate_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("A2A_", "OPENCODE_"))}
    env["A2A_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "opencode_a2a_server.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"schema version {LATEST}" in result.stdout
    assert (tmp_path / "m.db").exists()
