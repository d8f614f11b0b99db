"""Permission and question asks against the real OpenCode (bash and edit set to `ask`)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import Part, TaskState
from a2a.utils.errors import InvalidParamsError

from opencode_a2a_server.testing.stack import AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import (
    A2AHarness,
    artifact_chunks,
    artifact_text,
    build_request,
    last_status,
    metadata_of,
    states,
    task_id_of,
)
from .conftest import adapter_env

pytestmark = pytest.mark.e2e

ASK = {"opencode": {"directory": "ask"}}


def data_part(value: dict[str, Any]) -> Part:
    part = Part()
    part.data.struct_value.update(value)
    return part


def interrupt_of(status_update: Any) -> dict[str, Any]:
    return metadata_of(status_update)["shared"]["interrupt"]


def asked(events: list) -> dict[str, Any]:
    status = last_status(events)
    assert status.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    return interrupt_of(status)


def tool_outputs(events: list) -> list[str]:
    found = []
    for update in artifact_chunks(events, "tool_call"):
        data = dict(update.artifact.parts[0].data.struct_value)
        if data.get("status") == "completed":
            found.append(str(data.get("output")))
    return found


async def rpc(http: httpx.AsyncClient, method: str, params: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(
        "/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    )
    assert response.status_code == 200
    return response.json()


async def wait_state(a2a: A2AHarness, task_id: str, state: int, timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        task = await a2a.get_task(task_id)
        if task.status.state == state:
            return task
        await asyncio.sleep(0.2)
    raise AssertionError(f"task never reached {TaskState.Name(state)}")


@pytest.mark.parametrize(
    ("version", "binding"),
    [("1.0", "JSONRPC"), ("0.3", "HTTP+JSON"), ("1.0", "GRPC"), ("0.3", "GRPC")],
)
async def test_permission_approved_once_in_band(
    a2a: A2AHarness, version: str, binding: str
) -> None:
    marker = uuid.uuid4().hex[:6]
    events = await a2a.send(
        f"[[bash:echo once-{marker}]]", metadata=ASK, version=version, binding=binding
    )
    interrupt = asked(events)
    assert interrupt["type"] == "permission" and interrupt["phase"] == "asked"
    assert interrupt["request_id"].startswith("per")
    assert interrupt["details"]["permission"] == "bash"
    assert interrupt["details"]["command"] == f"echo once-{marker}"
    message = last_status(events).status.message
    assert f"echo once-{marker}" in message.parts[0].text
    assert (
        dict(message.parts[1].data.struct_value)["interrupt"]["request_id"]
        == interrupt["request_id"]
    )

    task_id = task_id_of(events)
    context_id = events[0].task.context_id
    follow = await a2a.send(
        parts=[data_part({"reply": "once"})],
        task_id=task_id,
        context_id=context_id,
        version=version,
        binding=binding,
    )
    resolved = [
        e.status_update
        for e in follow
        if e.HasField("status_update")
        and metadata_of(e.status_update).get("shared", {}).get("interrupt")
    ]
    assert resolved[0].status.state == TaskState.TASK_STATE_WORKING
    assert interrupt_of(resolved[0])["phase"] == "resolved"
    assert interrupt_of(resolved[0])["resolution"]["reply"] == "once"
    assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED
    assert tool_outputs(follow) == [f"once-{marker}\n"]
    task = await a2a.get_task(task_id)
    assert f"Tool finished. Result: once-{marker}" in artifact_text(task)


async def test_permission_always_is_not_asked_again(a2a: A2AHarness) -> None:
    meta = {"opencode": {"directory": "ask-always"}}
    context = str(uuid.uuid4())
    events = await a2a.send("[[bash:echo first]]", metadata=meta, context_id=context)
    asked(events)
    follow = await a2a.send(
        parts=[data_part({"reply": "always"})], task_id=task_id_of(events), context_id=context
    )
    assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED
    again = await a2a.send("[[bash:echo second]]", metadata=meta, context_id=context)
    assert TaskState.TASK_STATE_INPUT_REQUIRED not in states(again)
    assert states(again)[-1] == TaskState.TASK_STATE_COMPLETED
    assert tool_outputs(again) == ["second\n"]


async def test_permission_rejected_without_message_ends_canceled(a2a: A2AHarness) -> None:
    events = await a2a.send("[[bash:echo nope]]", metadata=ASK)
    asked(events)
    follow = await a2a.send(
        parts=[data_part({"reply": "reject"})],
        task_id=task_id_of(events),
        context_id=events[0].task.context_id,
    )
    final = last_status(follow)
    assert final.status.state == TaskState.TASK_STATE_CANCELED
    assert "declined" in final.status.message.parts[0].text
    assert metadata_of(final)["opencode"]["declined"] == "permission"


async def test_permission_rejected_with_message_continues(a2a: A2AHarness) -> None:
    events = await a2a.send("[[bash:echo later]]", metadata=ASK)
    asked(events)
    follow = await a2a.send(
        parts=[data_part({"reply": "reject", "message": "not now, please"})],
        task_id=task_id_of(events),
        context_id=events[0].task.context_id,
    )
    assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED
    task = await a2a.get_task(task_id_of(events))
    assert "not now, please" in artifact_text(task)


async def test_question_answered_with_an_option_label(a2a: A2AHarness) -> None:
    events = await a2a.send("[[question]] pick one")
    interrupt = asked(events)
    assert interrupt["type"] == "question"
    assert [o["label"] for o in interrupt["details"]["questions"][0]["options"]] == ["Red", "Blue"]
    assert "Which color do you prefer?" in last_status(events).status.message.parts[0].text
    follow = await a2a.send(
        "blue", task_id=task_id_of(events), context_id=events[0].task.context_id
    )
    assert interrupt_of(
        next(
            e.status_update
            for e in follow
            if e.HasField("status_update")
            and e.status_update.status.state == TaskState.TASK_STATE_WORKING
            and "interrupt" in metadata_of(e.status_update).get("shared", {})
        )
    )["resolution"]["answers"] == [["Blue"]]
    assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED
    assert "Blue" in artifact_text(await a2a.get_task(task_id_of(events)))


async def test_question_rejected_ends_canceled(a2a: A2AHarness) -> None:
    events = await a2a.send("[[question]] pick or not")
    asked(events)
    follow = await a2a.send(
        parts=[data_part({"reject": True})],
        task_id=task_id_of(events),
        context_id=events[0].task.context_id,
    )
    final = last_status(follow)
    assert final.status.state == TaskState.TASK_STATE_CANCELED
    assert metadata_of(final)["opencode"]["declined"] == "question"


async def test_subagent_ask_belongs_to_the_parent_task(a2a: A2AHarness) -> None:
    prompt = (
        '[[tool:task:{"description":"sub job","prompt":"[[bash:echo from-sub]]",'
        '"subagent_type":"general"}]]'
    )
    events = await a2a.send(prompt, metadata={"opencode": {"directory": "ask-sub"}})
    interrupt = asked(events)
    assert interrupt["details"]["command"] == "echo from-sub"
    follow = await a2a.send(
        parts=[data_part({"reply": "once"})],
        task_id=task_id_of(events),
        context_id=events[0].task.context_id,
    )
    assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED


async def test_non_streaming_send_returns_input_required_and_method_answers(
    a2a: A2AHarness, http: httpx.AsyncClient
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await a2a.send("[[bash:echo blocking]]", metadata=ASK, streaming=False)
    assert loop.time() - started < 10
    task = events[0].task
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    interrupt = metadata_of(task)["shared"]["interrupt"]

    listed = await rpc(http, "opencode.permissions.list", {})
    assert interrupt["request_id"] in [i["request_id"] for i in listed["result"]["items"]]
    item = next(i for i in listed["result"]["items"] if i["request_id"] == interrupt["request_id"])
    assert item["task_id"] == task.id and item["details"]["command"] == "echo blocking"

    wrong = await rpc(
        http,
        "a2a.interrupt.question.reply",
        {"request_id": interrupt["request_id"], "answers": [["x"]]},
    )
    assert wrong["error"]["code"] == -32008
    assert wrong["error"]["data"]["type"] == "INTERRUPT_TYPE_MISMATCH"

    reply = await rpc(
        http,
        "a2a.interrupt.permission.reply",
        {"request_id": interrupt["request_id"], "reply": "once"},
    )
    assert reply["result"] == {
        "ok": True,
        "request_id": interrupt["request_id"],
        "task_id": task.id,
    }
    twice = await rpc(
        http,
        "a2a.interrupt.permission.reply",
        {"request_id": interrupt["request_id"], "reply": "once"},
    )
    assert twice["error"]["data"]["type"] == "INTERRUPT_ALREADY_RESOLVED"

    done = await wait_state(a2a, task.id, TaskState.TASK_STATE_COMPLETED)
    assert "Tool finished. Result: blocking" in artifact_text(done)
    listed = await rpc(http, "opencode.permissions.list", {})
    assert interrupt["request_id"] not in [i["request_id"] for i in listed["result"]["items"]]


async def test_question_by_method_and_listing(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    events = await a2a.send("[[question]] by method", streaming=False)
    task = events[0].task
    request_id = metadata_of(task)["shared"]["interrupt"]["request_id"]
    listed = await rpc(http, "opencode.questions.list", {})
    assert request_id in [i["request_id"] for i in listed["result"]["items"]]
    reply = await rpc(
        http, "a2a.interrupt.question.reply", {"request_id": request_id, "answers": [["Red"]]}
    )
    assert reply["result"]["ok"] is True
    done = await wait_state(a2a, task.id, TaskState.TASK_STATE_COMPLETED)
    assert "Red" in artifact_text(done)

    events = await a2a.send("[[question]] dismiss by method", streaming=False)
    request_id = metadata_of(events[0].task)["shared"]["interrupt"]["request_id"]
    reject = await rpc(http, "a2a.interrupt.question.reject", {"request_id": request_id})
    assert reject["result"]["ok"] is True
    await wait_state(a2a, events[0].task.id, TaskState.TASK_STATE_CANCELED)


async def test_cancel_during_an_ask_clears_it_upstream(
    a2a: A2AHarness, http: httpx.AsyncClient, opencode: ManagedOpenCode, workspace: Path
) -> None:
    events = await a2a.send("[[bash:echo cancel-me]]", metadata=ASK, streaming=False)
    task = events[0].task
    request_id = metadata_of(task)["shared"]["interrupt"]["request_id"]
    canceled = await a2a.cancel(task.id)
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    async with httpx.AsyncClient(auth=opencode.auth) as upstream:
        pending = await upstream.get(
            f"{opencode.base_url}/permission", params={"directory": str(workspace / "ask")}
        )
    assert request_id not in [p["id"] for p in pending.json()]
    late = await rpc(
        http, "a2a.interrupt.permission.reply", {"request_id": request_id, "reply": "once"}
    )
    assert late["error"]["data"]["type"] == "INTERRUPT_ALREADY_RESOLVED"
    await asyncio.sleep(0.5)
    assert (await a2a.get_task(task.id)).status.state == TaskState.TASK_STATE_CANCELED


async def test_answer_errors_are_clear(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    unknown = await rpc(
        http, "a2a.interrupt.permission.reply", {"request_id": "per_nope", "reply": "once"}
    )
    assert unknown["error"]["code"] == -32004
    malformed = await rpc(
        http, "a2a.interrupt.permission.reply", {"request_id": "per_x", "reply": "maybe"}
    )
    assert malformed["error"]["code"] == -32602 and "reply" in malformed["error"]["message"]
    missing = await rpc(http, "a2a.interrupt.question.reply", {"request_id": "que_x"})
    assert missing["error"]["code"] == -32602 and "answers" in missing["error"]["data"]["fields"]

    events = await a2a.send("[[bash:echo malformed]]", metadata=ASK)
    asked(events)
    task_id, context = task_id_of(events), events[0].task.context_id
    with pytest.raises(InvalidParamsError, match="permission answer"):
        await a2a.send("sure, go ahead", task_id=task_id, context_id=context)
    with pytest.raises(InvalidParamsError, match="must be one of"):
        await a2a.send(parts=[data_part({"reply": "perhaps"})], task_id=task_id, context_id=context)
    # Nothing was lost: the task still waits, and a proper answer finishes it.
    assert (await a2a.get_task(task_id)).status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    follow = await a2a.send(
        parts=[data_part({"reply": "once"})], task_id=task_id, context_id=context
    )
    assert states(follow)[-1] == TaskState.TASK_STATE_COMPLETED


async def test_unanswered_ask_expires(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["A2A_INTERRUPT_REQUEST_TTL_SECONDS"] = "2"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        events = await harness.send(
            "[[bash:echo too-late]]",
            metadata={"opencode": {"directory": "ask-ttl"}},
            streaming=False,
        )
        task = events[0].task
        request_id = metadata_of(task)["shared"]["interrupt"]["request_id"]
        done = await wait_state(harness, task.id, TaskState.TASK_STATE_CANCELED, timeout=20)
        assert metadata_of(done)["opencode"]["declined"] == "expired"
        async with httpx.AsyncClient(
            base_url=adapter.url, headers={"Authorization": f"Bearer {adapter.token}"}
        ) as http:
            late = await rpc(
                http, "a2a.interrupt.permission.reply", {"request_id": request_id, "reply": "once"}
            )
        assert late["error"]["code"] == -32007
        assert late["error"]["data"]["type"] == "INTERRUPT_REQUEST_EXPIRED"
    finally:
        await harness.aclose()
        adapter.stop()


async def test_streaming_follow_up_is_the_same_task(a2a: A2AHarness) -> None:
    client = await a2a.client()
    first = [
        e async for e in client.send_message(build_request("[[bash:echo same]]", metadata=ASK))
    ]
    task_id = task_id_of(first)
    request = build_request(
        None,
        context_id=first[0].task.context_id,
        task_id=task_id,
        parts=[data_part({"reply": "once"})],
    )
    second = [e async for e in client.send_message(request)]
    assert {task_id_of([e]) for e in second} == {task_id}
    assert states(second)[-1] == TaskState.TASK_STATE_COMPLETED
