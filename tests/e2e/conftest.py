"""The real stack, shared by the end-to-end tests of one pytest worker.

Scripted model (in-process thread) -> real `opencode serve` -> adapter (real CLI process).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from opencode_a2a_server.testing.scripted_model import ScriptedModelServer
from opencode_a2a_server.testing.stack import AdapterProcess, free_port, start_opencode
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def scripted_model() -> Iterator[ScriptedModelServer]:
    server = ScriptedModelServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def workspace(stack_root: Path) -> Path:
    """The workspace root: a git repository with a subfolder and an escaping symlink."""
    root = stack_root / "workspace"
    (root / "sub").mkdir(parents=True)
    (root / "README.txt").write_text("workspace for tests\n")
    (root / "escape").symlink_to(stack_root)
    # Folders whose OpenCode config asks before bash and edits (one instance each, so
    # an "always" approval in one cannot leak into the others).
    for name in ("ask", "ask-always", "ask-sub", "ask-ttl"):
        (root / name).mkdir()
        (root / name / "opencode.json").write_text(
            json.dumps({"permission": {"bash": "ask", "edit": "ask"}})
        )
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "opencode.json").write_text(
        json.dumps(
            {
                "command": {
                    "greet": {
                        "template": "Please greet $ARGUMENTS politely.",
                        "description": "Greets someone",
                    }
                }
            }
        )
    )
    return root.resolve()


@pytest.fixture(scope="session")
async def opencode(
    stack_root: Path, workspace: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[ManagedOpenCode]:
    server = await start_opencode(stack_root / "opencode", workspace, scripted_model.url)
    yield server
    await server.stop()


def adapter_env(opencode: ManagedOpenCode, workspace: Path, db: Path) -> dict[str, str]:
    return {
        "OPENCODE_BASE_URL": opencode.base_url,
        "OPENCODE_SERVER_USERNAME": opencode.username,
        "OPENCODE_SERVER_PASSWORD": opencode.password,
        "OPENCODE_WORKSPACE_ROOT": str(workspace),
        "OPENCODE_PROVIDER_ID": "fake",
        "OPENCODE_MODEL_ID": "fake-1",
        "A2A_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "A2A_LOG_LEVEL": "DEBUG",
        "A2A_LOG_PAYLOADS": "true",
    }


@pytest.fixture(scope="session")
def adapter(
    opencode: ManagedOpenCode, workspace: Path, stack_root: Path
) -> Iterator[AdapterProcess]:
    env = adapter_env(opencode, workspace, stack_root / "adapter.db")
    env["A2A_GRPC_PORT"] = str(free_port())  # every transport, gRPC included
    process = AdapterProcess(env, log_path=stack_root / "adapter.log", cwd=stack_root)
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def a2a(adapter: AdapterProcess) -> AsyncIterator[A2AHarness]:
    harness = A2AHarness(adapter.url, adapter.token)
    yield harness
    await harness.aclose()


@pytest.fixture
async def http(adapter: AdapterProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {adapter.token}"}
    async with httpx.AsyncClient(base_url=adapter.url, headers=headers, timeout=60) as client:
        yield client
