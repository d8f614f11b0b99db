"""A turn end to end over every protocol version and transport, against real OpenCode."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState

from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import (
    COMBOS,
    A2AHarness,
    artifact_chunks,
    artifact_text,
    final_task,
    last_status,
    metadata_of,
    states,
    streamed_text,
    task_id_of,
)

pytestmark = pytest.mark.e2e

ANSWER = "Hello from fake LLM. You said: {}"


@pytest.mark.parametrize(("version", "binding"), COMBOS)
async def test_streaming_plain_turn(a2a: A2AHarness, version: str, binding: str) -> None:
    prompt = f"hello over {binding} {version}"
    events = await a2a.send(prompt, version=version, binding=binding)

    seen = states(events)
    assert seen[0] == TaskState.TASK_STATE_SUBMITTED
    assert TaskState.TASK_STATE_WORKING in seen
    assert seen[-1] == TaskState.TASK_STATE_COMPLETED
    assert streamed_text(events) == ANSWER.format(prompt)
    chunks = artifact_chunks(events, "text")
    assert len(chunks) > 1, "the answer should arrive in several chunks"
    stream_meta = metadata_of(chunks[0].artifact)["shared"]["stream"]
    assert stream_meta["message_id"].startswith("msg")
    assert stream_meta["sequence"] >= 1 and stream_meta["event_id"]

    final = metadata_of(last_status(events))["shared"]
    assert final["session"]["id"].startswith("ses")
    assert final["usage"]["input_tokens"] > 0 and final["usage"]["output_tokens"] > 0

    task = await a2a.get_task(task_id_of(events), version, binding)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(task) == ANSWER.format(prompt)
    assert metadata_of(task)["shared"]["session"]["id"] == final["session"]["id"]


@pytest.mark.parametrize(("version", "binding"), COMBOS)
async def test_non_streaming_send_returns_finished_task(
    a2a: A2AHarness, version: str, binding: str
) -> None:
    prompt = f"blocking {binding} {version}"
    events = await a2a.send(prompt, version=version, binding=binding, streaming=False)
    task = final_task(events)
    assert task is not None
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(task) == ANSWER.format(prompt)
    assert len(next(a for a in task.artifacts if a.name == "response").parts) == 1
    assert metadata_of(task)["shared"]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(("version", "binding"), COMBOS)
async def test_a_new_conversation_creates_exactly_one_session(
    a2a: A2AHarness, opencode: ManagedOpenCode, workspace: Path, version: str, binding: str
) -> None:
    # The session is created early, while the SDK sets the request up: never twice.
    prompt = f"one session {binding} {version} {uuid.uuid4().hex[:8]}"
    events = await a2a.send(prompt, version=version, binding=binding)
    session_id = metadata_of(last_status(events))["shared"]["session"]["id"]
    async with httpx.AsyncClient(auth=(opencode.username, opencode.password)) as http:
        listed = await http.get(
            f"{opencode.base_url}/session", params={"directory": str(workspace)}
        )
    titled = [s["id"] for s in listed.json() if s.get("title") == prompt]
    assert titled == [session_id]
