"""Every turn that changes files returns a `changes` artifact (git workspace)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState
from google.protobuf import json_format

from opencode_a2a_server.testing.stack import AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_chunks, metadata_of, states, task_id_of
from .conftest import adapter_env

pytestmark = pytest.mark.e2e

REPO = "changes-repo"
WHERE = {"opencode": {"directory": REPO}}


@pytest.fixture(scope="module")
def repo(workspace: Path) -> Path:
    path = workspace / REPO
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "keep.txt").write_text("one\ntwo\nthree\n")
    (path / "doomed.txt").write_text("bye\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return path


def tool(name: str, **args: Any) -> str:
    return f"[[tool:{name}:{json.dumps(args)}]]"


def changes_of(task: Any) -> tuple[str, list[dict[str, Any]], list[Any]] | None:
    for artifact in task.artifacts:
        if artifact.name == "changes":
            diff = artifact.parts[0]
            assert diff.media_type == "text/x-diff"
            files = json_format.MessageToDict(artifact.parts[1].data)["files"]
            return diff.text, files, list(artifact.parts[2:])
    return None


async def test_new_file(a2a: A2AHarness, repo: Path) -> None:
    events = await a2a.send(
        tool("write", filePath=str(repo / "new.txt"), content="a\nb\n"), metadata=WHERE
    )
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    task = await a2a.get_task(task_id_of(events))
    diff, files, attached = changes_of(task)  # type: ignore[misc]
    assert files == [{"path": "new.txt", "status": "added", "additions": 2, "deletions": 0}]
    assert "+a\n+b\n" in diff and attached == []
    # The stream told about the file as soon as the write finished.
    notices = [
        json_format.MessageToDict(u.artifact.parts[0].data)
        for u in artifact_chunks(events, "tool_call")
        if "files" in json_format.MessageToDict(u.artifact.parts[0].data)
    ]
    assert notices[0]["files"][0]["path"].endswith("new.txt")
    assert notices[0]["files"][0]["additions"] == 2
    changes_index = next(
        i
        for i, e in enumerate(events)
        if e.HasField("artifact_update") and e.artifact_update.artifact.name == "changes"
    )
    assert changes_index < len(events) - 1  # before the final status


async def test_edit_and_delete(a2a: A2AHarness, repo: Path) -> None:
    edit = tool("edit", filePath=str(repo / "keep.txt"), oldString="two", newString="TWO\nextra")
    events = await a2a.send(edit, metadata=WHERE)
    task = await a2a.get_task(task_id_of(events))
    _, files, _ = changes_of(task)  # type: ignore[misc]
    assert files == [{"path": "keep.txt", "status": "modified", "additions": 2, "deletions": 1}]
    notice = next(
        json_format.MessageToDict(u.artifact.parts[0].data)
        for u in artifact_chunks(events, "tool_call")
        if "files" in json_format.MessageToDict(u.artifact.parts[0].data)
    )["files"][0]
    assert (notice["additions"], notice["deletions"]) == (2, 1)

    events = await a2a.send(f"[[bash:rm {repo / 'doomed.txt'}]]", metadata=WHERE)
    task = await a2a.get_task(task_id_of(events))
    _, files, _ = changes_of(task)  # type: ignore[misc]
    assert files == [{"path": "doomed.txt", "status": "deleted", "additions": 0, "deletions": 1}]


async def test_turn_without_changes_has_no_changes_artifact(a2a: A2AHarness, repo: Path) -> None:
    events = await a2a.send("just talk", metadata=WHERE)
    task = await a2a.get_task(task_id_of(events))
    assert changes_of(task) is None
    events = await a2a.send(tool("read", filePath=str(repo / "keep.txt")), metadata=WHERE)
    assert changes_of(await a2a.get_task(task_id_of(events))) is None


async def test_include_files_with_caps(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode, repo: Path
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["A2A_CHANGES_MAX_FILE_BYTES"] = "100"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    try:
        small = tool("write", filePath=str(repo / "small.txt"), content="tiny\n")
        big = tool("write", filePath=str(repo / "big.txt"), content="x" * 500 + "\n")
        events = await harness.send(
            f"{small} {big}", metadata={"opencode": {"directory": REPO, "include_files": True}}
        )
        task = await harness.get_task(task_id_of(events))
        _, files, attached = changes_of(task)  # type: ignore[misc]
        by_path = {f["path"]: f for f in files}
        assert by_path["small.txt"]["attached"] is True
        assert by_path["big.txt"]["attached"] is False
        assert "per-file cap" in by_path["big.txt"]["reason"]
        assert [(p.filename, p.raw) for p in attached] == [("small.txt", b"tiny\n")]
    finally:
        await harness.aclose()
        adapter.stop()


async def test_revert_one_task(a2a: A2AHarness, http: httpx.AsyncClient, repo: Path) -> None:
    events = await a2a.send(
        tool("write", filePath=str(repo / "undo-me.txt"), content="z\n"), metadata=WHERE
    )
    task_id = task_id_of(events)
    assert (repo / "undo-me.txt").exists()
    response = await http.post(
        "/",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "opencode.sessions.revert",
            "params": {"task_id": task_id},
        },
    )
    result = response.json()["result"]
    assert result["restored"] == [{"path": "undo-me.txt", "status": "added"}]
    assert not (repo / "undo-me.txt").exists()
    meta = metadata_of(await a2a.get_task(task_id))
    assert (
        meta["opencode"]["message_id"]
        == result["item"]["metadata"]["opencode"]["revert"]["messageID"]
    )

    missing = await http.post(
        "/",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "opencode.sessions.revert",
            "params": {"task_id": "nope"},
        },
    )
    assert missing.json()["error"]["code"] == -32602
