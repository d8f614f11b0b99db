"""Pure functions from OpenCode parts, messages and errors to A2A shapes.

No I/O here: everything is tested directly against recorded OpenCode event streams.
"""

from __future__ import annotations

import base64
from typing import Any

from a2a.types.a2a_pb2 import Part
from google.protobuf.struct_pb2 import Struct

from ..errors import InvalidRequest

TEXT_SEPARATOR = "\n\n"
TITLE_LIMIT = 80
DEFAULT_MIME = "application/octet-stream"


# -- inbound: A2A message parts -> OpenCode prompt parts -----------------------


def prompt_parts(parts: list[Part]) -> list[dict[str, Any]]:
    """Turn the parts of an A2A message into OpenCode `PromptBody.parts`.

    Text passes through, raw bytes become a `data:` URL, URLs pass through.
    Data parts are refused: OpenCode has no structured input.
    """
    if not parts:
        raise InvalidRequest("The message has no parts; send at least one text or file part.")
    out: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        content = part.WhichOneof("content")
        if content == "text":
            out.append({"type": "text", "text": part.text})
        elif content in ("raw", "url"):
            out.append(_file_part(part, content))
        elif content == "data":
            raise InvalidRequest(
                f"Part {index} is a data part; this agent accepts only text and file parts."
            )
        else:
            raise InvalidRequest(f"Part {index} is empty; give it text, raw bytes or a url.")
    if not any(p["type"] == "text" and p["text"].strip() for p in out) and not any(
        p["type"] == "file" for p in out
    ):
        raise InvalidRequest("The message text is empty.")
    return out


def _file_part(part: Part, content: str) -> dict[str, Any]:
    mime = part.media_type or DEFAULT_MIME
    if content == "raw":
        url = f"data:{mime};base64,{base64.b64encode(part.raw).decode('ascii')}"
    else:
        url = part.url
    result: dict[str, Any] = {"type": "file", "mime": mime, "url": url}
    if part.filename:
        result["filename"] = part.filename
    return result


def session_title(parts: list[dict[str, Any]]) -> str:
    """A title for a new OpenCode session (saves OpenCode a title-generation call)."""
    for part in parts:
        if part["type"] == "text" and part["text"].strip():
            return " ".join(part["text"].split())[:TITLE_LIMIT]
    names = [p.get("filename") or "file" for p in parts if p["type"] == "file"]
    return (", ".join(names) or "A2A session")[:TITLE_LIMIT]


# -- outbound: OpenCode parts -> A2A ------------------------------------------


def tool_call_data(part: dict[str, Any]) -> dict[str, Any]:
    """The `tool_call` data object streamed for an OpenCode tool part."""
    state = as_dict(part.get("state"))
    data: dict[str, Any] = {
        "call_id": part.get("callID") or part.get("id"),
        "tool": part.get("tool"),
        "status": state.get("status"),
    }
    for key in ("title", "input", "output", "error"):
        value = state.get(key)
        if value not in (None, "", {}):
            data[key] = value
    live_output = as_dict(state.get("metadata")).get("output")
    if "output" not in data and isinstance(live_output, str) and live_output:
        data["output"] = live_output  # bash streams its output while running
    return data


def text_of_parts(parts: list[dict[str, Any]], kind: str = "text") -> list[str]:
    """Non-empty texts of one message's parts of a kind, skipping synthetic/ignored ones."""
    texts = []
    for part in parts:
        if part.get("type") != kind or part.get("synthetic") or part.get("ignored"):
            continue
        text = part.get("text") or ""
        if text:
            texts.append(text)
    return texts


def usage_of(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`metadata.shared.usage`, summed over the assistant messages of one turn."""
    totals = {"input": 0, "output": 0, "reasoning": 0, "read": 0, "write": 0, "total": 0}
    cost = 0.0
    seen = False
    for info in messages:
        tokens = as_dict(info.get("tokens"))
        if not tokens:
            continue
        seen = True
        cache = as_dict(tokens.get("cache"))
        totals["input"] += int(tokens.get("input") or 0)
        totals["output"] += int(tokens.get("output") or 0)
        totals["reasoning"] += int(tokens.get("reasoning") or 0)
        totals["read"] += int(cache.get("read") or 0)
        totals["write"] += int(cache.get("write") or 0)
        totals["total"] += int(tokens.get("total") or 0)
        cost += float(info.get("cost") or 0)
    if not seen:
        return None
    return {
        "input_tokens": totals["input"],
        "output_tokens": totals["output"],
        "reasoning_tokens": totals["reasoning"],
        "cache_tokens": {"read_tokens": totals["read"], "write_tokens": totals["write"]},
        "total_tokens": totals["total"] or totals["input"] + totals["output"],
        "cost": cost,
    }


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def to_struct(value: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(value)
    return struct
