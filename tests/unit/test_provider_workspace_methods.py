"""Discovery and workspace-control methods against a mocked OpenCode (payloads recorded from 1.18.33)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opencode_a2a_server.errors import InvalidParams, InvalidRequest, UpstreamPayloadError
from opencode_a2a_server.execution.directories import DirectoryPolicy
from opencode_a2a_server.extensions.providers import provider_methods
from opencode_a2a_server.extensions.registry import CallContext, Method, Registry
from opencode_a2a_server.extensions.router import JsonRpcRouter
from opencode_a2a_server.extensions.workspace import match_worktree, workspace_methods
from opencode_a2a_server.upstream.client import OpenCodeClient

from .fake_upstream import Call, FakeUpstream
from .fake_upstream import Route as UpstreamRoute

CTX = CallContext(principal="alice")
WT = "/srv/oc/data/opencode/worktree/76791f88463c2c0e0fdef8da9522dbfb3cef9ab9"

# -- recorded upstream payloads (trimmed) ------------------------------------------------


def _caps(*, reasoning: bool, attachment: bool = False, interleaved: Any = False) -> dict:
    io = {"text": True, "audio": False, "image": False, "video": False, "pdf": False}
    return {
        "temperature": reasoning,
        "reasoning": reasoning,
        "attachment": attachment,
        "toolcall": True,
        "input": io,
        "output": io,
        "interleaved": interleaved,
    }


def _fake_model(model_id: str, name: str) -> dict:
    return {
        "id": model_id,
        "providerID": "fake",
        "api": {"id": model_id, "url": "", "npm": "@ai-sdk/openai-compatible"},
        "name": name,
        "family": "",
        "capabilities": _caps(reasoning=False),
        "cost": {"input": 0, "output": 0, "cache": {"read": 0, "write": 0}},
        "limit": {"context": 0, "output": 0},
        "status": "active",
        "options": {},
        "headers": {},
        "release_date": "",
        "variants": {},
    }


# GET /config/providers: the built-in free "OpenCode Zen" provider (2 of its 8 models)
# and the scripted `fake` provider from opencode.json.
CONFIG_PROVIDERS = {
    "providers": [
        {
            "id": "opencode",
            "name": "OpenCode Zen",
            "source": "custom",
            "env": ["OPENCODE_API_KEY"],
            "options": {"apiKey": "public"},
            "models": {
                "ling-3.0-flash-fin-free": {
                    "id": "ling-3.0-flash-fin-free",
                    "providerID": "opencode",
                    "api": {
                        "id": "ling-3.0-flash-fin-free",
                        "url": "https://opencode.ai/zen/v1",
                        "npm": "@ai-sdk/openai-compatible",
                    },
                    "name": "Ling 3.0 Flash Fin Free",
                    "family": "ling",
                    "capabilities": _caps(reasoning=True),
                    "cost": {"input": 0, "output": 0, "cache": {"read": 0, "write": 0}},
                    "limit": {"context": 262144, "output": 32768},
                    "status": "active",
                    "options": {},
                    "headers": {},
                    "release_date": "2026-08-27",
                    "variants": {"low": {"reasoningEffort": "low"}},
                },
                "big-pickle": {
                    "id": "big-pickle",
                    "providerID": "opencode",
                    "api": {
                        "id": "big-pickle",
                        "url": "https://opencode.ai/zen/v1",
                        "npm": "@ai-sdk/openai-compatible",
                    },
                    "name": "Big Pickle",
                    "family": "big-pickle",
                    "capabilities": _caps(
                        reasoning=True, interleaved={"field": "reasoning_content"}
                    ),
                    "cost": {"input": 0, "output": 0, "cache": {"read": 0, "write": 0}},
                    "limit": {"context": 200000, "input": 160000, "output": 32000},
                    "status": "active",
                    "options": {},
                    "headers": {},
                    "release_date": "2025-10-17",
                    "variants": {},
                },
            },
        },
        {
            "id": "fake",
            "name": "Fake",
            "source": "config",
            "env": [],
            "options": {"baseURL": "http://127.0.0.1:34587/v1", "apiKey": "x"},
            "models": {
                "fake-1": _fake_model("fake-1", "Fake 1"),
                "fake-2": _fake_model("fake-2", "Fake 2"),
            },
        },
    ],
    # OpenCode's own pick per provider: not the configured `model` (fake/fake-1).
    "default": {"opencode": "big-pickle", "fake": "fake-2"},
}

PERMISSION = [
    {"permission": "*", "pattern": "*", "action": "allow"},
    {"permission": "doom_loop", "pattern": "*", "action": "ask"},
]
AGENTS = [
    {
        "name": "build",
        "description": "The default agent. Executes tools based on configured permissions.",
        "mode": "primary",
        "native": True,
        "permission": PERMISSION,
        "options": {},
    },
    {
        "name": "compaction",
        "mode": "primary",
        "native": True,
        "hidden": True,
        "permission": PERMISSION,
        "options": {},
    },
    {
        "name": "plan",
        "description": "Plan mode. Disallows all edit tools.",
        "mode": "primary",
        "native": True,
        "permission": PERMISSION,
        "options": {},
    },
    # An agent from opencode.json: OpenCode fills the unset fields with null.
    {
        "name": "reviewer",
        "description": "Reviews",
        "mode": "subagent",
        "native": False,
        "hidden": None,
        "topP": None,
        "temperature": None,
        "color": None,
        "variant": None,
        "permission": PERMISSION,
        "options": {},
        "steps": None,
        "prompt": "review",
    },
    {
        "name": "title",
        "mode": "primary",
        "native": True,
        "hidden": True,
        "temperature": 0.5,
        "permission": PERMISSION,
        "options": {},
    },
]
COMMANDS = [
    {
        "name": "init",
        "description": "guided AGENTS.md setup",
        "source": "command",
        "template": "Create or update `AGENTS.md` for this repository.\n\n$ARGUMENTS\n",
        "hints": ["$ARGUMENTS"],
    },
    {
        "name": "review",
        "description": "review changes [commit|branch|pr], defaults to uncommitted",
        "source": "command",
        "template": "You are a code reviewer. $ARGUMENTS",
        "subtask": True,
        "hints": ["$ARGUMENTS"],
    },
    {
        "name": "greet",
        "description": "greets",
        "agent": None,
        "model": None,
        "source": "command",
        "subtask": None,
        "template": "Say hi to $ARGUMENTS",
        "hints": ["$ARGUMENTS"],
    },
    {
        "name": "customize-opencode",
        "description": "Use ONLY when ...",
        "source": "skill",
        "template": "<!-- skill -->",
        "hints": [],
    },
]
PROJECTS = [
    {
        "id": "global",
        "worktree": "/",
        "time": {"created": 1795616380656, "updated": 1795616386028},
        "sandboxes": [],
    },
    {
        "id": "76791f88463c2c0e0fdef8da9522dbfb3cef9ab9",
        "worktree": "/srv/workspace/wt-repo",
        "vcs": "git",
        "time": {"created": 1795616385678, "updated": 1795616386927},
        "sandboxes": [f"{WT}/proud-rocket", f"{WT}/my-tree"],
    },
]
WORKTREES = [f"{WT}/proud-rocket", f"{WT}/my-tree"]
CREATED = {"name": "my-tree", "branch": "opencode/my-tree", "directory": f"{WT}/my-tree"}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "ws" / "sub").mkdir(parents=True)
    return (tmp_path / "ws").resolve()


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[OpenCodeClient]:
    oc = OpenCodeClient(upstream.url, password="pw")
    yield oc
    await oc.aclose()


def methods(
    client: OpenCodeClient, root: Path, *, mutations: bool = True, allow_override: bool = True
) -> dict[str, Method]:
    policy = DirectoryPolicy(root, allow_override=allow_override)
    found = provider_methods(client, policy) + workspace_methods(
        client, policy, mutations_enabled=mutations
    )
    return {m.name: m for m in found}


async def call(registry: dict[str, Method], method_name: str, **params: Any) -> Any:
    method = registry[method_name]
    return await method.handler(method.params.model_validate(params), CTX)


def sent(route: UpstreamRoute, index: int = -1) -> Call:
    return route.calls[index]


# -- providers and models ----------------------------------------------------------------


async def test_providers_list_normalizes_config_providers(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    route = upstream.get("/config/providers").respond(json=CONFIG_PROVIDERS)
    catalog = upstream.get("/provider").respond(json={"all": [], "default": {}, "connected": []})

    result = await call(methods(client, root), "opencode.providers.list")

    assert result == {
        "items": [
            {
                "provider_id": "opencode",
                "name": "OpenCode Zen",
                "source": "custom",
                "connected": True,
                "model_count": 2,
                "default_model_id": "big-pickle",
            },
            {
                "provider_id": "fake",
                "name": "Fake",
                "source": "config",
                "connected": True,
                "model_count": 2,
                "default_model_id": "fake-2",
            },
        ],
        "default_by_provider": {"opencode": "big-pickle", "fake": "fake-2"},
        "connected": ["opencode", "fake"],
    }
    assert sent(route).params["directory"] == str(root)
    assert not catalog.calls  # the 10 MB catalog is never fetched


async def test_models_list_normalizes_limits_and_capabilities(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.get("/config/providers").respond(json=CONFIG_PROVIDERS)

    result = await call(methods(client, root), "opencode.models.list")

    by_id = {(m["provider_id"], m["model_id"]): m for m in result["items"]}
    assert list(by_id) == [
        ("opencode", "ling-3.0-flash-fin-free"),
        ("opencode", "big-pickle"),
        ("fake", "fake-1"),
        ("fake", "fake-2"),
    ]
    assert by_id["opencode", "big-pickle"] == {
        "provider_id": "opencode",
        "model_id": "big-pickle",
        "name": "Big Pickle",
        "default": True,
        "connected": True,
        "status": "active",
        "context_window": 200000,
        "max_output_tokens": 32000,
        "supports_reasoning": True,
        "supports_tool_call": True,
        "supports_attachments": False,
    }
    # OpenCode reports 0 for unknown limits: left out rather than claimed as 0.
    assert by_id["fake", "fake-1"] == {
        "provider_id": "fake",
        "model_id": "fake-1",
        "name": "Fake 1",
        "default": False,
        "connected": True,
        "status": "active",
        "supports_reasoning": False,
        "supports_tool_call": True,
        "supports_attachments": False,
    }
    assert by_id["fake", "fake-2"]["default"] is True
    assert result["default_by_provider"] == CONFIG_PROVIDERS["default"]
    assert result["connected"] == ["opencode", "fake"]


async def test_models_list_filters_by_provider(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.get("/config/providers").respond(json=CONFIG_PROVIDERS)

    result = await call(methods(client, root), "opencode.models.list", provider_id="fake")

    assert [m["model_id"] for m in result["items"]] == ["fake-1", "fake-2"]
    assert result["connected"] == ["opencode", "fake"]  # the envelope stays whole


async def test_models_list_refuses_an_unknown_provider(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.get("/config/providers").respond(json=CONFIG_PROVIDERS)

    with pytest.raises(InvalidParams) as caught:
        await call(methods(client, root), "opencode.models.list", provider_id="anthropic")

    assert "Unknown provider_id 'anthropic'" in caught.value.message
    assert "known providers: opencode, fake" in caught.value.message
    assert caught.value.data["fields"] == ["provider_id"]
    assert caught.value.data["known_providers"] == ["opencode", "fake"]


async def test_providers_list_rejects_an_unexpected_payload(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.get("/config/providers").respond(json=[1, 2])
    with pytest.raises(UpstreamPayloadError):
        await call(methods(client, root), "opencode.providers.list")


async def test_agents_list_keeps_hidden_agents_and_drops_internals(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    route = upstream.get("/agent").respond(json=AGENTS)

    result = await call(methods(client, root), "opencode.agents.list", directory="sub")

    assert result["items"] == [
        {
            "name": "build",
            "description": "The default agent. Executes tools based on configured permissions.",
            "mode": "primary",
            "native": True,
            "hidden": False,
        },
        {"name": "compaction", "mode": "primary", "native": True, "hidden": True},
        {
            "name": "plan",
            "description": "Plan mode. Disallows all edit tools.",
            "mode": "primary",
            "native": True,
            "hidden": False,
        },
        {
            "name": "reviewer",
            "description": "Reviews",
            "mode": "subagent",
            "native": False,
            "hidden": False,
        },
        {"name": "title", "mode": "primary", "native": True, "hidden": True},
    ]
    assert sent(route).params["directory"] == str(root / "sub")


async def test_commands_list_normalizes_commands(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.get("/command").respond(json=COMMANDS)

    result = await call(methods(client, root), "opencode.commands.list")

    items = {c["name"]: c for c in result["items"]}
    assert list(items) == ["init", "review", "greet", "customize-opencode"]
    assert items["init"] == {
        "name": "init",
        "description": "guided AGENTS.md setup",
        "source": "command",
        "template": COMMANDS[0]["template"],
        "hints": ["$ARGUMENTS"],
    }
    assert items["review"]["subtask"] is True
    assert "agent" not in items["greet"] and "subtask" not in items["greet"]  # nulls dropped
    assert items["customize-opencode"]["source"] == "skill"


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("opencode.providers.list", {}),
        ("opencode.models.list", {"provider_id": "fake"}),
        ("opencode.agents.list", {}),
        ("opencode.commands.list", {}),
        ("opencode.projects.current", {}),
        ("opencode.worktrees.list", {}),
        ("opencode.worktrees.create", {}),
        ("opencode.worktrees.remove", {"worktree": WORKTREES[0]}),
        ("opencode.worktrees.reset", {"worktree": WORKTREES[0]}),
    ],
)
async def test_a_directory_outside_the_root_is_refused_before_any_upstream_call(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream, name: str, extra: dict
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await call(methods(client, root), name, directory=str(root.parent), **extra)
    assert "directory" in caught.value.message
    assert "outside the workspace root" in caught.value.message
    assert "metadata.opencode" not in caught.value.message
    assert not upstream.calls


async def test_without_overrides_only_the_root_is_accepted(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    route = upstream.get("/agent").respond(json=AGENTS)
    registry = methods(client, root, allow_override=False)
    with pytest.raises(InvalidRequest):
        await call(registry, "opencode.agents.list", directory="sub")
    await call(registry, "opencode.agents.list", directory=str(root))
    assert sent(route).params["directory"] == str(root)


# -- projects and worktrees ----------------------------------------------------------------


async def test_projects_are_passed_through(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.get("/project").respond(json=PROJECTS)
    current = upstream.get("/project/current").respond(json=PROJECTS[1])
    registry = methods(client, root)

    assert await call(registry, "opencode.projects.list") == {"items": PROJECTS}
    assert await call(registry, "opencode.projects.current", directory="sub") == {
        "item": PROJECTS[1]
    }
    assert sent(current).params["directory"] == str(root / "sub")


async def test_worktrees_list_and_create(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    listing = upstream.get("/experimental/worktree").respond(json=WORKTREES)
    create = upstream.post("/experimental/worktree").respond(json=CREATED)
    registry = methods(client, root)

    assert await call(registry, "opencode.worktrees.list", directory="sub") == {"items": WORKTREES}
    assert sent(listing).params["directory"] == str(root / "sub")

    result = await call(
        registry, "opencode.worktrees.create", name="my-tree", start_command="make setup"
    )
    assert result == {"item": CREATED}
    assert json.loads(sent(create).content) == {"name": "my-tree", "startCommand": "make setup"}
    assert sent(create).params["directory"] == str(root)

    await call(registry, "opencode.worktrees.create")
    assert json.loads(sent(create).content) == {}


@pytest.mark.parametrize(
    ("name", "verb", "path"),
    [
        ("opencode.worktrees.remove", "DELETE", "/experimental/worktree"),
        ("opencode.worktrees.reset", "POST", "/experimental/worktree/reset"),
    ],
)
async def test_remove_and_reset_send_a_listed_worktree(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream, name: str, verb: str, path: str
) -> None:
    upstream.get("/experimental/worktree").respond(json=WORKTREES)
    route = upstream.route(method=verb, path=path).respond(json=True)

    result = await call(methods(client, root), name, directory="sub", worktree=WORKTREES[1])

    assert result == {"ok": True}
    assert json.loads(sent(route).content) == {"directory": WORKTREES[1]}
    assert sent(route).params["directory"] == str(root / "sub")


@pytest.mark.parametrize("name", ["opencode.worktrees.remove", "opencode.worktrees.reset"])
@pytest.mark.parametrize("worktree", ["/etc", "/srv/workspace/wt-repo", "my-tree", f"{WT}/other"])
async def test_remove_and_reset_refuse_an_unlisted_worktree(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream, name: str, worktree: str
) -> None:
    upstream.get("/experimental/worktree").respond(json=WORKTREES)
    mutate = upstream.route(method__in=["DELETE", "POST"]).respond(json=True)

    with pytest.raises(InvalidParams) as caught:
        await call(methods(client, root), name, worktree=worktree)

    assert f"worktree {worktree!r} is not a worktree of the project" in caught.value.message
    assert WORKTREES[0] in caught.value.message  # names the ones that exist
    assert caught.value.data["fields"] == ["worktree"]
    assert not mutate.calls


def test_match_worktree_follows_symlinks_to_the_listed_path(tmp_path: Path) -> None:
    real = tmp_path / "data" / "worktree" / "proj" / "tree"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    listed = [str(real)]
    assert match_worktree(str(real), listed) == str(real)
    assert match_worktree(str(tmp_path / "link" / "worktree" / "proj" / "tree"), listed) == str(
        real
    )
    assert match_worktree(str(real) + "/../tree", listed) == str(real)
    assert match_worktree("tree", listed) is None
    assert match_worktree(str(tmp_path / "data"), listed) is None


# -- through the JSON-RPC router -------------------------------------------------------------


async def sdk_endpoint(request: Request) -> Response:
    return JSONResponse({"sdk": True})


def rpc_app(client: OpenCodeClient, root: Path, *, mutations: bool) -> httpx.AsyncClient:
    registry = Registry(list(methods(client, root, mutations=mutations).values()))
    router = JsonRpcRouter(registry, sdk_endpoint)
    app = Starlette(routes=[Route("/", router.handle, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://adapter")


async def rpc(http: httpx.AsyncClient, method: str, params: dict | None = None) -> dict:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    response = await http.post("/", json=body)
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("opencode.worktrees.create", {}),
        ("opencode.worktrees.remove", {"worktree": WORKTREES[0]}),
        ("opencode.worktrees.reset", {"worktree": WORKTREES[0]}),
    ],
)
async def test_mutations_are_disabled_by_default(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream, name: str, params: dict
) -> None:
    async with rpc_app(client, root, mutations=False) as http:
        error = (await rpc(http, name, params))["error"]
    assert error["code"] == -32011
    assert error["data"] == {
        "type": "METHOD_DISABLED",
        "method": name,
        "toggle": "A2A_ENABLE_WORKSPACE_MUTATIONS",
    }
    assert not upstream.calls


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("opencode.providers.list", {"metadata": {}}, "metadata"),
        ("opencode.models.list", {"provider_id": ""}, "provider_id"),
        ("opencode.agents.list", {"directory": ""}, "directory"),
        ("opencode.projects.list", {"directory": "sub"}, "directory"),
        ("opencode.worktrees.create", {"startCommand": "x"}, "startCommand"),
        ("opencode.worktrees.remove", {}, "worktree"),
        ("opencode.worktrees.reset", {"worktree": ""}, "worktree"),
    ],
)
async def test_bad_params_are_invalid_params(
    client: OpenCodeClient,
    root: Path,
    upstream: FakeUpstream,
    name: str,
    params: dict,
    field: str,
) -> None:
    async with rpc_app(client, root, mutations=True) as http:
        error = (await rpc(http, name, params))["error"]
    assert error["code"] == -32602
    assert error["data"]["fields"] == [field]
    assert not upstream.calls


async def test_router_maps_directory_refusal_and_upstream_errors(
    client: OpenCodeClient, root: Path, upstream: FakeUpstream
) -> None:
    upstream.post("/experimental/worktree").respond(
        400,
        json={
            "name": "WorktreeCreateFailedError",
            "data": {"message": "fatal: not a valid object name: 'HEAD'\n"},
        },
    )
    async with rpc_app(client, root, mutations=True) as http:
        refused = (await rpc(http, "opencode.commands.list", {"directory": "/etc"}))["error"]
        failed = (await rpc(http, "opencode.worktrees.create", {}))["error"]
    assert refused["code"] == -32602
    assert "directory '/etc' is outside the workspace root" in refused["message"]
    assert failed["code"] == -32003
    assert failed["data"]["upstream_status"] == 400
    assert "not a valid object name" in failed["message"]


def test_registry_accepts_both_builders_with_one_line_summaries(
    client: OpenCodeClient, root: Path
) -> None:
    registry = Registry(list(methods(client, root, mutations=False).values()))
    assert len(registry.extensions()) == 2
    for method in registry.methods:
        assert "\n" not in method.summary and "|" not in method.summary
    assert [m.name for m in registry.methods if not m.enabled] == [
        "opencode.worktrees.create",
        "opencode.worktrees.remove",
        "opencode.worktrees.reset",
    ]
