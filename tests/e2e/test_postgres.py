"""The service on a real PostgreSQL server (started by the test, on loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from a2a.types.a2a_pb2 import Part, TaskState

from opencode_a2a_server.store.database import create_engine
from opencode_a2a_server.store.migrations import LATEST
from opencode_a2a_server.testing.stack import AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from ..unit.durable_tasks_checks import check_round_trip
from .a2a import A2AHarness, artifact_text, last_status, metadata_of, states, task_id_of
from .conftest import adapter_env
from .postgres import ThrowawayPostgres

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres().start()
    yield server
    server.stop()


def pg_adapter(
    url: str, opencode: ManagedOpenCode, workspace: Path, tmp_path: Path, name: str = "adapter"
) -> AdapterProcess:
    env = adapter_env(opencode, workspace, tmp_path / "unused.db")
    env["A2A_DATABASE_URL"] = url
    return AdapterProcess(env, log_path=tmp_path / f"{name}.log", cwd=tmp_path)


def data_part(value: dict) -> Part:
    part = Part()
    part.data.struct_value.update(value)
    return part


async def test_turns_sessions_and_restart_on_postgres(
    postgres: ThrowawayPostgres, opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> None:
    url = postgres.create_database(f"a2a_{uuid.uuid4().hex[:8]}")
    adapter = pg_adapter(url, opencode, workspace, tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    context = str(uuid.uuid4())
    try:
        events = await harness.send("pg one", context_id=context)
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        task_id = task_id_of(events)
        session = metadata_of(last_status(events))["shared"]["session"]["id"]
        again = await harness.send("pg two", context_id=context, binding="HTTP+JSON")
        assert metadata_of(last_status(again))["shared"]["session"]["id"] == session
        asked = await harness.send(
            "[[bash:echo pg-ask]]", metadata={"opencode": {"directory": "ask"}}
        )
        assert last_status(asked).status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        follow = await harness.send(
            parts=[data_part({"reply": "once"})],
            task_id=task_id_of(asked),
            context_id=asked[0].task.context_id,
        )
        assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED
    finally:
        await harness.aclose()
        adapter.stop()

    assert postgres.psql(
        "SELECT version FROM schema_version", database=url.rsplit("/", 1)[1]
    ) == str(LATEST)
    restarted = pg_adapter(url, opencode, workspace, tmp_path, "adapter2").start()
    harness = A2AHarness(restarted.url, restarted.token)
    try:
        task = await harness.get_task(task_id)
        assert artifact_text(task) == "Hello from fake LLM. You said: pg one"
        third = await harness.send("pg three", context_id=context)
        assert metadata_of(last_status(third))["shared"]["session"]["id"] == session
        async with httpx.AsyncClient(
            base_url=restarted.url, headers={"Authorization": f"Bearer {restarted.token}"}
        ) as http:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "opencode.sessions.get",
                "params": {"session_id": session},
            }
            got = (await http.post("/", json=body)).json()
            assert got["result"]["item"]["id"] == session
            listed = await http.get("/tasks", headers={"A2A-Version": "1.0"})
            assert task_id in [t["id"] for t in listed.json()["tasks"]]
    finally:
        await harness.aclose()
        restarted.stop()


def test_migrate_command_on_postgres(postgres: ThrowawayPostgres, tmp_path: Path) -> None:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("A2A_", "OPENCODE_"))}
    env["A2A_DATABASE_URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "opencode_a2a_server.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    tables = postgres.psql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
        "WHERE schemaname='public'",
        database=name,
    )
    assert {
        "interrupts",
        "schema_version",
        "session_bindings",
        "session_owners",
        "turn_leases",
    } <= set(tables.split(","))


async def test_task_upserts_match_the_sdks_rows_on_postgres(postgres: ThrowawayPostgres) -> None:
    ours = create_engine(postgres.create_database(f"ours_{uuid.uuid4().hex[:8]}"))
    theirs = create_engine(postgres.create_database(f"theirs_{uuid.uuid4().hex[:8]}"))
    try:
        await check_round_trip(ours, theirs)
    finally:
        await ours.dispose()
        await theirs.dispose()
