"""UpsertTaskStore on SQLite (PostgreSQL: tests/e2e/test_postgres.py)."""

from __future__ import annotations

from pathlib import Path

from opencode_a2a_server.store.database import create_engine

from .durable_tasks_checks import check_round_trip


async def test_upserts_write_what_the_sdk_writes_and_reads(tmp_path: Path) -> None:
    ours = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ours.db'}")
    theirs = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'theirs.db'}")
    try:
        await check_round_trip(ours, theirs)
    finally:
        await ours.dispose()
        await theirs.dispose()
