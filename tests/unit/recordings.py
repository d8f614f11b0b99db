"""Helpers for the recorded OpenCode 1.18.33 `/event` streams in tests/fixtures/opencode-events.

Each line of a recording is `{"dt_ms": …, "event": {...}}`, where `event` is exactly what
OpenCode's `/event` stream sent. See /work/shared/reference/opencode-events/README.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "opencode-events"


def load_events(name: str) -> list[dict[str, Any]]:
    """The `event` objects of one recording, in arrival order."""
    path = FIXTURES / f"{name}.event.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["event"] for line in handle if line.strip()]


def session_of(event: dict[str, Any]) -> str | None:
    props = event.get("properties") or {}
    session_id = props.get("sessionID")
    return session_id if isinstance(session_id, str) else None


def created_sessions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `info` of every `session.created` event, in order."""
    return [
        event["properties"]["info"] for event in events if event.get("type") == "session.created"
    ]


def session_titled(events: list[dict[str, Any]], title: str) -> str:
    """The id of the session created with `title` (the recorder labels sessions `scen <name>`)."""
    for info in created_sessions(events):
        if info.get("title") == title:
            return str(info["id"])
    raise LookupError(f"no session titled {title!r}")


def user_messages(events: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    """The first `info` of each user message of a session, in order of creation."""
    seen: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("type") != "message.updated" or session_of(event) != session_id:
            continue
        info = event["properties"]["info"]
        if info.get("role") == "user":
            seen.setdefault(info["id"], info)
    return list(seen.values())


def stored_history(events: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    """What `GET /session/{id}/message` returns after these events: `[{info, parts}]`.

    The latest `message.updated` info and `message.part.updated` part of each id win; the
    order is that of first appearance (OpenCode ids are time-ordered, so this matches the
    stored order). Deltas are not applied: a part OpenCode never finalized keeps the text of
    its last `message.part.updated`, as in storage.
    """
    infos: dict[str, dict[str, Any]] = {}
    parts: dict[str, dict[str, dict[str, Any]]] = {}
    for event in events:
        kind = event.get("type")
        props = event.get("properties") or {}
        if kind == "message.updated":
            info = props.get("info") or {}
            if info.get("sessionID") != session_id:
                continue
            infos[info["id"]] = info
            parts.setdefault(info["id"], {})
        elif kind == "message.part.updated":
            part = props.get("part") or {}
            if part.get("sessionID") != session_id:
                continue
            parts.setdefault(part["messageID"], {})[part["id"]] = part
        elif kind == "message.removed" and props.get("sessionID") == session_id:
            infos.pop(props.get("messageID"), None)
            parts.pop(props.get("messageID"), None)
    return copy.deepcopy(
        [{"info": info, "parts": list(parts.get(mid, {}).values())} for mid, info in infos.items()]
    )
