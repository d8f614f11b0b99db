"""What a turn changed in the workspace, as the `changes` artifact.

OpenCode records a `patch` part on every step that changed files (git workspaces
only) and computes a diff per user message; that diff is exactly one turn's changes.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2a.types.a2a_pb2 import Part

from ..upstream.client import OpenCodeClient
from .mapping import as_dict, to_struct

DIFF_MEDIA_TYPE = "text/x-diff"


@dataclass(frozen=True)
class FileCaps:
    """Limits for attaching changed files' contents (`metadata.opencode.include_files`)."""

    per_file: int = 256 * 1024
    per_turn: int = 2 * 1024 * 1024


def turn_changed_files(entries: list[dict[str, Any]]) -> bool:
    """True if any step of the turn recorded a patch (OpenCode saw files change)."""
    return any(
        part.get("type") == "patch" and part.get("files")
        for entry in entries
        for part in entry.get("parts") or []
    )


async def turn_diff(
    client: OpenCodeClient, session_id: str, directory: str, user_message_id: str
) -> list[dict[str, Any]]:
    """OpenCode's diff for one turn (its user message)."""
    found = await client.request(
        "GET",
        f"/session/{session_id}/diff",
        directory=directory,
        params={"messageID": user_message_id},
    )
    return [d for d in found or [] if isinstance(d, dict) and d.get("file")]


def changes_parts(
    diffs: list[dict[str, Any]], directory: str, include_files: bool, caps: FileCaps
) -> list[Part]:
    """The artifact's parts: the unified diff, the file list, and optionally contents."""
    unified = "".join(_ensure_newline(str(d.get("patch") or "")) for d in diffs)
    files = [
        {
            "path": str(d["file"]),
            "status": str(d.get("status") or "modified"),
            "additions": int(d.get("additions") or 0),
            "deletions": int(d.get("deletions") or 0),
        }
        for d in diffs
    ]
    attached: list[Part] = []
    if include_files:
        attached = _attach(files, Path(directory), caps)
    data = Part(media_type="application/json")
    data.data.struct_value.CopyFrom(to_struct({"files": files}))
    return [Part(text=unified, media_type=DIFF_MEDIA_TYPE), data, *attached]


def _attach(files: list[dict[str, Any]], directory: Path, caps: FileCaps) -> list[Part]:
    """File parts with new contents; each file entry says whether it was attached."""
    parts: list[Part] = []
    budget = caps.per_turn
    root = Path(os.path.realpath(directory))
    for entry in files:
        if entry["status"] == "deleted":
            entry["attached"] = False
            entry["reason"] = "deleted"
            continue
        path = Path(os.path.realpath(root / entry["path"]))
        if root not in path.parents or not path.is_file():
            entry["attached"] = False
            entry["reason"] = "not readable inside the session directory"
            continue
        size = path.stat().st_size
        entry["size"] = size
        if size > caps.per_file or size > budget:
            entry["attached"] = False
            entry["reason"] = (
                f"over the per-file cap ({caps.per_file} bytes)"
                if size > caps.per_file
                else f"over the per-turn cap ({caps.per_turn} bytes)"
            )
            continue
        budget -= size
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts.append(Part(raw=path.read_bytes(), media_type=media, filename=entry["path"]))
        entry["attached"] = True
    return parts


def file_notice(part: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The files an edit/write tool call changed, with line counts (for the stream)."""
    state = as_dict(part.get("state"))
    if state.get("status") != "completed":
        return None
    meta = as_dict(state.get("metadata"))
    filediff = as_dict(meta.get("filediff"))
    if filediff.get("file"):
        return [
            {
                "path": filediff["file"],
                "additions": int(filediff.get("additions") or 0),
                "deletions": int(filediff.get("deletions") or 0),
            }
        ]
    if part.get("tool") == "write":
        inputs = as_dict(state.get("input"))
        path = meta.get("filepath") or inputs.get("filePath")
        content = inputs.get("content")
        if not path or not isinstance(content, str):
            return None
        notice: dict[str, Any] = {"path": path, "additions": _line_count(content)}
        notice["status"] = "modified" if meta.get("exists") else "added"
        if not meta.get("exists"):
            notice["deletions"] = 0
        return [notice]
    return None


def _line_count(text: str) -> int:
    return len(text.splitlines())


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"
