"""A structural check of every request body before the routes parse it.

The routes (the a2a-sdk's and ours) parse JSON themselves; this guard answers the
hostile shapes at the edge, with a clear 4xx, so none of them reaches deeper code:

- a body that is not UTF-8, or JSON nested deeper than `MAX_JSON_DEPTH`;
- a message with more than `MAX_PARTS` parts;
- a file part whose bytes (`raw`, 0.3 `bytes` / `fileWithBytes`) are not base64;
- a `file:` URL anywhere in the body that resolves (symlinks and `..` included)
  outside OPENCODE_WORKSPACE_ROOT: OpenCode reads such URLs from disk;
- a session id that is not an OpenCode id (`ses_` + letters and digits): ids become
  OpenCode URL paths, so `ses_x/../ses_other` would reach another caller's session;
- NaN/Infinity, and `historyLength` / `pageSize` (body or query) that are not 32-bit
  integers, and 0.3 HTTP+JSON parts that are empty objects: the a2a-sdk's 0.3
  compatibility layer answers those with HTTP 500 or -32603 instead of a client error.

JSON-RPC (`POST /`) gets a JSON-RPC error (HTTP 200); HTTP+JSON gets HTTP 400 in the
a2a-sdk's error shape. Bodies that are not JSON at all pass on: the routes answer them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import InvalidParamsError, InvalidRequestError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .http import send_json

MAX_JSON_DEPTH = 64
MAX_PARTS = 100
SESSION_ID = re.compile(r"^ses_[0-9A-Za-z_-]{1,128}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_URL_KEYS = frozenset({"url", "uri", "fileWithUri", "file_with_uri"})
_PART_LISTS = frozenset({"parts", "content"})
_BYTES_KEYS = ("raw", "bytes", "fileWithBytes", "file_with_bytes")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_INT32_KEYS = frozenset({"historyLength", "history_length", "pageSize", "page_size"})
_INT32 = (-(2**31), 2**31 - 1)
_LEGACY_PART_KINDS = ("text", "file", "data")


@dataclass(frozen=True)
class Problem:
    code: int  # JSON-RPC code
    kind: str  # data.type
    message: str


def _params_problem(message: str) -> Problem:
    return Problem(-32602, "INVALID_PARAMS", message)


class InputGuardMiddleware:
    """Refuses structurally hostile request bodies before any route parses them."""

    def __init__(self, app: ASGIApp, workspace_root: Path) -> None:
        self.app = app
        self.workspace_root = workspace_root.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _check_query(scope.get("query_string", b""))
        value: Any = None
        replay = receive
        if problem is None and scope["method"] in _BODY_METHODS:
            body, replay = await read_body(receive)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                problem = Problem(
                    -32700, "PARSE_ERROR", "Parse error: the body is not valid UTF-8."
                )
            else:
                value, problem = _parse(text)
                if problem is None and value is not None:
                    legacy = str(scope["path"]).startswith("/v1/")
                    problem = inspect(value, self.workspace_root, legacy_rest=legacy)
        if problem is None:
            await self.app(scope, replay, send)
            return
        if scope["path"] == "/":
            request_id = value.get("id") if isinstance(value, dict) else None
            if isinstance(request_id, bool) or not isinstance(request_id, str | int):
                request_id = None
            error = {
                "code": problem.code,
                "message": problem.message,
                "data": {"type": problem.kind},
            }
            await send_json(send, 200, {"jsonrpc": "2.0", "id": request_id, "error": error})
            return
        exc = InvalidParamsError if problem.code == -32602 else InvalidRequestError
        await send_json(send, 400, build_rest_error_payload(exc(message=problem.message)))


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text)
    return value


def _parse(text: str) -> tuple[Any, Problem | None]:
    if not text.strip():
        return None, None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float), None
    except RecursionError:
        return None, _too_deep()
    except _NotFinite:
        return None, Problem(
            -32700,
            "PARSE_ERROR",
            "Parse error: NaN, Infinity and out-of-range numbers are not JSON.",
        )
    except json.JSONDecodeError:
        return None, None  # not JSON: the route answers its own parse error
    except ValueError:  # e.g. an integer literal longer than Python converts
        return None, Problem(-32700, "PARSE_ERROR", "Parse error: a number is too long.")


def _check_query(query: bytes) -> Problem | None:
    if not query:
        return None
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    for key, value in pairs:
        if key in _INT32_KEYS and not _is_int32_text(value):
            return _params_problem(f"{key} must be a 32-bit integer.")
    return None


def _is_int32_text(value: str) -> bool:
    if not re.fullmatch(r"-?[0-9]{1,11}", value):
        return False
    return _INT32[0] <= int(value) <= _INT32[1]


def _too_deep() -> Problem:
    return Problem(
        -32600,
        "INVALID_REQUEST",
        f"Invalid request: JSON nested deeper than {MAX_JSON_DEPTH} levels.",
    )


def inspect(value: Any, workspace_root: Path, *, legacy_rest: bool = False) -> Problem | None:
    """The first problem in a parsed body, walking it without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return _too_deep()
        if isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        for key, item in node.items():
            problem = _check_entry(key, item, workspace_root, legacy_rest)
            if problem is not None:
                return problem
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
    return None


def _check_entry(key: str, item: Any, workspace_root: Path, legacy_rest: bool) -> Problem | None:
    if key in _PART_LISTS and isinstance(item, list):
        if len(item) > MAX_PARTS:
            return _params_problem(
                f"A message has {len(item)} parts; at most {MAX_PARTS} are accepted."
            )
        for index, part in enumerate(item):
            problem = _check_part_bytes(index, part)
            if problem is None and legacy_rest and key == "content":
                problem = _check_legacy_part(index, part)
            if problem is not None:
                return problem
    elif key in _INT32_KEYS and not isinstance(item, dict | list):
        if item is not None and not _is_int32(item):
            return _params_problem(f"{key} must be a 32-bit integer.")
    elif key in _URL_KEYS and isinstance(item, str):
        if not file_url_inside(item, workspace_root):
            return _params_problem(
                "A file URL must name a file inside the workspace root (OPENCODE_WORKSPACE_ROOT)."
            )
    elif key in ("session_id", "sessionId") and isinstance(item, str):
        return _check_session_id(item)
    elif key == "session" and isinstance(item, dict) and isinstance(item.get("id"), str):
        return _check_session_id(item["id"])
    return None


def _check_part_bytes(index: int, part: Any) -> Problem | None:
    if not isinstance(part, dict):
        return None
    holders = [part]
    if isinstance(part.get("file"), dict):
        holders.append(part["file"])
    for holder in holders:
        for key in _BYTES_KEYS:
            data = holder.get(key)
            if isinstance(data, str) and not is_base64(data):
                return _params_problem(f"Part {index}: {key} is not valid base64.")
    return None


def _is_int32(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _is_int32_text(value):
        return True
    return isinstance(value, int) and _INT32[0] <= value <= _INT32[1]


def _check_legacy_part(index: int, part: Any) -> Problem | None:
    if isinstance(part, dict) and not any(
        part.get(kind) is not None for kind in _LEGACY_PART_KINDS
    ):
        return _params_problem(f"Part {index} is empty; give it text, file or data.")
    return None


def _check_session_id(value: str) -> Problem | None:
    if SESSION_ID.match(value):
        return None
    return _params_problem(
        "A session id must be an OpenCode session id: ses_ followed by letters and digits."
    )


def is_base64(data: str) -> bool:
    """Standard or URL-safe base64, padded or not (what protobuf's JSON accepts)."""
    if not _BASE64.match(data):
        return False
    return len(data.rstrip("=")) % 4 != 1 and (len(data) % 4 == 0 or "=" not in data)


def file_url_inside(url: str, workspace_root: Path) -> bool:
    """False for a `file:` URL naming anything outside `workspace_root`."""
    if not url[:5].lower() == "file:":
        return True
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.netloc not in ("", "localhost"):
        return False
    path = unquote(parts.path)
    if "\x00" in path or not path.startswith("/"):
        return False
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    root = workspace_root.resolve()
    return resolved == root or root in resolved.parents


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body (already capped by BodyLimitMiddleware) and a replay."""
    chunks: list[bytes] = []
    tail: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            tail.append(message)
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending: list[Message] = [{"type": "http.request", "body": body}, *tail]

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return body, replay
