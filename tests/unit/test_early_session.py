"""A new conversation's session is created during the request's set-up, and never twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import Message, Part, Role

from opencode_a2a_server.execution import executor as executor_module
from opencode_a2a_server.execution.executor import ExecutorOptions, OpenCodeExecutor


class FakeClient:
    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []
        self.deleted: list[str] = []

    async def create_session(self, directory: str, title: str) -> dict[str, Any]:
        self.created.append((directory, title))
        return {"id": f"ses_{len(self.created):08d}abcdef", "title": title}

    async def request(self, method: str, path: str, **kwargs: Any) -> None:
        assert method == "DELETE"
        self.deleted.append(path)


class FakeBindings:
    def __init__(self) -> None:
        self.bound: list[tuple[str, ...]] = []

    async def bind(self, *args: str) -> None:
        self.bound.append(args)


def executor(tmp_path: Path) -> tuple[OpenCodeExecutor, FakeClient, FakeBindings]:
    client, bindings = FakeClient(), FakeBindings()
    ex = OpenCodeExecutor(
        client=client,  # type: ignore[arg-type]
        hub=None,  # type: ignore[arg-type]
        bindings=bindings,  # type: ignore[arg-type]
        interrupts=None,  # type: ignore[arg-type]
        options=ExecutorOptions(workspace_root=tmp_path),
    )
    return ex, client, bindings


def message(**ids: str) -> Message:
    return Message(message_id="m-1", role=Role.ROLE_USER, parts=[Part(text="hello")], **ids)


async def test_the_turn_takes_the_early_session(tmp_path: Path) -> None:
    ex, client, bindings = executor(tmp_path)
    msg = message()
    plan = await ex.plan(msg, {}, "alice")
    ex.start_session_early(msg, plan)
    request = await ex._turn_request(plan, "alice", "ctx-1", new_context=True, message_id="m-1")
    assert client.created == [(str(tmp_path), "hello")]
    assert request.session_id == "ses_00000001abcdef"
    await ex._binding_written("alice", "ctx-1", str(tmp_path))
    assert bindings.bound == [("alice", "ctx-1", str(tmp_path), request.session_id, "hello")]


@pytest.mark.parametrize("ids", [{"context_id": "ctx-9"}, {"task_id": "task-9"}])
async def test_only_a_new_conversation_starts_early(tmp_path: Path, ids: dict) -> None:
    ex, client, _ = executor(tmp_path)
    msg = message(**ids)
    ex.start_session_early(msg, await ex.plan(msg, {}, "alice"))
    await asyncio.sleep(0)
    assert client.created == []


async def test_an_early_session_no_turn_takes_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "EARLY_SESSION_TTL", 0.05)
    ex, client, _ = executor(tmp_path)
    msg = message()
    ex.start_session_early(msg, await ex.plan(msg, {}, "alice"))
    for _ in range(50):
        if client.deleted:
            break
        await asyncio.sleep(0.02)
    assert client.deleted == ["/session/ses_00000001abcdef"]
    # A late turn for that message creates a session of its own.
    plan = await ex.plan(msg, {}, "alice")
    request = await ex._turn_request(plan, "alice", "ctx-1", new_context=True, message_id="m-1")
    assert request.session_id == "ses_00000002abcdef"
