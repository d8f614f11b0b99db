"""Extension methods for projects and git worktrees.

OpenCode creates worktrees outside the repository, under its data folder
(`$XDG_DATA_HOME/opencode/worktree/<project id>/<name>`), on a new branch
`opencode/<name>`. They are therefore outside the workspace root by design: the
`worktree` a caller may remove or reset must be one of the paths `GET
/experimental/worktree` lists for the (workspace-checked) `directory`. Without that rule a
caller could aim `git worktree remove` at any path, and OpenCode answers `true` to a
remove of a path it does not know.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field

from ..errors import InvalidParams, UpstreamPayloadError
from ..execution.directories import DirectoryPolicy
from ..upstream.client import OpenCodeClient
from .providers import DirectoryParams, resolve_directory
from .registry import CallContext, Extension, Method, NoParams, Params

MUTATIONS_TOGGLE = "A2A_ENABLE_WORKSPACE_MUTATIONS"

WORKSPACE_CONTROL = Extension(
    uri="urn:opencode-a2a:extension:workspace-control:v1",
    description=(
        "OpenCode's projects and the git worktrees of a project; creating, removing and "
        f"resetting worktrees needs {MUTATIONS_TOGGLE}=true."
    ),
    params={
        "project_fields": ["id", "worktree", "vcs", "name", "time", "sandboxes"],
        "worktree_fields": ["name", "branch", "directory"],
        "mutations_toggle": MUTATIONS_TOGGLE,
        "worktree_rule": (
            "remove and reset accept only a path that opencode.worktrees.list returns for "
            "the same directory"
        ),
        "errors": [
            "INVALID_PARAMS",
            "METHOD_DISABLED",
            "UPSTREAM_UNREACHABLE",
            "UPSTREAM_HTTP_ERROR",
            "UPSTREAM_PAYLOAD_ERROR",
        ],
    },
)


class WorktreeCreateParams(DirectoryParams):
    name: str | None = Field(None, min_length=1, max_length=128)
    start_command: str | None = Field(None, min_length=1)


class WorktreeParams(DirectoryParams):
    worktree: str = Field(min_length=1)


def _list(payload: Any, what: str) -> list[Any]:
    if not isinstance(payload, list):
        raise UpstreamPayloadError(f"OpenCode returned an unexpected payload for {what}")
    return payload


def _dict(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise UpstreamPayloadError(f"OpenCode returned an unexpected payload for {what}")
    return payload


def match_worktree(requested: str, listed: list[str]) -> str | None:
    """The listed path `requested` names (exactly, or after resolving symlinks)."""
    if requested in listed:
        return requested
    if not os.path.isabs(requested) or "\x00" in requested:
        return None
    real = os.path.realpath(requested)
    for path in listed:
        if os.path.realpath(path) == real:
            return path
    return None


def workspace_methods(
    client: OpenCodeClient, directories: DirectoryPolicy, *, mutations_enabled: bool
) -> list[Method]:
    async def worktrees(directory: str) -> list[str]:
        payload = await client.request("GET", "/experimental/worktree", directory=directory)
        return [p for p in _list(payload, "/experimental/worktree") if isinstance(p, str)]

    async def listed_worktree(method: str, params: WorktreeParams) -> tuple[str, str]:
        directory = resolve_directory(directories, params.directory)
        known = await worktrees(directory)
        path = match_worktree(params.worktree, known)
        if path is None:
            shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            raise InvalidParams(
                f"worktree {params.worktree!r} is not a worktree of the project at "
                f"{directory}; known worktrees: {shown or 'none'}.",
                method=method,
                fields=["worktree"],
            )
        return directory, path

    async def list_projects(_: NoParams, __: CallContext) -> Any:
        root = resolve_directory(directories, None)
        payload = await client.request("GET", "/project", directory=root)
        return {"items": _list(payload, "/project")}

    async def current_project(params: DirectoryParams, _: CallContext) -> Any:
        directory = resolve_directory(directories, params.directory)
        payload = await client.request("GET", "/project/current", directory=directory)
        return {"item": _dict(payload, "/project/current")}

    async def list_worktrees(params: DirectoryParams, _: CallContext) -> Any:
        return {"items": await worktrees(resolve_directory(directories, params.directory))}

    async def create_worktree(params: WorktreeCreateParams, _: CallContext) -> Any:
        directory = resolve_directory(directories, params.directory)
        body: dict[str, Any] = {}
        if params.name is not None:
            body["name"] = params.name
        if params.start_command is not None:
            body["startCommand"] = params.start_command
        payload = await client.request(
            "POST", "/experimental/worktree", directory=directory, json_body=body
        )
        return {"item": _dict(payload, "POST /experimental/worktree")}

    async def remove_worktree(params: WorktreeParams, _: CallContext) -> Any:
        directory, path = await listed_worktree("opencode.worktrees.remove", params)
        result = await client.request(
            "DELETE", "/experimental/worktree", directory=directory, json_body={"directory": path}
        )
        return {"ok": result is True}

    async def reset_worktree(params: WorktreeParams, _: CallContext) -> Any:
        directory, path = await listed_worktree("opencode.worktrees.reset", params)
        result = await client.request(
            "POST",
            "/experimental/worktree/reset",
            directory=directory,
            json_body={"directory": path},
        )
        return {"ok": result is True}

    def mutation(name: str, summary: str, params: type[Params], handler: Any) -> Method:
        return Method(
            name,
            summary,
            params,
            handler,
            WORKSPACE_CONTROL,
            enabled=mutations_enabled,
            toggle=MUTATIONS_TOGGLE,
        )

    return [
        Method(
            "opencode.projects.list",
            "Every project OpenCode has opened (as OpenCode reports them: id, worktree, vcs, "
            "time, sandboxes).",
            NoParams,
            list_projects,
            WORKSPACE_CONTROL,
        ),
        Method(
            "opencode.projects.current",
            "The project `directory` belongs to (a git repository's root commit and top "
            "folder, or `global`).",
            DirectoryParams,
            current_project,
            WORKSPACE_CONTROL,
        ),
        Method(
            "opencode.worktrees.list",
            "The paths of the git worktrees OpenCode made for the project of `directory` "
            "(they live in OpenCode's data folder, outside the workspace).",
            DirectoryParams,
            list_worktrees,
            WORKSPACE_CONTROL,
        ),
        mutation(
            "opencode.worktrees.create",
            "Create a git worktree on a new branch `opencode/<name>` for the project of "
            "`directory` (needs a commit); optional `name`, `start_command`; the checkout "
            "finishes just after the answer.",
            WorktreeCreateParams,
            create_worktree,
        ),
        mutation(
            "opencode.worktrees.remove",
            "Remove a worktree and delete its branch; `worktree` must be a path "
            "`opencode.worktrees.list` returns for the same `directory`.",
            WorktreeParams,
            remove_worktree,
        ),
        mutation(
            "opencode.worktrees.reset",
            "Reset a worktree to the default branch, discarding its commits and changes; "
            "`worktree` must be a path `opencode.worktrees.list` returns for `directory`.",
            WorktreeParams,
            reset_worktree,
        ),
    ]
