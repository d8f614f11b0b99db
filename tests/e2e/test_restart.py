"""SIGKILL the adapter mid-turn and start it again: no task is lost or left working."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import Part, SubscribeToTaskRequest, TaskState

from opencode_a2a_server.testing.stack import AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_chunks, artifact_text, build_request, metadata_of, states
from .conftest import adapter_env

pytestmark = pytest.mark.e2e

WORDS = 80


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


def make_env(opencode: ManagedOpenCode, workspace: Path, tmp_path: Path) -> dict[str, str]:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["A2A_REPLICA_ID"] = "replica-under-test"
    env["A2A_PORT"] = str(free_port())
    return env


async def wait_state(
    harness: A2AHarness, task_id: str, wanted: set[int], timeout: float = 40
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        task = await harness.get_task(task_id)
        if task.status.state in wanted:
            return task
        await asyncio.sleep(0.25)
    raise AssertionError(f"task stuck in {TaskState.Name(task.status.state)}")


async def start_slow_turn(harness: A2AHarness, text: str) -> str:
    """Start a streaming turn and return its task id once text is flowing."""
    client = await harness.client()
    async for event in client.send_message(build_request(text)):
        if artifact_chunks([event], "text"):
            return event.artifact_update.task_id
    raise AssertionError("no text streamed")


async def test_killed_mid_turn_reattaches_and_streams_on(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = make_env(opencode, workspace, tmp_path)
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    task_id = await start_slow_turn(harness, f"[[slow:{WORDS}:0.15]]")
    await harness.aclose()
    first.stop(signal.SIGKILL)

    second = AdapterProcess(env, log_path=tmp_path / "2.log", cwd=tmp_path).start()
    harness = A2AHarness(second.url, second.token)
    try:
        watcher = await harness.client(binding="HTTP+JSON")
        events = [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id))]
        assert events[0].HasField("task")
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        task = await harness.get_task(task_id)
        assert artifact_text(task) == words(WORDS)
        assert "re-attached task" in second.tail(200)
    finally:
        await harness.aclose()
        second.stop()


async def test_turn_that_ended_while_down_is_reconciled(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = make_env(opencode, workspace, tmp_path)
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    task_id = await start_slow_turn(harness, "[[slow:8:0.1]]")
    await harness.aclose()
    first.stop(signal.SIGKILL)
    await asyncio.sleep(2.5)  # OpenCode finishes the turn while nobody listens

    second = AdapterProcess(env, log_path=tmp_path / "2.log", cwd=tmp_path).start()
    harness = A2AHarness(second.url, second.token)
    try:
        task = await wait_state(harness, task_id, {TaskState.TASK_STATE_COMPLETED}, timeout=15)
        assert artifact_text(task) == words(8)
        assert metadata_of(task)["shared"]["usage"]["output_tokens"] > 0
    finally:
        await harness.aclose()
        second.stop()


async def test_pending_ask_survives_a_restart(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = make_env(opencode, workspace, tmp_path)
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    ask = {"opencode": {"directory": "ask"}}
    by_method = (await harness.send("[[bash:echo after-restart]]", metadata=ask, streaming=False))[
        0
    ].task
    in_band = (await harness.send("[[bash:echo in-band-after]]", metadata=ask, streaming=False))[
        0
    ].task
    assert by_method.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert in_band.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    await harness.aclose()
    first.stop(signal.SIGKILL)

    second = AdapterProcess(env, log_path=tmp_path / "2.log", cwd=tmp_path).start()
    harness = A2AHarness(second.url, second.token)
    try:
        async with httpx.AsyncClient(
            base_url=second.url, headers={"Authorization": f"Bearer {second.token}"}
        ) as http:
            listed = (
                await http.post(
                    "/", json={"jsonrpc": "2.0", "id": 1, "method": "opencode.permissions.list"}
                )
            ).json()
            pending = {i["task_id"]: i["request_id"] for i in listed["result"]["items"]}
            assert {by_method.id, in_band.id} <= set(pending)
            reply = {"request_id": pending[by_method.id], "reply": "once"}
            answer = (
                await http.post(
                    "/",
                    json={
                        "jsonrpc": "2.0",
                        "id": 2,
                        "method": "a2a.interrupt.permission.reply",
                        "params": reply,
                    },
                )
            ).json()
            assert answer["result"]["ok"] is True
        task = await wait_state(harness, by_method.id, {TaskState.TASK_STATE_COMPLETED})
        assert "Tool finished. Result: after-restart" in artifact_text(task)

        part = Part()
        part.data.struct_value.update({"reply": "once"})
        follow = await harness.send(parts=[part], task_id=in_band.id, context_id=in_band.context_id)
        assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED
        assert "in-band-after" in artifact_text(await harness.get_task(in_band.id))
    finally:
        await harness.aclose()
        second.stop()
