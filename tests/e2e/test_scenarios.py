"""Turn scenarios against the real OpenCode: reasoning, tools, sessions, models, failures."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from a2a.types.a2a_pb2 import Part, TaskState
from a2a.utils.errors import InvalidParamsError

from opencode_a2a_server.testing.scripted_model import ScriptedModelServer

from .a2a import (
    A2AHarness,
    artifact_chunks,
    artifact_text,
    build_request,
    final_task,
    last_status,
    metadata_of,
    states,
    streamed_text,
    task_id_of,
)

pytestmark = pytest.mark.e2e


def session_of(events: list) -> str:
    return metadata_of(last_status(events))["shared"]["session"]["id"]


async def test_reasoning_streams_separately_from_the_answer(a2a: A2AHarness) -> None:
    events = await a2a.send("[[reason]] think first", binding="HTTP+JSON")
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    reasoning = streamed_text(events, "reasoning")
    assert reasoning == "Thinking about it step by step."
    task = await a2a.get_task(task_id_of(events))
    answer = artifact_text(task)
    assert answer == "Hello from fake LLM. You said: think first"
    assert "Thinking" not in answer
    assert artifact_text(task, "reasoning") == reasoning


async def test_tool_call_streams_as_data_parts(a2a: A2AHarness) -> None:
    events = await a2a.send("[[bash:echo hi]] run it")
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    tool_updates = artifact_chunks(events, "tool_call")
    calls = [dict(u.artifact.parts[0].data.struct_value) for u in tool_updates]
    assert {c["tool"] for c in calls} == {"bash"}
    statuses = [c["status"] for c in calls]
    assert statuses[-1] == "completed" and "running" in statuses
    last = calls[-1]
    assert last["output"] == "hi\n" and last["call_id"]
    assert dict(last["input"])["command"] == "echo hi"
    assert tool_updates[-1].last_chunk
    # The answer spans both assistant steps, exactly as streamed.
    task = await a2a.get_task(task_id_of(events))
    assert artifact_text(task) == streamed_text(events)
    assert artifact_text(task).startswith("Running tool.")
    assert "Tool finished. Result: hi" in artifact_text(task)


async def test_context_reuses_session_and_session_id_continues_it(a2a: A2AHarness) -> None:
    context = str(uuid.uuid4())
    first = await a2a.send("first", context_id=context)
    second = await a2a.send("second", context_id=context, binding="HTTP+JSON")
    assert session_of(first) == session_of(second)

    other = await a2a.send("elsewhere", context_id=str(uuid.uuid4()))
    assert session_of(other) != session_of(first)

    continued = await a2a.send(
        "continue that one",
        context_id=str(uuid.uuid4()),
        metadata={"shared": {"session": {"id": session_of(first)}}},
    )
    assert states(continued)[-1] == TaskState.TASK_STATE_COMPLETED
    assert session_of(continued) == session_of(first)


async def test_unknown_session_id_is_refused(a2a: A2AHarness) -> None:
    with pytest.raises(InvalidParamsError, match="no session ses_doesnotexist"):
        await a2a.send("hi", metadata={"shared": {"session": {"id": "ses_doesnotexist"}}})


async def test_model_override_applies_to_one_request(
    a2a: A2AHarness, scripted_model: ScriptedModelServer
) -> None:
    run = uuid.uuid4().hex[:8]
    override, plain = f"override-{run}", f"plain-{run}"
    events = await a2a.send(
        override, metadata={"shared": {"model": {"providerID": "fake", "modelID": "fake-2"}}}
    )
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    default = await a2a.send(plain)
    assert states(default)[-1] == TaskState.TASK_STATE_COMPLETED

    def model_for(text: str) -> set[str]:
        return {
            r["body"]["model"]
            for r in scripted_model.requests
            if isinstance(r.get("body"), dict) and text in str(r["body"].get("messages", [])[-1:])
        }

    assert model_for(plain) == {"fake-1"}
    assert model_for(override) == {"fake-2"}


async def test_malformed_model_override_is_refused(a2a: A2AHarness) -> None:
    with pytest.raises(InvalidParamsError, match="providerID and modelID"):
        await a2a.send("hi", metadata={"shared": {"model": {"providerID": "fake"}}})


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON", "GRPC"])
@pytest.mark.parametrize("directory", ["/etc", "../..", "escape", "sub/../../.."])
async def test_directory_outside_workspace_is_refused(
    a2a: A2AHarness, binding: str, directory: str
) -> None:
    with pytest.raises(InvalidParamsError, match="outside the workspace root"):
        await a2a.send("hi", binding=binding, metadata={"opencode": {"directory": directory}})


async def test_directory_inside_workspace_is_used(a2a: A2AHarness, workspace) -> None:
    events = await a2a.send("[[bash:pwd]] where am I", metadata={"opencode": {"directory": "sub"}})
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    calls = [
        dict(u.artifact.parts[0].data.struct_value) for u in artifact_chunks(events, "tool_call")
    ]
    assert calls[-1]["output"].strip() == str(workspace / "sub")


async def test_data_part_is_refused_with_a_clear_error(a2a: A2AHarness) -> None:
    data_part = Part()
    data_part.data.struct_value.update({"x": 1})
    with pytest.raises(InvalidParamsError, match="data part"):
        await a2a.send(parts=[Part(text="look"), data_part])


async def test_file_part_bytes_reach_opencode(
    a2a: A2AHarness, scripted_model: ScriptedModelServer
) -> None:
    marker = f"filecontent-{uuid.uuid4().hex[:8]}"
    file_part = Part(raw=f"{marker}\n".encode(), media_type="text/plain", filename="notes.txt")
    events = await a2a.send(parts=[Part(text="read the attached notes"), file_part])
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    bodies = [str(r.get("body")) for r in scripted_model.requests]
    assert any(marker in body for body in bodies)
    assert base64.b64encode(marker.encode()).decode()[:8]  # the bytes went as a data: URL


@pytest.mark.parametrize(
    ("version", "binding"),
    [("1.0", "JSONRPC"), ("0.3", "HTTP+JSON"), ("1.0", "GRPC"), ("0.3", "GRPC")],
)
async def test_cancel_mid_stream(a2a: A2AHarness, version: str, binding: str) -> None:
    client = await a2a.client(version, binding)
    request = build_request("[[slow:40:0.1]] long story")
    seen: list = []
    task_id = None
    async for event in client.send_message(request):
        seen.append(event)
        if task_id is None and artifact_chunks([event], "text"):
            task_id = task_id_of(seen)
            canceled = await a2a.cancel(task_id, version, binding)
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    assert task_id is not None
    assert states(seen)[-1] == TaskState.TASK_STATE_CANCELED
    stored = await a2a.get_task(task_id, version, binding)
    assert stored.status.state == TaskState.TASK_STATE_CANCELED
    # Idempotent: cancelling again returns the canceled task.
    again = await a2a.cancel(task_id, version, binding)
    assert again.status.state == TaskState.TASK_STATE_CANCELED
    await asyncio.sleep(1.0)
    assert (await a2a.get_task(task_id)).status.state == TaskState.TASK_STATE_CANCELED
    # The session is usable again afterwards.
    after = await a2a.send("after cancel")
    assert states(after)[-1] == TaskState.TASK_STATE_COMPLETED


async def test_provider_401_ends_auth_required(a2a: A2AHarness) -> None:
    events = await a2a.send("[[error:401]] secret stuff")
    status = last_status(events)
    assert status.status.state == TaskState.TASK_STATE_AUTH_REQUIRED
    text = "".join(p.text for p in status.status.message.parts)
    assert "Incorrect API key provided" in text
    assert metadata_of(status)["opencode"]["error"]["type"] == "UPSTREAM_UNAUTHORIZED"


async def test_non_streaming_failure_returns_task_with_reason(a2a: A2AHarness) -> None:
    events = await a2a.send("[[error:401]] blocking", streaming=False)
    task = final_task(events)
    assert task is not None and task.status.state == TaskState.TASK_STATE_AUTH_REQUIRED
    assert "Incorrect API key" in "".join(p.text for p in task.status.message.parts)


async def test_provider_retry_is_reported_then_the_turn_completes(a2a: A2AHarness) -> None:
    marker = uuid.uuid4().hex[:8]
    events = await a2a.send(f"[[error_once:500]] flaky {marker}")
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    retries = [
        e.status_update
        for e in events
        if e.HasField("status_update")
        and "retry" in metadata_of(e.status_update).get("opencode", {})
    ]
    assert retries, "the retry should be reported while OpenCode backs off"
    assert "Internal server error (fake)" in retries[0].status.message.parts[0].text
    task = await a2a.get_task(task_id_of(events))
    assert artifact_text(task) == f"Hello from fake LLM. You said: flaky {marker}"
