"""Task lifecycle around a turn: disconnects, resubscribe, cancel rules, unsupported features."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from a2a.types.a2a_pb2 import SubscribeToTaskRequest, TaskState
from a2a.utils.errors import TaskNotCancelableError

from .a2a import A2AHarness, artifact_text, build_request, states, streamed_text, task_id_of
from .test_http_surface import V1, rpc, v1_message

pytestmark = pytest.mark.e2e


async def wait_state(a2a: A2AHarness, task_id: str, state: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if (await a2a.get_task(task_id)).status.state == state:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} never reached {TaskState.Name(state)}")


async def test_client_disconnect_does_not_cancel(http: httpx.AsyncClient, a2a: A2AHarness) -> None:
    task_id = None
    async with http.stream(
        "POST", "/message:stream", json=v1_message("[[slow:12:0.1]] go on"), headers=V1
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                frame = json.loads(line[5:])
                if "task" in frame:
                    task_id = frame["task"]["id"]
                    break
    assert task_id is not None
    await wait_state(a2a, task_id, TaskState.TASK_STATE_COMPLETED)
    task = await a2a.get_task(task_id)
    assert artifact_text(task) == " ".join(f"word{i}" for i in range(12))


async def test_subscribe_to_a_running_task(a2a: A2AHarness) -> None:
    client = await a2a.client(streaming=False)
    request = build_request("[[slow:10:0.1]] subscribe to me")
    request.configuration.return_immediately = True
    first = [event async for event in client.send_message(request)]
    task_id = task_id_of(first)
    assert first[0].task.status.state != TaskState.TASK_STATE_COMPLETED
    watcher = await a2a.client(binding="HTTP+JSON")
    events = [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id))]
    assert events[0].HasField("task")
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    task = await a2a.get_task(task_id)
    assert artifact_text(task) == " ".join(f"word{i}" for i in range(10))
    # Chunks missed before subscribing are covered by the final snapshot.
    assert streamed_text(events) == artifact_text(task)


async def test_cancel_of_a_completed_task_is_refused(a2a: A2AHarness) -> None:
    events = await a2a.send("quick one")
    with pytest.raises(TaskNotCancelableError):
        await a2a.cancel(task_id_of(events))


async def test_push_config_is_not_supported(http: httpx.AsyncClient, a2a: A2AHarness) -> None:
    events = await a2a.send("push?")
    params = {"taskId": task_id_of(events), "id": "p1", "url": "http://127.0.0.1:9/hook"}
    response = await http.post(
        "/", json=rpc("CreateTaskPushNotificationConfig", params), headers=V1
    )
    assert response.json()["error"]["code"] == -32003


async def test_invalid_json_over_rest_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/message:send", content=b"{oops", headers={**V1, "content-type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("version", "binding"),
    [("1.0", "JSONRPC"), ("0.3", "HTTP+JSON"), ("1.0", "GRPC"), ("0.3", "GRPC")],
)
async def test_resubscribe_to_a_finished_task_returns_its_snapshot(
    a2a: A2AHarness, version: str, binding: str
) -> None:
    events = await a2a.send("done already")
    watcher = await a2a.client(version, binding)
    snapshot = [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id_of(events)))]
    assert len(snapshot) == 1 and snapshot[0].HasField("task")
    assert snapshot[0].task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(snapshot[0].task) == "Hello from fake LLM. You said: done already"
