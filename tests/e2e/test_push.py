"""Push notifications to a real local webhook receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskPushNotificationConfig, TaskState

from opencode_a2a_server.testing.stack import AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, build_request, metadata_of
from .conftest import adapter_env
from .webhook import WebhookReceiver

pytestmark = pytest.mark.e2e

KEY = "push-signing-key-for-tests"
ASK = {"opencode": {"directory": "ask"}}


def push_env(opencode: ManagedOpenCode, workspace: Path, tmp_path: Path) -> dict[str, str]:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env.update(
        {
            "A2A_PUSH_NOTIFICATIONS": "true",
            "A2A_PUSH_ALLOWED_HOSTS": "127.0.0.1",
            "A2A_PUSH_SIGNING_KEY": KEY,
            "A2A_REPLICA_ID": "push-replica",
            "A2A_PORT": str(free_port()),
        }
    )
    return env


async def rpc(adapter: AdapterProcess, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=adapter.url,
        headers={"Authorization": f"Bearer {adapter.token}", "A2A-Version": "1.0"},
    ) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return (await http.post("/", json=body)).json()


async def wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def ask_with_push(harness: A2AHarness, receiver: WebhookReceiver, text: str) -> Any:
    client = await harness.client(streaming=False)
    request = build_request(text, metadata=ASK)
    config = TaskPushNotificationConfig(id="hook-1", url=receiver.url, token="receiver-token")
    request.configuration.task_push_notification_config.CopyFrom(config)
    events = [e async for e in client.send_message(request)]
    return events[0].task


async def test_approval_via_push_signed_and_in_order(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    adapter = AdapterProcess(
        push_env(opencode, workspace, tmp_path), log_path=tmp_path / "a.log", cwd=tmp_path
    ).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        card = (await (harness.http()).get(f"{adapter.url}/.well-known/agent-card.json")).json()
        assert card["capabilities"]["pushNotifications"] is True
        with WebhookReceiver() as receiver:
            task = await ask_with_push(harness, receiver, "[[bash:echo pushed]]")
            assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
            await wait_for(lambda: "TASK_STATE_INPUT_REQUIRED" in receiver.states())
            asked = receiver.received[-1]["json"]["statusUpdate"]
            request_id = asked["metadata"]["shared"]["interrupt"]["request_id"]
            answer = await rpc(
                adapter,
                "a2a.interrupt.permission.reply",
                {"request_id": request_id, "reply": "once"},
            )
            assert answer["result"]["ok"] is True
            await wait_for(lambda: "TASK_STATE_COMPLETED" in receiver.states())
            assert receiver.states() == [
                "TASK_STATE_WORKING",
                "TASK_STATE_INPUT_REQUIRED",
                "TASK_STATE_WORKING",
                "TASK_STATE_COMPLETED",
            ]
            for delivery in receiver.received:
                headers = {k.lower(): v for k, v in delivery["headers"].items()}
                assert headers["x-a2a-notification-token"] == "receiver-token"
                expected = hmac.new(
                    KEY.encode(),
                    headers["x-a2a-timestamp"].encode() + b"." + delivery["raw"],
                    hashlib.sha256,
                ).hexdigest()
                assert headers["x-a2a-signature"] == f"sha256={expected}"
            final = receiver.received[-1]["json"]["statusUpdate"]
            names = {a["name"] for a in final["metadata"]["opencode"]["artifacts"]}
            assert {"response", "tool_call"} <= names
        listed = await rpc(adapter, "ListTaskPushNotificationConfigs", {"taskId": task.id})
        assert [c["id"] for c in listed["result"]["configs"]] == ["hook-1"]
    finally:
        await harness.aclose()
        adapter.stop()


async def test_retries_after_failures_and_several_configs(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    adapter = AdapterProcess(
        push_env(opencode, workspace, tmp_path), log_path=tmp_path / "a.log", cwd=tmp_path
    ).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        with WebhookReceiver() as flaky, WebhookReceiver() as steady:
            task = await ask_with_push(harness, flaky, "[[bash:echo retry]]")
            second = await rpc(
                adapter,
                "CreateTaskPushNotificationConfig",
                {"taskId": task.id, "id": "hook-2", "url": steady.url},
            )
            assert second["result"]["id"] == "hook-2"
            await wait_for(lambda: "TASK_STATE_INPUT_REQUIRED" in flaky.states())
            flaky.fail_next = 2
            request_id = metadata_of(task)["shared"]["interrupt"]["request_id"]
            await rpc(
                adapter,
                "a2a.interrupt.permission.reply",
                {"request_id": request_id, "reply": "once"},
            )
            await wait_for(lambda: "TASK_STATE_COMPLETED" in flaky.states())
            await wait_for(lambda: "TASK_STATE_COMPLETED" in steady.states())
            assert flaky.attempts >= len(flaky.received) + 2
            assert flaky.states()[-2:] == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
    finally:
        await harness.aclose()
        adapter.stop()


async def test_private_urls_are_refused(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    adapter = AdapterProcess(
        push_env(opencode, workspace, tmp_path), log_path=tmp_path / "a.log", cwd=tmp_path
    ).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        events = await harness.send("anything")
        task_id = events[0].task.id
        for url in (
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest",
            "http://[::1]:9/x",
            "ftp://example.com/x",
        ):
            refused = await rpc(
                adapter,
                "CreateTaskPushNotificationConfig",
                {"taskId": task_id, "id": "bad", "url": url},
            )
            assert refused["error"]["code"] == -32602, url
            assert (
                "A2A_PUSH_ALLOWED_HOSTS" in refused["error"]["message"]
                or "http(s)" in refused["error"]["message"]
            )
    finally:
        await harness.aclose()
        adapter.stop()


async def test_delivery_after_a_restart(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = push_env(opencode, workspace, tmp_path)
    first = AdapterProcess(env, log_path=tmp_path / "1.log", cwd=tmp_path).start()
    harness = A2AHarness(first.url, first.token)
    with WebhookReceiver() as receiver:
        task = await ask_with_push(harness, receiver, "[[bash:echo across-restart]]")
        await harness.aclose()
        first.stop(signal.SIGKILL)
        second = AdapterProcess(env, log_path=tmp_path / "2.log", cwd=tmp_path).start()
        try:
            request_id = metadata_of(task)["shared"]["interrupt"]["request_id"]
            answer = await rpc(
                second,
                "a2a.interrupt.permission.reply",
                {"request_id": request_id, "reply": "once"},
            )
            assert answer["result"]["ok"] is True
            await wait_for(lambda: "TASK_STATE_COMPLETED" in receiver.states())
        finally:
            second.stop()


async def test_push_config_methods_of_both_versions(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    adapter = AdapterProcess(
        push_env(opencode, workspace, tmp_path), log_path=tmp_path / "a.log", cwd=tmp_path
    ).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        task_id = (await harness.send("configs"))[0].task.id
        with WebhookReceiver() as receiver:
            created = await rpc(
                adapter,
                "CreateTaskPushNotificationConfig",
                {"taskId": task_id, "id": "a", "url": receiver.url},
            )
            assert created["result"]["url"] == receiver.url
            got = await rpc(
                adapter, "GetTaskPushNotificationConfig", {"taskId": task_id, "id": "a"}
            )
            assert got["result"]["id"] == "a"
            await rpc(adapter, "DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": "a"})
            listed = await rpc(adapter, "ListTaskPushNotificationConfigs", {"taskId": task_id})
            assert listed["result"].get("configs", []) == []

            async with httpx.AsyncClient(
                base_url=adapter.url, headers={"Authorization": f"Bearer {adapter.token}"}
            ) as http:

                async def v03(method: str, params: dict[str, Any]) -> dict[str, Any]:
                    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                    return (await http.post("/", json=body)).json()

                config = {"url": receiver.url, "id": "b"}
                made = await v03(
                    "tasks/pushNotificationConfig/set",
                    {"taskId": task_id, "pushNotificationConfig": config},
                )
                assert made["result"]["pushNotificationConfig"]["url"] == receiver.url, made
                fetched = await v03(
                    "tasks/pushNotificationConfig/get",
                    {"id": task_id, "pushNotificationConfigId": "b"},
                )
                assert fetched["result"]["pushNotificationConfig"]["id"] == "b", fetched
                listed03 = await v03("tasks/pushNotificationConfig/list", {"id": task_id})
                assert [c["pushNotificationConfig"]["id"] for c in listed03["result"]] == ["b"], (
                    listed03
                )
                deleted = await v03(
                    "tasks/pushNotificationConfig/delete",
                    {"id": task_id, "pushNotificationConfigId": "b"},
                )
                assert "error" not in deleted, deleted
    finally:
        await harness.aclose()
        adapter.stop()
