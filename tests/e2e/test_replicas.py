"""Two adapter replicas share one PostgreSQL and one OpenCode."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import SubscribeToTaskRequest, TaskState
from a2a.utils.errors import InvalidParamsError

from opencode_a2a_server.testing.stack import AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_chunks, artifact_text, build_request, metadata_of, states
from .conftest import adapter_env
from .postgres import ThrowawayPostgres

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres().start()
    yield server
    server.stop()


@pytest.fixture
def replicas(
    postgres: ThrowawayPostgres, opencode: ManagedOpenCode, workspace: Path, tmp_path: Path
) -> Iterator[tuple[AdapterProcess, AdapterProcess]]:
    url = postgres.create_database(f"rep_{uuid.uuid4().hex[:8]}")
    started = []
    for name in ("one", "two"):
        env = adapter_env(opencode, workspace, tmp_path / "unused.db")
        env.update({"A2A_DATABASE_URL": url, "A2A_REPLICA_ID": f"replica-{name}"})
        started.append(AdapterProcess(env, log_path=tmp_path / f"{name}.log", cwd=tmp_path).start())
    yield started[0], started[1]
    for process in started:
        process.stop()


async def rpc(adapter: AdapterProcess, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=adapter.url, headers={"Authorization": f"Bearer {adapter.token}"}
    ) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return (await http.post("/", json=body)).json()


async def start_streaming(harness: A2AHarness, text: str) -> str:
    client = await harness.client()
    async for event in client.send_message(build_request(text)):
        if artifact_chunks([event], "text"):
            return event.artifact_update.task_id
    raise AssertionError("no text")


async def test_fetch_resubscribe_cancel_and_answer_through_the_other_replica(
    replicas: tuple[AdapterProcess, AdapterProcess],
) -> None:
    one, two = replicas
    first = A2AHarness(one.url, one.token)
    second = A2AHarness(two.url, two.token)
    try:
        # Started on one, followed to the end on two.
        task_id = await start_streaming(first, "[[slow:30:0.1]]")
        fetched = await second.get_task(task_id)
        assert fetched.status.state == TaskState.TASK_STATE_WORKING
        watcher = await second.client()
        events = [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id))]
        assert events[0].HasField("task")
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        done = await second.get_task(task_id)
        assert artifact_text(done) == " ".join(f"word{i}" for i in range(30))

        # Started on one, cancelled through two: OpenCode stops, both agree.
        doomed = await start_streaming(first, "[[slow:80:0.1]]")
        canceled = await second.cancel(doomed)
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await asyncio.sleep(2.0)
        assert (await first.get_task(doomed)).status.state == TaskState.TASK_STATE_CANCELED
        assert (await second.get_task(doomed)).status.state == TaskState.TASK_STATE_CANCELED

        # An ask raised on one, answered through two.
        asked = (
            await first.send(
                "[[bash:echo across]]", metadata={"opencode": {"directory": "ask"}}, streaming=False
            )
        )[0].task
        request_id = metadata_of(asked)["shared"]["interrupt"]["request_id"]
        with pytest.raises(InvalidParamsError, match="another replica"):
            part_answer = build_request("once", context_id=asked.context_id, task_id=asked.id)
            await (await second.client()).send_message(part_answer).__anext__()
        answer = await rpc(
            two, "a2a.interrupt.permission.reply", {"request_id": request_id, "reply": "once"}
        )
        assert answer["result"]["ok"] is True
        for _ in range(80):
            task = await second.get_task(asked.id)
            if task.status.state == TaskState.TASK_STATE_COMPLETED:
                break
            await asyncio.sleep(0.25)
        assert "Tool finished. Result: across" in artifact_text(task)
    finally:
        await first.aclose()
        await second.aclose()
