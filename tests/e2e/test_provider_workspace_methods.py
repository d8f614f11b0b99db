"""Discovery and workspace-control methods against the real OpenCode."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencode_a2a_server.testing.stack import AdapterProcess
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .conftest import adapter_env

pytestmark = pytest.mark.e2e

TOGGLE = "A2A_ENABLE_WORKSPACE_MUTATIONS"
WORKSPACE_URI = "urn:opencode-a2a:extension:workspace-control:v1"
DISCOVERY_URI = "urn:opencode-a2a:extension:provider-discovery:v1"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=e2e@example.com", "-c", "user.name=e2e", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def wt_repo(workspace: Path) -> Path:
    """A git repository with one commit (worktrees need one) inside the workspace root."""
    repo = workspace / "wt-repo"
    repo.mkdir(exist_ok=True)
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "init")
    return repo


@pytest.fixture(scope="module")
def mutating_adapter(
    opencode: ManagedOpenCode, workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    root = tmp_path_factory.mktemp("mutating-adapter")
    env = {**adapter_env(opencode, workspace, root / "a.db"), TOGGLE: "true"}
    process = AdapterProcess(env, log_path=root / "adapter.log", cwd=root).start()
    yield process
    process.stop()


@pytest.fixture
async def mhttp(mutating_adapter: AdapterProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {mutating_adapter.token}"}
    async with httpx.AsyncClient(
        base_url=mutating_adapter.url, headers=headers, timeout=60
    ) as client:
        yield client


async def rpc(http: httpx.AsyncClient, method: str, params: dict[str, Any] | None = None) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    response = await http.post("/", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def result(http: httpx.AsyncClient, method: str, params: dict[str, Any] | None = None) -> Any:
    answer = await rpc(http, method, params)
    assert "result" in answer, answer
    return answer["result"]


async def error(http: httpx.AsyncClient, method: str, params: dict[str, Any] | None = None) -> Any:
    answer = await rpc(http, method, params)
    assert "error" in answer, answer
    return answer["error"]


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# -- discovery -----------------------------------------------------------------------------


async def test_providers_list_shows_the_configured_provider(http: httpx.AsyncClient) -> None:
    found = await result(http, "opencode.providers.list")
    fake = next(p for p in found["items"] if p["provider_id"] == "fake")
    assert fake["name"] == "Fake"
    assert fake["source"] == "config"
    assert fake["connected"] is True
    assert fake["model_count"] == 2
    assert fake["default_model_id"] in ("fake-1", "fake-2")
    assert found["default_by_provider"]["fake"] == fake["default_model_id"]
    assert "fake" in found["connected"]
    # Only loaded providers, not OpenCode's bundled catalog of ~226.
    assert len(found["items"]) < 20
    assert {p["provider_id"] for p in found["items"]} == set(found["connected"])


async def test_models_list_with_and_without_a_provider_filter(http: httpx.AsyncClient) -> None:
    fake = await result(http, "opencode.models.list", {"provider_id": "fake"})
    assert [m["model_id"] for m in fake["items"]] == ["fake-1", "fake-2"]
    assert [m["name"] for m in fake["items"]] == ["Fake 1", "Fake 2"]
    assert sum(m["default"] for m in fake["items"]) == 1
    assert all(m["connected"] and m["supports_tool_call"] for m in fake["items"])
    assert all("context_window" not in m for m in fake["items"])  # OpenCode says 0: unknown

    everything = await result(http, "opencode.models.list")
    assert {m["provider_id"] for m in everything["items"]} >= {"fake"}
    assert len(everything["items"]) >= 2


async def test_models_list_refuses_an_unknown_provider(http: httpx.AsyncClient) -> None:
    failure = await error(http, "opencode.models.list", {"provider_id": "nope"})
    assert failure["code"] == -32602
    assert "Unknown provider_id 'nope'" in failure["message"]
    assert "fake" in failure["message"]
    assert failure["data"]["fields"] == ["provider_id"]


async def test_agents_and_commands(http: httpx.AsyncClient, workspace: Path) -> None:
    agents = {a["name"]: a for a in (await result(http, "opencode.agents.list"))["items"]}
    assert agents["build"]["mode"] == "primary" and agents["build"]["hidden"] is False
    assert agents["plan"]["mode"] == "primary"
    assert agents["title"]["hidden"] is True  # hidden agents are listed, and say so

    found = await result(http, "opencode.commands.list", {"directory": str(workspace / "sub")})
    commands = {c["name"]: c for c in found["items"]}
    assert "init" in commands
    assert commands["init"]["template"]


# -- projects and worktrees ----------------------------------------------------------------


async def test_projects(http: httpx.AsyncClient, wt_repo: Path) -> None:
    current = (await result(http, "opencode.projects.current", {"directory": str(wt_repo)}))["item"]
    assert current["vcs"] == "git"
    assert current["worktree"] == str(wt_repo)
    assert current["id"] == git(wt_repo, "rev-list", "--max-parents=0", "HEAD")

    projects = (await result(http, "opencode.projects.list"))["items"]
    assert current["id"] in {p["id"] for p in projects}


async def test_worktree_lifecycle(mhttp: httpx.AsyncClient, wt_repo: Path) -> None:
    where = {"directory": "wt-repo"}  # relative to the workspace root
    before = (await result(mhttp, "opencode.worktrees.list", where))["items"]

    item = (await result(mhttp, "opencode.worktrees.create", {**where, "name": "e2e tree"}))["item"]
    assert item["name"] == "e2e-tree"  # OpenCode slugs the name
    assert item["branch"] == "opencode/e2e-tree"
    tree = Path(item["directory"])
    # OpenCode answers before the checkout is done; it fills the folder in the background.
    await until(lambda: (tree / "a.txt").exists())
    assert (tree / "a.txt").read_text() == "a\n"
    assert not tree.is_relative_to(wt_repo)  # OpenCode keeps worktrees in its data folder
    listed = (await result(mhttp, "opencode.worktrees.list", where))["items"]
    assert listed == [*before, str(tree)]

    # Reset drops the branch's own commits and changes.
    (tree / "b.txt").write_text("scratch\n")
    git(tree, "add", "b.txt")
    git(tree, "commit", "-q", "-m", "wip")
    reset = await result(mhttp, "opencode.worktrees.reset", {**where, "worktree": str(tree)})
    assert reset == {"ok": True}
    assert not (tree / "b.txt").exists()
    assert git(tree, "rev-parse", "HEAD") == git(wt_repo, "rev-parse", "HEAD")

    removed = await result(mhttp, "opencode.worktrees.remove", {**where, "worktree": str(tree)})
    assert removed == {"ok": True}
    await until(lambda: not tree.exists())
    assert (await result(mhttp, "opencode.worktrees.list", where))["items"] == before

    # OpenCode itself answers `true` to removing a path it does not know; we refuse.
    for stray in (str(tree), str(wt_repo), "/tmp"):
        for method in ("opencode.worktrees.remove", "opencode.worktrees.reset"):
            failure = await error(mhttp, method, {**where, "worktree": stray})
            assert failure["code"] == -32602
            assert failure["data"]["fields"] == ["worktree"]


async def test_worktree_create_without_a_commit_is_an_upstream_error(
    mhttp: httpx.AsyncClient, workspace: Path
) -> None:
    failure = await error(mhttp, "opencode.worktrees.create", {"directory": str(workspace)})
    assert failure["code"] == -32003
    assert failure["data"]["upstream_status"] == 400


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("opencode.worktrees.create", {}),
        ("opencode.worktrees.remove", {"worktree": "/tmp/x"}),
        ("opencode.worktrees.reset", {"worktree": "/tmp/x"}),
    ],
)
async def test_mutations_are_disabled_by_default(
    http: httpx.AsyncClient, method: str, params: dict[str, Any]
) -> None:
    failure = await error(http, method, params)
    assert failure["code"] == -32011
    assert failure["data"]["type"] == "METHOD_DISABLED"
    assert failure["data"]["toggle"] == TOGGLE


async def test_card_declares_both_extensions(adapter: AdapterProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        card = (await client.get(f"{adapter.url}/.well-known/agent-card.json")).json()
    extensions = {e["uri"]: e for e in card["capabilities"]["extensions"]}
    assert "opencode.models.list" in extensions[DISCOVERY_URI]["params"]["methods"]
    workspace_ext = extensions[WORKSPACE_URI]["params"]
    assert "opencode.worktrees.list" in workspace_ext["methods"]
    assert set(workspace_ext["disabled_methods"]) == {
        "opencode.worktrees.create",
        "opencode.worktrees.remove",
        "opencode.worktrees.reset",
    }


DIRECTORY_METHODS = [
    ("opencode.providers.list", {}),
    ("opencode.models.list", {}),
    ("opencode.agents.list", {}),
    ("opencode.commands.list", {}),
    ("opencode.projects.current", {}),
    ("opencode.worktrees.list", {}),
    ("opencode.worktrees.create", {}),
    ("opencode.worktrees.remove", {"worktree": "/tmp/x"}),
    ("opencode.worktrees.reset", {"worktree": "/tmp/x"}),
]


async def test_directories_outside_the_root_are_refused(
    mhttp: httpx.AsyncClient, workspace: Path
) -> None:
    for outside in (str(workspace.parent), "escape", "../"):
        for method, params in DIRECTORY_METHODS:
            failure = await error(mhttp, method, {**params, "directory": outside})
            assert failure["code"] == -32602, (method, outside, failure)
            assert "outside the workspace root" in failure["message"]


async def test_unknown_fields_are_refused(mhttp: httpx.AsyncClient) -> None:
    methods = [*DIRECTORY_METHODS, ("opencode.projects.list", {})]
    for method, params in methods:
        failure = await error(mhttp, method, {**params, "workspace": "x"})
        assert failure["code"] == -32602, (method, failure)
        assert "workspace" in failure["data"]["fields"]
