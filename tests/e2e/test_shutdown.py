"""SIGTERM mid-turn: running turns finish within the grace, the rest are handed off."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)

from opencode_a2a_server.testing.stack import (
    AdapterProcess,
    configure_opencode,
    free_port,
    isolated_env,
)
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_chunks, artifact_text, build_request, metadata_of, states
from .conftest import adapter_env

pytestmark = pytest.mark.e2e


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


def make_env(
    opencode: ManagedOpenCode, workspace: Path, tmp_path: Path, grace: float
) -> dict[str, str]:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["A2A_REPLICA_ID"] = "replica-one"
    env["A2A_PORT"] = str(free_port())
    env["A2A_SHUTDOWN_GRACE_SECONDS"] = str(grace)
    return env


class Follower:
    """A streaming turn read in the background; `flowing` is set at the first text."""

    def __init__(self, harness: A2AHarness, text: str) -> None:
        self.events: list[StreamResponse] = []
        self.flowing = asyncio.Event()
        self.task_id = ""
        self.job = asyncio.create_task(self._read(harness, text))

    async def _read(self, harness: A2AHarness, text: str) -> None:
        client = await harness.client()
        async for event in client.send_message(build_request(text)):
            self.events.append(event)
            if artifact_chunks([event], "text") and not self.flowing.is_set():
                self.task_id = event.artifact_update.task_id
                self.flowing.set()

    async def started(self) -> str:
        await asyncio.wait_for(self.flowing.wait(), 30)
        return self.task_id


def terminate(process: AdapterProcess) -> None:
    assert process.proc is not None
    os.killpg(process.proc.pid, signal.SIGTERM)


async def exit_code(process: AdapterProcess, timeout: float) -> int:
    assert process.proc is not None
    return await asyncio.to_thread(process.proc.wait, timeout)


async def test_turn_that_ends_within_the_grace_completes(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = make_env(opencode, workspace, tmp_path, grace=30)
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    try:
        follower = Follower(harness, "[[slow:20:0.1]]")
        task_id = await follower.started()
        terminate(first)
        await asyncio.wait_for(follower.job, 30)  # the stream runs on to the end
        assert states(follower.events)[-1] == TaskState.TASK_STATE_COMPLETED
        assert await exit_code(first, 30) == 0
    finally:
        await harness.aclose()
        first.stop()
    log = first.tail(400)
    assert "draining, 1 turn(s) running" in log
    assert "no turn running any more" in log

    second = AdapterProcess(env, log_path=tmp_path / "2.log", cwd=tmp_path).start()
    harness = A2AHarness(second.url, second.token)
    try:
        task = await harness.get_task(task_id)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert artifact_text(task) == words(20)
        assert "re-attached" not in second.tail(400)
    finally:
        await harness.aclose()
        second.stop()


async def test_turn_past_the_grace_is_handed_off_and_resumed(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = make_env(opencode, workspace, tmp_path, grace=2)
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    try:
        follower = Follower(harness, "[[slow:200:0.15]]")
        task_id = await follower.started()
        signalled = time.monotonic()
        terminate(first)
        # The stream ends cleanly, with a last `working` status that says what happens.
        await asyncio.wait_for(follower.job, 15)
        last = follower.events[-1]
        assert last.HasField("status_update")
        assert last.status_update.status.state == TaskState.TASK_STATE_WORKING
        assert metadata_of(last.status_update)["opencode"]["handoff"] == {"reason": "shutdown"}
        assert await exit_code(first, 15) == 0
        assert time.monotonic() - signalled < 2 + 5
    finally:
        await harness.aclose()
        first.stop()
    assert "stopping 1 running turn(s)" in first.tail(400)

    # Another replica name: the lease was handed off, so it is adopted at once anyway.
    env = {**env, "A2A_REPLICA_ID": "replica-two"}
    second = AdapterProcess(env, log_path=tmp_path / "2.log", cwd=tmp_path).start()
    harness = A2AHarness(second.url, second.token)
    try:
        assert f"re-attached task {task_id}" in second.tail(400)
        stored = await harness.get_task(task_id)
        assert stored.status.state == TaskState.TASK_STATE_WORKING
        watcher = await harness.client(binding="HTTP+JSON")
        events = [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id))]
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        task = await harness.get_task(task_id)
        assert artifact_text(task) == words(200)
    finally:
        await harness.aclose()
        second.stop()


async def test_new_turn_during_the_drain_is_refused_and_a_second_signal_forces_exit(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = make_env(opencode, workspace, tmp_path, grace=60)
    env["A2A_GRPC_PORT"] = str(free_port())
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    headers = {"Authorization": f"Bearer {first.token}", "A2A-Version": "1.0"}
    message: dict[str, Any] = {
        "messageId": "m-drain",
        "role": "ROLE_USER",
        "parts": [{"text": "hello"}],
    }
    try:
        follower = Follower(harness, "[[slow:120:0.15]]")
        task_id = await follower.started()
        terminate(first)
        async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=10) as http:
            for _ in range(50):
                health = await http.get("/health")
                if health.status_code == 503:
                    break
                await asyncio.sleep(0.1)
            assert health.status_code == 503
            assert health.json()["status"] == "draining"

            started = time.monotonic()
            rpc = await http.post(
                "/",
                json={
                    "jsonrpc": "2.0",
                    "id": 7,
                    "method": "SendMessage",
                    "params": {"message": message},
                },
            )
            assert rpc.status_code == 200
            error = rpc.json()["error"]
            assert error["code"] == -32030
            assert error["data"]["type"] == "SHUTTING_DOWN"
            assert "shutting down" in error["message"]
            assert rpc.json()["id"] == 7
            assert rpc.headers["retry-after"] == "5"

            rest = await http.post("/message:send", json={"message": message})
            assert rest.status_code == 503
            assert rest.json()["error"]["details"][0]["reason"] == "SHUTTING_DOWN"

            # gRPC refuses the same way: UNAVAILABLE with a retry-after trailer.
            target = f"127.0.0.1:{env['A2A_GRPC_PORT']}"
            async with grpc.aio.insecure_channel(target) as channel:
                stub = a2a_pb2_grpc.A2AServiceStub(channel)
                request = SendMessageRequest(
                    message=Message(
                        message_id="m-grpc", role=Role.ROLE_USER, parts=[Part(text="hi")]
                    )
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.SendMessage(
                        request, metadata=(("authorization", f"Bearer {first.token}"),)
                    )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (refused.value.details() or "")
            trailers = dict(refused.value.trailing_metadata() or ())
            assert trailers.get("retry-after") == "5"
            assert time.monotonic() - started < 5  # refused at once, not queued

            # The running turn is untouched meanwhile: it can still be read.
            task = await harness.get_task(task_id)
            assert task.status.state == TaskState.TASK_STATE_WORKING

        terminate(first)  # the second signal: stop waiting
        assert await exit_code(first, 10) == 0
        await asyncio.wait_for(follower.job, 10)
        assert states(follower.events)[-1] == TaskState.TASK_STATE_WORKING
    finally:
        await harness.aclose()
        first.stop()
    log = first.tail(400)
    assert "second stop signal" in log
    assert "stopping 1 running turn(s)" in log


async def test_managed_opencode_turn_past_the_grace_ends_failed_now(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode, scripted_model: Any
) -> None:
    """OpenCode stops with the adapter: the turn cannot go on, so it ends, clearly."""
    env = make_env(opencode, workspace, tmp_path, grace=1)
    for name in ("OPENCODE_BASE_URL", "OPENCODE_SERVER_USERNAME", "OPENCODE_SERVER_PASSWORD"):
        env.pop(name)
    child = isolated_env(tmp_path / "opencode")
    configure_opencode(child, scripted_model.url)
    env.update(child, OPENCODE_DATA_DIR=str(tmp_path / "opencode-data"))
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start(timeout=90)
    harness = A2AHarness(first.url, first.token)
    try:
        follower = Follower(harness, "[[slow:200:0.15]]")
        await follower.started()
        terminate(first)
        await asyncio.wait_for(follower.job, 15)
        last = follower.events[-1]
        assert last.status_update.status.state == TaskState.TASK_STATE_FAILED
        error = metadata_of(last.status_update)["opencode"]["error"]
        assert error == {"type": "SERVER_SHUTDOWN", "retryable": True}
        assert "send the message again" in last.status_update.status.message.parts[0].text
        assert await exit_code(first, 20) == 0
    finally:
        await harness.aclose()
        first.stop()
