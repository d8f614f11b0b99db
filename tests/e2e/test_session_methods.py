"""Session extension methods against the real OpenCode."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState

from opencode_a2a_server.testing.stack import AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_text, last_status, metadata_of, states
from .conftest import adapter_env

pytestmark = pytest.mark.e2e


async def call(http: httpx.AsyncClient, method: str, params: dict[str, Any] | None = None) -> dict:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    response = await http.post("/", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def result(http: httpx.AsyncClient, method: str, params: dict[str, Any] | None = None) -> Any:
    answer = await call(http, method, params)
    assert "result" in answer, answer
    return answer["result"]


async def new_session(a2a: A2AHarness, text: str = "start a session") -> str:
    events = await a2a.send(text, context_id=str(uuid.uuid4()))
    return metadata_of(last_status(events))["shared"]["session"]["id"]


async def wait_task(a2a: A2AHarness, task_id: str, timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        task = await a2a.get_task(task_id)
        if task.status.state in (
            TaskState.TASK_STATE_COMPLETED,
            TaskState.TASK_STATE_FAILED,
            TaskState.TASK_STATE_CANCELED,
            TaskState.TASK_STATE_INPUT_REQUIRED,
        ):
            return task
        await asyncio.sleep(0.2)
    raise AssertionError("task did not settle")


async def test_list_get_and_history(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex[:8]
    session_id = await new_session(a2a, f"history {marker}")
    listed = await result(http, "opencode.sessions.list", {"search": f"history {marker}"})
    assert [i["id"] for i in listed["items"]] == [session_id]
    item = listed["items"][0]
    assert item["status"]["state"] == "TASK_STATE_COMPLETED"
    assert item["metadata"]["shared"]["session"] == {"id": session_id, "title": f"history {marker}"}

    got = await result(http, "opencode.sessions.get", {"session_id": session_id})
    assert got["item"]["id"] == session_id

    history = await result(http, "opencode.sessions.messages.list", {"session_id": session_id})
    roles = [m["role"] for m in history["items"]]
    assert roles == ["ROLE_USER", "ROLE_AGENT"]
    assert history["items"][0]["parts"][0]["text"] == f"history {marker}"
    assert history["items"][1]["parts"][0]["text"].endswith(f"history {marker}")
    assert history["next_cursor"] is None


async def test_pagination(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = [await new_session(a2a, f"page {marker} {i}") for i in range(3)]
    first = await result(http, "opencode.sessions.list", {"search": f"page {marker}", "limit": 2})
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = await result(
        http,
        "opencode.sessions.list",
        {"search": f"page {marker}", "limit": 2, "cursor": first["next_cursor"]},
    )
    assert second["next_cursor"] is None
    assert sorted(i["id"] for i in first["items"] + second["items"]) == sorted(ids)

    session_id = ids[0]
    for i in range(2):
        await a2a.send(f"more {i}", metadata={"shared": {"session": {"id": session_id}}})
    page = await result(
        http, "opencode.sessions.messages.list", {"session_id": session_id, "limit": 2}
    )
    assert len(page["items"]) == 2 and page["next_cursor"]
    older = await result(
        http,
        "opencode.sessions.messages.list",
        {"session_id": session_id, "limit": 2, "before": page["next_cursor"]},
    )
    assert older["items"][0]["parts"][0]["text"] == "more 0"

    bad = await call(http, "opencode.sessions.list", {"limit": 101})
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["fields"] == ["limit"]
    bad = await call(http, "opencode.sessions.list", {"cursor": "garbage!"})
    assert bad["error"]["code"] == -32602
    bad = await call(http, "opencode.sessions.list", {"page": 2})
    assert bad["error"]["code"] == -32602


async def test_prompt_async_is_a_task(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    session_id = await new_session(a2a)
    started = await result(
        http,
        "opencode.sessions.prompt_async",
        {"session_id": session_id, "request": {"parts": [{"type": "text", "text": "async hello"}]}},
    )
    assert started["ok"] is True and started["session_id"] == session_id
    task = await wait_task(a2a, started["task_id"])
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(task) == "Hello from fake LLM. You said: async hello"


async def test_prompt_async_turn_can_ask_for_input(
    a2a: A2AHarness, http: httpx.AsyncClient
) -> None:
    events = await a2a.send("set up", metadata={"opencode": {"directory": "ask"}})
    session_id = metadata_of(last_status(events))["shared"]["session"]["id"]
    started = await result(
        http,
        "opencode.sessions.prompt_async",
        {
            "session_id": session_id,
            "request": {"parts": [{"type": "text", "text": "[[bash:echo via-method]]"}]},
        },
    )
    task = await wait_task(a2a, started["task_id"])
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    request_id = metadata_of(task)["shared"]["interrupt"]["request_id"]
    await result(
        http, "a2a.interrupt.permission.reply", {"request_id": request_id, "reply": "once"}
    )
    for _ in range(100):
        task = await a2a.get_task(started["task_id"])
        if task.status.state == TaskState.TASK_STATE_COMPLETED:
            break
        await asyncio.sleep(0.2)
    assert "Tool finished. Result: via-method" in artifact_text(task)


async def test_command_runs_as_a_task(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    session_id = await new_session(a2a)
    started = await result(
        http,
        "opencode.sessions.command",
        {"session_id": session_id, "request": {"command": "greet", "arguments": "Bob"}},
    )
    task = await wait_task(a2a, started["task_id"])
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status
    assert artifact_text(task) == "Hello from fake LLM. You said: Please greet Bob politely."

    unknown = await call(
        http,
        "opencode.sessions.command",
        {"session_id": session_id, "request": {"command": "nope", "arguments": ""}},
    )
    assert unknown["error"]["code"] == -32602 and "greet" in unknown["error"]["message"]


async def test_command_through_a2a_metadata(a2a: A2AHarness) -> None:
    events = await a2a.send("Alice", metadata={"opencode": {"command": {"name": "greet"}}})
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(await a2a.get_task(events[0].task.id)).endswith(
        "Please greet Alice politely."
    )


async def test_abort_stops_a_running_turn(a2a: A2AHarness, http: httpx.AsyncClient) -> None:
    session_id = await new_session(a2a)
    started = await result(
        http,
        "opencode.sessions.prompt_async",
        {
            "session_id": session_id,
            "request": {"parts": [{"type": "text", "text": "[[slow:50:0.1]]"}]},
        },
    )
    await asyncio.sleep(1.0)
    aborted = await result(http, "opencode.sessions.abort", {"session_id": session_id})
    assert aborted == {"ok": True, "session_id": session_id}
    task = await wait_task(a2a, started["task_id"])
    assert task.status.state == TaskState.TASK_STATE_CANCELED


async def test_session_errors(http: httpx.AsyncClient) -> None:
    missing = await call(http, "opencode.sessions.get", {"session_id": "ses_doesnotexist"})
    assert missing["error"]["code"] == -32001
    assert missing["error"]["data"] == {
        "type": "SESSION_NOT_FOUND",
        "session_id": "ses_doesnotexist",
    }
    invalid = await call(http, "opencode.sessions.get", {"session_id": "nope"})
    assert invalid["error"]["code"] == -32602
    outside = await call(http, "opencode.sessions.list", {"directory": "/etc"})
    assert (
        outside["error"]["code"] == -32602
        and "outside the workspace root" in outside["error"]["message"]
    )
    disabled = await call(
        http, "opencode.sessions.shell", {"session_id": "ses_x", "request": {"command": "ls"}}
    )
    assert disabled["error"]["code"] == -32011
    assert disabled["error"]["data"]["toggle"] == "A2A_ENABLE_SESSION_SHELL"


async def test_session_of_another_caller_is_forbidden(
    a2a: A2AHarness, http: httpx.AsyncClient, adapter: AdapterProcess
) -> None:
    session_id = await new_session(a2a)
    # Hand the session to another principal in the adapter's own database.
    import sqlite3

    db = adapter.env["A2A_DATABASE_URL"].split(":///", 1)[1]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE session_owners SET owner='someone-else' WHERE session_id=?", (session_id,)
        )
    forbidden = await call(http, "opencode.sessions.abort", {"session_id": session_id})
    assert forbidden["error"]["code"] == -32006
    assert forbidden["error"]["data"]["type"] == "SESSION_FORBIDDEN"
    listed = await result(http, "opencode.sessions.list", {"limit": 100})
    assert session_id not in [i["id"] for i in listed["items"]]


@pytest.fixture(scope="module")
def git_workspace(workspace: Path) -> Path:
    repo = workspace / "git-work"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return repo


async def test_diff_revert_unrevert(
    a2a: A2AHarness, http: httpx.AsyncClient, git_workspace: Path
) -> None:
    prompt = '[[tool:write:{"filePath":"%s","content":"hello\\n"}]]' % (git_workspace / "new.txt")
    events = await a2a.send(prompt, metadata={"opencode": {"directory": "git-work"}})
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    assert (git_workspace / "new.txt").read_text() == "hello\n"
    session_id = metadata_of(last_status(events))["shared"]["session"]["id"]

    diff = await result(http, "opencode.sessions.diff", {"session_id": session_id})
    assert [d["file"] for d in diff["items"]] == ["new.txt"]

    history = await result(http, "opencode.sessions.messages.list", {"session_id": session_id})
    user_message = next(m for m in history["items"] if m["role"] == "ROLE_USER")["messageId"]
    reverted = await result(
        http, "opencode.sessions.revert", {"session_id": session_id, "message_id": user_message}
    )
    assert reverted["item"]["metadata"]["opencode"]["revert"]["messageID"] == user_message
    assert not (git_workspace / "new.txt").exists()
    restored = await result(http, "opencode.sessions.unrevert", {"session_id": session_id})
    assert "revert" not in restored["item"]["metadata"]["opencode"]
    assert (git_workspace / "new.txt").read_text() == "hello\n"


async def test_shell_when_enabled(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode, a2a: A2AHarness
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["A2A_ENABLE_SESSION_SHELL"] = "true"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        session_id = await new_session(harness)
        async with httpx.AsyncClient(
            base_url=adapter.url, headers={"Authorization": f"Bearer {adapter.token}"}, timeout=60
        ) as http:
            shell = await result(
                http,
                "opencode.sessions.shell",
                {"session_id": session_id, "request": {"command": "echo from-shell"}},
            )
            tool = shell["item"]["parts"][0]["data"]
            assert tool["tool"] == "bash" and tool["output"] == "from-shell\n"
            card = (await http.get("/.well-known/agent-card.json")).json()
            methods = [
                m
                for e in card["capabilities"]["extensions"]
                for m in e.get("params", {}).get("methods", [])
            ]
            assert "opencode.sessions.shell" in methods
    finally:
        await harness.aclose()
        adapter.stop()
