"""Session methods: browse OpenCode sessions and their history, and steer them.

Sessions come back as Task-shaped summaries and history items as A2A Messages. Turns
started here (`prompt_async`, `command`) are ordinary A2A tasks: they stream, ask for
input and cancel like any other.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any, Literal

from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import (
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.errors import A2AError
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidParams, SessionForbidden, SessionNotFound, UpstreamHTTPError
from ..execution.directories import DirectoryPolicy
from ..execution.mapping import as_dict, to_struct, tool_call_data
from ..handler import Principal
from ..store.bindings import BindingStore
from ..upstream.client import OpenCodeClient
from .registry import CallContext, Extension, Method, Params

SESSION_MANAGEMENT = Extension(
    uri="urn:opencode-a2a:extension:session-management:v1",
    description="Browse OpenCode sessions and their history, and steer them.",
    params={
        "session_item": "Task-shaped summary with metadata.shared.session {id, title}",
        "history_item": "A2A Message (text, file and tool_call data parts)",
        "pagination": {"limit": {"default": 20, "max": 100}, "cursor_field": "next_cursor"},
        "ownership": "a session bound through this service belongs to its caller; "
        "others get SESSION_FORBIDDEN",
        "started_turns": "prompt_async and command return a task_id: an ordinary A2A task",
        "errors": [
            "SESSION_NOT_FOUND",
            "SESSION_FORBIDDEN",
            "METHOD_DISABLED",
            "INVALID_PARAMS",
            "UPSTREAM_UNREACHABLE",
            "UPSTREAM_HTTP_ERROR",
            "UPSTREAM_PAYLOAD_ERROR",
        ],
    },
)

SESSION_ID = Field(pattern=r"^ses_[0-9A-Za-z]+$", max_length=128)
MAX_UPSTREAM_SESSIONS = 5000


class _Open(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Open):
    providerID: str = Field(min_length=1)
    modelID: str = Field(min_length=1)


class PromptPart(_Open):
    type: Literal["text", "file"]
    text: str | None = None
    url: str | None = None
    mime: str | None = None
    filename: str | None = None


class PromptRequest(_Open):
    parts: list[PromptPart] = Field(min_length=1)
    agent: str | None = None
    model: ModelRef | None = None
    system: str | None = None
    variant: str | None = None
    tools: dict[str, bool] | None = None


class CommandRequest(_Open):
    command: str = Field(min_length=1)
    arguments: str = ""
    agent: str | None = None
    model: ModelRef | None = None
    variant: str | None = None


class ShellRequest(_Open):
    command: str = Field(min_length=1)
    agent: str = "build"
    model: ModelRef | None = None


class ListParams(Params):
    directory: str | None = None
    roots: bool | None = None
    search: str | None = None
    start: int | None = Field(None, ge=0, description="epoch ms: sessions updated since")
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class SessionParams(Params):
    session_id: str = SESSION_ID


class MessagesParams(Params):
    session_id: str = SESSION_ID
    limit: int = Field(20, ge=1, le=100)
    before: str | None = None


class PromptParams(Params):
    session_id: str = SESSION_ID
    request: PromptRequest


class CommandParams(Params):
    session_id: str = SESSION_ID
    request: CommandRequest


class ShellParams(Params):
    session_id: str = SESSION_ID
    request: ShellRequest


class DiffParams(Params):
    session_id: str = SESSION_ID
    message_id: str | None = Field(None, pattern=r"^msg_[0-9A-Za-z]+$")


class RevertParams(Params):
    session_id: str | None = Field(None, pattern=r"^ses_[0-9A-Za-z]+$", max_length=128)
    message_id: str | None = Field(None, pattern=r"^msg_[0-9A-Za-z]+$")
    part_id: str | None = Field(None, pattern=r"^prt_[0-9A-Za-z]+$")
    task_id: str | None = None


class SessionMethods:
    """The session methods; `handler` is set once the request handler exists."""

    def __init__(
        self,
        client: OpenCodeClient,
        bindings: BindingStore,
        directories: DirectoryPolicy,
        *,
        shell_enabled: bool,
    ) -> None:
        self.client = client
        self.bindings = bindings
        self.directories = directories
        self.shell_enabled = shell_enabled
        self.handler: Any = None  # OpenCodeRequestHandler, set by the app

    # -- ownership ---------------------------------------------------------------------

    async def session(self, session_id: str, ctx: CallContext, *, claim: bool) -> dict[str, Any]:
        """The session, if the caller may use it (and claimed for them when asked)."""
        try:
            session = await self.client.get_session(session_id)
        except UpstreamHTTPError as exc:
            if exc.status == 404:
                raise SessionNotFound("Session not found", session_id=session_id) from None
            raise
        owner = await self._owner(session)
        if owner is not None and owner != ctx.principal:
            raise SessionForbidden("Session belongs to another caller", session_id=session_id)
        if not self.directories.contains(str(session.get("directory") or "/")):
            raise SessionForbidden(
                "Session runs outside the workspace root (OPENCODE_WORKSPACE_ROOT)",
                session_id=session_id,
            )
        if claim and owner is None:
            await self.bindings.claim(ctx.principal, session_id, str(session.get("title") or ""))
        return session

    # -- browsing ------------------------------------------------------------------------

    async def list_sessions(self, params: ListParams, ctx: CallContext) -> dict[str, Any]:
        directory = self.directories.resolve(params.directory)
        query: dict[str, Any] = {"limit": MAX_UPSTREAM_SESSIONS}
        if params.roots is not None:
            query["roots"] = str(params.roots).lower()
        if params.search:
            query["search"] = params.search
        if params.start is not None:
            query["start"] = params.start
        found = await self.client.request("GET", "/session", directory=directory, params=query)
        sessions = [s for s in found or [] if isinstance(s, dict)]
        visible = [s for s in sessions if await self._visible(s, ctx)]
        offset = _decode_cursor(params.cursor)
        page = visible[offset : offset + params.limit]
        more = offset + params.limit < len(visible)
        busy = await self._busy({str(s.get("directory") or directory) for s in page})
        return {
            "items": [session_summary(s, s.get("id") in busy) for s in page],
            "next_cursor": _encode_cursor(offset + params.limit) if more else None,
        }

    async def _visible(self, session: dict[str, Any], ctx: CallContext) -> bool:
        owner = await self._owner(session)
        inside = self.directories.contains(str(session.get("directory") or "/"))
        return inside and owner in (None, ctx.principal)

    async def _owner(self, session: dict[str, Any]) -> str | None:
        """The session's owner; a subagent's child session belongs to its parent's."""
        owner = await self.bindings.owner_of(str(session.get("id")))
        seen: set[str] = set()
        parent = session.get("parentID")
        while owner is None and isinstance(parent, str) and parent not in seen:
            seen.add(parent)
            owner = await self.bindings.owner_of(parent)
            if owner is None:
                try:
                    parent = (await self.client.get_session(parent)).get("parentID")
                except UpstreamHTTPError:
                    break
        return owner

    async def _busy(self, directories: set[str]) -> set[str]:
        busy: set[str] = set()
        for directory in directories:
            busy.update(await self.client.session_status(directory))
        return busy

    async def get(self, params: SessionParams, ctx: CallContext) -> dict[str, Any]:
        session = await self.session(params.session_id, ctx, claim=False)
        busy = await self._busy({str(session.get("directory"))})
        return {"item": session_summary(session, params.session_id in busy)}

    async def messages(self, params: MessagesParams, ctx: CallContext) -> dict[str, Any]:
        session = await self.session(params.session_id, ctx, claim=False)
        entries, cursor = await self.client.messages_page(
            params.session_id, str(session.get("directory")), params.limit, params.before
        )
        return {
            "items": [history_message(e, params.session_id) for e in entries],
            "next_cursor": cursor,
        }

    async def diff(self, params: DiffParams, ctx: CallContext) -> dict[str, Any]:
        """One turn's changes (`message_id` = its user message), or every turn's in order.

        OpenCode computes diffs per user message; its session-wide diff stays empty.
        """
        session = await self.session(params.session_id, ctx, claim=False)
        directory = str(session.get("directory"))
        if params.message_id:
            turns = [params.message_id]
        else:
            history = await self.client.messages(params.session_id, directory)
            turns = [
                str(as_dict(e.get("info")).get("id"))
                for e in history
                if as_dict(e.get("info")).get("role") == "user"
            ]
        items: list[dict[str, Any]] = []
        for message_id in turns:
            found = await self.client.request(
                "GET",
                f"/session/{params.session_id}/diff",
                directory=directory,
                params={"messageID": message_id},
            )
            items.extend(
                {**d, "message_id": message_id} for d in found or [] if isinstance(d, dict)
            )
        return {"items": items}

    # -- steering ------------------------------------------------------------------------

    async def prompt_async(self, params: PromptParams, ctx: CallContext) -> dict[str, Any]:
        await self.session(params.session_id, ctx, claim=True)
        request = params.request
        parts = [_a2a_part(p, i) for i, p in enumerate(request.parts)]
        opencode: dict[str, Any] = {
            k: v
            for k, v in {
                "agent": request.agent,
                "system": request.system,
                "variant": request.variant,
                "tools": request.tools,
            }.items()
            if v is not None
        }
        return await self._start_task(params.session_id, parts, opencode, request.model, ctx)

    async def command(self, params: CommandParams, ctx: CallContext) -> dict[str, Any]:
        await self.session(params.session_id, ctx, claim=True)
        request = params.request
        opencode: dict[str, Any] = {
            "command": {"name": request.command, "arguments": request.arguments}
        }
        for key in ("agent", "variant"):
            if getattr(request, key) is not None:
                opencode[key] = getattr(request, key)
        text = f"/{request.command.lstrip('/')} {request.arguments}".strip()
        return await self._start_task(
            params.session_id, [Part(text=text)], opencode, request.model, ctx
        )

    async def _start_task(
        self,
        session_id: str,
        parts: list[Part],
        opencode: dict[str, Any],
        model: ModelRef | None,
        ctx: CallContext,
    ) -> dict[str, Any]:
        context_id = await self.bindings.context_of(ctx.principal, session_id)
        metadata: dict[str, Any] = {"shared": {"session": {"id": session_id}}}
        if opencode:
            metadata["opencode"] = opencode
        if model is not None:
            metadata["shared"]["model"] = model.model_dump()
        message = Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            context_id=context_id or f"ctx:opencode-session:{session_id}",
            parts=parts,
        )
        request = SendMessageRequest(
            message=message,
            configuration=SendMessageConfiguration(return_immediately=True),
            metadata=to_struct(metadata),
        )
        call = ServerCallContext(user=Principal(ctx.principal), state={"headers": {}})
        try:
            task = await self.handler.on_message_send(request, call)
        except A2AError as exc:
            raise InvalidParams(exc.message or type(exc).__name__) from None
        return {
            "ok": True,
            "session_id": session_id,
            "task_id": task.id,
            "context_id": task.context_id,
        }

    async def abort(self, params: SessionParams, ctx: CallContext) -> dict[str, Any]:
        session = await self.session(params.session_id, ctx, claim=True)
        await self.client.abort(params.session_id, str(session.get("directory")))
        return {"ok": True, "session_id": params.session_id}

    async def revert(self, params: RevertParams, ctx: CallContext) -> dict[str, Any]:
        """Undo from a message on; with `task_id`, exactly that task's turn."""
        session_id, message_id = await self._revert_target(params, ctx)
        session = await self.session(session_id, ctx, claim=True)
        directory = str(session.get("directory"))
        restored = await self.client.request(
            "GET",
            f"/session/{session_id}/diff",
            directory=directory,
            params={"messageID": message_id},
        )
        body: dict[str, Any] = {"messageID": message_id}
        if params.part_id:
            body["partID"] = params.part_id
        reverted = await self.client.request(
            "POST", f"/session/{session_id}/revert", directory=directory, json_body=body
        )
        files = [
            {"path": d.get("file"), "status": d.get("status")}
            for d in restored or []
            if isinstance(d, dict) and d.get("file")
        ]
        return {"item": session_summary(as_dict(reverted), False), "restored": files}

    async def _revert_target(self, params: RevertParams, ctx: CallContext) -> tuple[str, str]:
        if params.task_id is None:
            if not params.session_id or not params.message_id:
                raise InvalidParams(
                    "revert needs session_id and message_id, or task_id",
                    fields=["session_id", "message_id", "task_id"],
                )
            return params.session_id, params.message_id
        call = ServerCallContext(user=Principal(ctx.principal), state={"headers": {}})
        task = await self.handler.task_store.get(params.task_id, call)
        if task is None:
            raise InvalidParams(f"No task {params.task_id}", fields=["task_id"])
        meta = json_format.MessageToDict(task.metadata)
        session_id = as_dict(as_dict(meta.get("shared")).get("session")).get("id")
        message_id = as_dict(meta.get("opencode")).get("message_id")
        if not session_id or not message_id:
            raise InvalidParams(
                f"Task {params.task_id} has no OpenCode turn to revert", fields=["task_id"]
            )
        if params.session_id and params.session_id != session_id:
            raise InvalidParams(
                f"Task {params.task_id} belongs to session {session_id}", fields=["session_id"]
            )
        return str(session_id), str(message_id)

    async def unrevert(self, params: SessionParams, ctx: CallContext) -> dict[str, Any]:
        session = await self.session(params.session_id, ctx, claim=True)
        restored = await self.client.request(
            "POST",
            f"/session/{params.session_id}/unrevert",
            directory=str(session.get("directory")),
        )
        return {"item": session_summary(as_dict(restored), False)}

    async def shell(self, params: ShellParams, ctx: CallContext) -> dict[str, Any]:
        session = await self.session(params.session_id, ctx, claim=True)
        body: dict[str, Any] = {"agent": params.request.agent, "command": params.request.command}
        if params.request.model is not None:
            body["model"] = params.request.model.model_dump()
        result = await self.client.request(
            "POST",
            f"/session/{params.session_id}/shell",
            directory=str(session.get("directory")),
            json_body=body,
            timeout=None,
        )
        return {"item": history_message(as_dict(result), params.session_id)}

    def methods(self) -> list[Method]:
        m = SESSION_MANAGEMENT
        return [
            Method(
                "opencode.sessions.list",
                "Sessions the caller may use, newest first: `directory`, `roots`, `search`, "
                "`start` (epoch ms), `limit` (20, max 100), `cursor` -> `items`, `next_cursor`.",
                ListParams,
                self.list_sessions,
                m,
            ),
            Method(
                "opencode.sessions.get",
                "One session as a Task-shaped summary: `session_id`.",
                SessionParams,
                self.get,
                m,
            ),
            Method(
                "opencode.sessions.messages.list",
                "A session's history as A2A Messages, newest page first: `session_id`, "
                "`limit`, `before` (cursor) -> `items`, `next_cursor`.",
                MessagesParams,
                self.messages,
                m,
            ),
            Method(
                "opencode.sessions.prompt_async",
                "Start a turn in a session: `session_id`, `request.parts` (text, file), "
                "optional `agent`, `model`, `system`, `variant`, `tools` -> `task_id`.",
                PromptParams,
                self.prompt_async,
                m,
            ),
            Method(
                "opencode.sessions.command",
                "Run a slash command as a turn: `session_id`, `request.command`, "
                "`request.arguments` -> `task_id`.",
                CommandParams,
                self.command,
                m,
            ),
            Method(
                "opencode.sessions.abort",
                "Abort whatever the session is doing: `session_id`.",
                SessionParams,
                self.abort,
                m,
            ),
            Method(
                "opencode.sessions.diff",
                "Files the session changed (git workspaces): `session_id`, optional `message_id`.",
                DiffParams,
                self.diff,
                m,
            ),
            Method(
                "opencode.sessions.revert",
                "Undo changes from a message on (`session_id`, `message_id`, optional "
                "`part_id`), or exactly one task's turn (`task_id`) -> `item`, `restored`.",
                RevertParams,
                self.revert,
                m,
            ),
            Method(
                "opencode.sessions.unrevert",
                "Re-apply what the last revert undid: `session_id`.",
                SessionParams,
                self.unrevert,
                m,
            ),
            Method(
                "opencode.sessions.shell",
                "Run a shell command in the session without the model: `session_id`, "
                "`request.command`, optional `request.agent`.",
                ShellParams,
                self.shell,
                m,
                enabled=self.shell_enabled,
                toggle="A2A_ENABLE_SESSION_SHELL",
            ),
        ]


# -- shapes ---------------------------------------------------------------------------


def session_summary(session: dict[str, Any], busy: bool) -> dict[str, Any]:
    """A session as an A2A Task-shaped object."""
    session_id = str(session.get("id"))
    state = TaskState.TASK_STATE_WORKING if busy else TaskState.TASK_STATE_COMPLETED
    times = as_dict(session.get("time"))
    details = {
        "directory": session.get("directory"),
        "parent_id": session.get("parentID"),
        "created": times.get("created"),
        "updated": times.get("updated"),
        "revert": session.get("revert"),
        "summary": session.get("summary"),
    }
    task = Task(
        id=session_id,
        context_id=f"ctx:opencode-session:{session_id}",
        status=TaskStatus(state=state),
        metadata=to_struct(
            {
                "shared": {"session": {"id": session_id, "title": session.get("title") or ""}},
                "opencode": {k: v for k, v in details.items() if v is not None},
            }
        ),
    )
    return json_format.MessageToDict(task)


def history_message(entry: dict[str, Any], session_id: str) -> dict[str, Any]:
    """One stored OpenCode message as an A2A Message."""
    info = as_dict(entry.get("info"))
    parts: list[Part] = []
    for part in entry.get("parts") or []:
        kind = part.get("type")
        if kind == "text" and part.get("text") and not part.get("synthetic"):
            parts.append(Part(text=part["text"]))
        elif kind == "tool":
            data = Part(media_type="application/json")
            data.data.struct_value.update(tool_call_data(part))
            parts.append(data)
        elif kind == "file" and part.get("url"):
            parts.append(
                Part(
                    url=part["url"],
                    media_type=part.get("mime") or "",
                    filename=part.get("filename") or "",
                )
            )
    role = Role.ROLE_USER if info.get("role") == "user" else Role.ROLE_AGENT
    times = as_dict(info.get("time"))
    meta: dict[str, Any] = {
        "shared": {"session": {"id": session_id}},
        "opencode": {
            k: v
            for k, v in {
                "created": times.get("created"),
                "agent": info.get("agent"),
                "model_id": info.get("modelID") or as_dict(info.get("model")).get("modelID"),
                "provider_id": info.get("providerID")
                or as_dict(info.get("model")).get("providerID"),
                "error": info.get("error"),
            }.items()
            if v is not None
        },
    }
    message = Message(
        message_id=str(info.get("id")),
        context_id=f"ctx:opencode-session:{session_id}",
        role=role,
        parts=parts,
        metadata=to_struct(meta),
    )
    return json_format.MessageToDict(message)


def _a2a_part(part: PromptPart, index: int) -> Part:
    if part.type == "text":
        if not part.text:
            raise InvalidParams(
                f"request.parts[{index}] (text) needs text", fields=["request.parts"]
            )
        return Part(text=part.text)
    if not part.url:
        raise InvalidParams(f"request.parts[{index}] needs url", fields=["request.parts"])
    return Part(url=part.url, media_type=part.mime or "", filename=part.filename or "")


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidParams("cursor is not one this service issued", fields=["cursor"]) from None
    if not isinstance(offset, int) or offset < 0:
        raise InvalidParams("cursor is not one this service issued", fields=["cursor"])
    return offset
