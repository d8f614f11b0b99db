"""Upstream trouble and the managed OpenCode, each with adapter processes of their own."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState

from opencode_a2a_server.testing.scripted_model import ScriptedModelServer
from opencode_a2a_server.testing.stack import (
    AdapterProcess,
    configure_opencode,
    free_port,
    isolated_env,
    start_opencode,
)
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_chunks, build_request, last_status, states, streamed_text
from .conftest import adapter_env

pytestmark = pytest.mark.e2e


def status_text(events: list) -> str:
    return "".join(p.text for p in last_status(events).status.message.parts)


async def test_opencode_down_fails_the_task_quickly(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["OPENCODE_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        health = httpx.get(
            f"{adapter.url}/health", headers={"Authorization": f"Bearer {adapter.token}"}
        )
        assert health.status_code == 503 and health.json()["upstream"]["healthy"] is False
        for streaming in (True, False):
            started = time.monotonic()
            events = await harness.send("anyone there?", streaming=streaming)
            assert time.monotonic() - started < 5
            assert states(events)[-1] == TaskState.TASK_STATE_FAILED
            task = events[-1].task if events[-1].HasField("task") else None
            message = (
                "".join(p.text for p in task.status.message.parts) if task else status_text(events)
            )
            assert "unreachable" in message
        async with httpx.AsyncClient(
            base_url=adapter.url, headers={"Authorization": f"Bearer {adapter.token}"}
        ) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "opencode.agents.list", "params": {}}
            error = (await http.post("/", json=body)).json()["error"]
        assert error["code"] == -32002 and error["data"]["type"] == "UPSTREAM_UNREACHABLE"
    finally:
        await harness.aclose()
        adapter.stop()


async def test_wrong_upstream_password_is_explained(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["OPENCODE_SERVER_PASSWORD"] = "not-the-password"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        events = await harness.send("hello")
        assert states(events)[-1] == TaskState.TASK_STATE_FAILED
        assert "OPENCODE_SERVER_PASSWORD" in status_text(events)
        assert "not-the-password" not in adapter.tail(200)
    finally:
        await harness.aclose()
        adapter.stop()


async def test_opencode_killed_mid_turn_fails_within_seconds(
    tmp_path: Path, workspace: Path, scripted_model: ScriptedModelServer
) -> None:
    own = await start_opencode(tmp_path / "oc", workspace, scripted_model.url)
    env = adapter_env(own, workspace, tmp_path / "a.db")
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        client = await harness.client()
        seen: list = []
        killed_at = None
        async for event in client.send_message(build_request("[[slow:100:0.1]] long")):
            seen.append(event)
            if killed_at is None and artifact_chunks([event], "text"):
                assert own.pid is not None
                os.killpg(own.pid, signal.SIGKILL)
                killed_at = time.monotonic()
        assert killed_at is not None
        assert time.monotonic() - killed_at < 5
        assert states(seen)[-1] == TaskState.TASK_STATE_FAILED
        assert "unreachable" in status_text(seen)
    finally:
        await harness.aclose()
        adapter.stop()
        await own.stop()


async def test_managed_opencode_is_started_used_and_stopped(
    tmp_path: Path, workspace: Path, scripted_model: ScriptedModelServer
) -> None:
    env = isolated_env(tmp_path / "home")
    configure_opencode(env, scripted_model.url)
    env.update(
        {
            "OPENCODE_WORKSPACE_ROOT": str(workspace),
            "A2A_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        }
    )
    env.pop("OPENCODE_BASE_URL", None)
    os.environ.pop("OPENCODE_BASE_URL", None)
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        headers = {"Authorization": f"Bearer {adapter.token}"}
        health = httpx.get(f"{adapter.url}/health", headers=headers).json()
        child = health["upstream"]["managed_pid"]
        assert health["upstream"]["healthy"] is True
        events = await harness.send("managed hello")
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        assert streamed_text(events) == "Hello from fake LLM. You said: managed hello"
    finally:
        await harness.aclose()
        code = adapter.stop()
    # uvicorn finishes its graceful shutdown, then re-raises SIGTERM to exit by it.
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in adapter.tail()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


async def test_tasks_survive_an_adapter_restart(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        events = await harness.send("remember me", streaming=False)
        task_id = events[0].task.id
    finally:
        await harness.aclose()
        adapter.stop()
    restarted = AdapterProcess(env, log_path=tmp_path / "adapter2.log", cwd=tmp_path).start()
    harness = A2AHarness(restarted.url, restarted.token)
    try:
        for binding in ("JSONRPC", "HTTP+JSON"):
            task = await harness.get_task(task_id, binding=binding)
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert task.artifacts[0].parts[0].text == "Hello from fake LLM. You said: remember me"
    finally:
        await harness.aclose()
        restarted.stop()


async def test_managed_opencode_restarts_and_new_turns_work(
    tmp_path: Path, workspace: Path, scripted_model: ScriptedModelServer
) -> None:
    env = isolated_env(tmp_path / "home")
    configure_opencode(env, scripted_model.url)
    env.update(
        {
            "OPENCODE_WORKSPACE_ROOT": str(workspace),
            "A2A_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        }
    )
    os.environ.pop("OPENCODE_BASE_URL", None)
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    headers = {"Authorization": f"Bearer {adapter.token}"}
    try:
        async with httpx.AsyncClient(base_url=adapter.url, headers=headers) as http:
            first = (await http.get("/health")).json()["upstream"]["managed_pid"]
            client = await harness.client()
            seen: list = []
            killed = False
            async for event in client.send_message(build_request("[[slow:60:0.1]] doomed")):
                seen.append(event)
                if not killed and artifact_chunks([event], "text"):
                    os.killpg(first, signal.SIGKILL)
                    killed = True
            assert states(seen)[-1] == TaskState.TASK_STATE_FAILED
            for _ in range(120):
                health = await http.get("/health")
                body = health.json()["upstream"]
                if health.status_code == 200 and body.get("managed_pid") not in (None, first):
                    break
                await asyncio.sleep(0.25)
            assert health.status_code == 200, health.text
            assert body["event_stream_connected"] is True
        events = await harness.send("after the restart")
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        assert streamed_text(events) == "Hello from fake LLM. You said: after the restart"
    finally:
        await harness.aclose()
        adapter.stop()
