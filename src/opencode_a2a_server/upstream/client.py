"""A small typed client for the parts of OpenCode's HTTP API the adapter uses.

Built on aiohttp: every turn makes at least two calls to OpenCode (create the session,
send the prompt) and reads the one shared event stream, so the client's own cost per
call is on every turn's path. aiohttp's connection pool and HTTP parser cost a fraction
of httpx's per call (measured in docs/benchmarks.md), which keeps the adapter's CPU
and latency small next to OpenCode's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from ..errors import UpstreamHTTPError, UpstreamPayloadError, UpstreamUnreachable
from ..observability.upstream import UpstreamObserver

CONNECT_TIMEOUT = 5.0
STREAM_HEADERS_TIMEOUT = 5.0
STREAM_READ_TIMEOUT = 35.0
SHORT_CALLS = 64  # connections for ordinary requests to OpenCode
_DEFAULT = object()  # "use the client's timeout"


@dataclass(frozen=True)
class UpstreamResponse:
    """A whole response from OpenCode: status, headers and body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    reason_phrase: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class EventStream:
    """An open SSE response: its body as it arrives, in chunks of bytes."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: CIMultiDictProxy[str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


class OpenCodeClient:
    """Calls `opencode serve` with basic auth; every failure becomes an UpstreamError."""

    # Times, counts and traces each call and forwards the request id (see observability).
    observer = UpstreamObserver()

    def __init__(
        self,
        base_url: str,
        *,
        username: str = "opencode",
        password: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._auth = _basic(username, password)
        # Short calls share one pool; calls that stay open (the event stream, a command
        # that returns when its turn ends) get their own, so they never hold it up.
        # Sessions are made on first use: aiohttp binds them to the running loop.
        self._short: aiohttp.ClientSession | None = None
        self._long: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def set_base_url(self, base_url: str) -> None:
        """Point at a new address (the managed OpenCode may restart on another port)."""
        self.base_url = base_url.rstrip("/")

    def set_credentials(self, username: str, password: str | None) -> None:
        """Use new basic-auth credentials (a managed OpenCode gets a fresh password)."""
        if password:
            self._auth = _basic(username, password)

    async def aclose(self) -> None:
        for session in (self._short, self._long):
            if session is not None and not session.closed:
                await session.close()
        self._short = self._long = None

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        loop = asyncio.get_running_loop()
        if self._short is None or self._long is None or self._loop is not loop:
            self._loop = loop
            self._short = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=SHORT_CALLS, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=CONNECT_TIMEOUT),
            )
            self._long = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        return self._short, self._long

    def _headers(self, extra: Mapping[str, str], json_body: bool) -> dict[str, str]:
        headers = dict(extra)
        if self._auth:
            headers["Authorization"] = self._auth
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    # -- plumbing -------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        directory: str | None = None,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body (None for 204)."""
        response = await self.send(
            method,
            path,
            directory=directory,
            params=params,
            json_body=json_body,
            timeout=timeout if timeout is not None else _DEFAULT,
        )
        return _decode(response, method, path)

    async def send(
        self,
        method: str,
        path: str,
        *,
        directory: str | None = None,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | object | None = _DEFAULT,
    ) -> UpstreamResponse:
        """Send one request and return the whole response (errors still raise).

        `timeout`: seconds for the whole call, the client's default when left out, or
        None for a call that may take as long as its turn (it gets the other pool).
        """
        _check_path(path)
        query = _query(params, directory)
        body = None if json_body is None else json.dumps(json_body).encode()
        short, long = self._sessions()
        pool = long if timeout is None else short
        call_timeout: Any = aiohttp.helpers.sentinel
        if isinstance(timeout, int | float):
            call_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT)
        with self.observer.call(method, path) as extra:
            try:
                async with pool.request(
                    method,
                    self.base_url + path,
                    params=query,
                    data=body,
                    headers=self._headers(extra, body is not None),
                    timeout=call_timeout,
                ) as raw:
                    response = await _whole(raw)
            except TimeoutError as exc:
                raise UpstreamUnreachable(
                    f"OpenCode did not answer {method} {path} in time ({type(exc).__name__})"
                ) from exc
            except aiohttp.ClientError as exc:
                raise UpstreamUnreachable(
                    f"OpenCode is unreachable at {self.base_url} ({type(exc).__name__}: {exc})"
                ) from exc
            if response.status_code >= 400:
                raise UpstreamHTTPError(response.status_code, _error_message(response))
        return response

    @asynccontextmanager
    async def stream_events(self, path: str = "/global/event") -> AsyncIterator[EventStream]:
        """Open an SSE stream; raises UpstreamError if it fails.

        OpenCode accepts connections before it can serve them, and a request in that
        window may never be answered: the response headers must come within
        STREAM_HEADERS_TIMEOUT. Once open, OpenCode sends a heartbeat every 10 s, so
        STREAM_READ_TIMEOUT of silence means the stream is dead.
        """
        _, long = self._sessions()
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=STREAM_READ_TIMEOUT
        )
        headers = self._headers({"Accept": "text/event-stream"}, False)
        try:
            async with asyncio.timeout(STREAM_HEADERS_TIMEOUT):
                response = await long.get(self.base_url + path, headers=headers, timeout=timeout)
        except TimeoutError:
            raise UpstreamUnreachable(
                f"OpenCode at {self.base_url} accepted the event-stream connection but did "
                "not answer (still starting?)"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"OpenCode event stream at {self.base_url} failed ({type(exc).__name__})"
            ) from exc
        try:
            if response.status != 200:
                _decode(await _whole(response), "GET", path)
            yield EventStream(response)
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"OpenCode event stream at {self.base_url} failed ({type(exc).__name__})"
            ) from exc
        finally:
            response.close()  # never drain an endless stream: drop the connection

    # -- endpoints ------------------------------------------------------------

    async def health(self, timeout: float = 2.0) -> dict[str, Any]:
        result = await self.request("GET", "/global/health", timeout=timeout)
        return _expect_dict(result, "/global/health")

    async def create_session(self, directory: str, title: str) -> dict[str, Any]:
        result = await self.request(
            "POST", "/session", directory=directory, json_body={"title": title}
        )
        return _expect_dict(result, "POST /session")

    async def get_session(self, session_id: str, directory: str | None = None) -> dict[str, Any]:
        result = await self.request("GET", f"/session/{session_id}", directory=directory)
        return _expect_dict(result, "GET /session/{id}")

    async def prompt_async(self, session_id: str, directory: str, body: dict[str, Any]) -> None:
        await self.request(
            "POST", f"/session/{session_id}/prompt_async", directory=directory, json_body=body
        )

    async def abort(self, session_id: str, directory: str | None = None) -> None:
        await self.request("POST", f"/session/{session_id}/abort", directory=directory)

    async def messages_page(
        self, session_id: str, directory: str | None, limit: int, before: str | None = None
    ) -> tuple[list[Any], str | None]:
        """The latest `limit` messages before the cursor, oldest first, and the next cursor."""
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        path = f"/session/{session_id}/message"
        response = await self.send("GET", path, directory=directory, params=params)
        result = _decode(response, "GET", path)
        if not isinstance(result, list):
            raise UpstreamPayloadError("OpenCode returned a non-list message history")
        return result, response.headers.get("x-next-cursor") or None

    async def messages(self, session_id: str, directory: str | None = None) -> list[Any]:
        result = await self.request("GET", f"/session/{session_id}/message", directory=directory)
        if not isinstance(result, list):
            raise UpstreamPayloadError("OpenCode returned a non-list message history")
        return result

    async def session_status(self, directory: str | None = None) -> dict[str, Any]:
        result = await self.request("GET", "/session/status", directory=directory)
        return _expect_dict(result, "/session/status")


async def _whole(raw: aiohttp.ClientResponse) -> UpstreamResponse:
    return UpstreamResponse(raw.status, raw.headers, await raw.read(), raw.reason or "")


def _basic(username: str, password: str | None) -> str | None:
    if not password:
        return None
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


def _query(params: dict[str, Any] | None, directory: str | None) -> list[tuple[str, str]]:
    """Query parameters as OpenCode reads them (booleans as true/false, lists repeated)."""
    items: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        for one in value if isinstance(value, list | tuple) else [value]:
            if isinstance(one, bool):
                items.append((key, "true" if one else "false"))
            elif one is not None:
                items.append((key, str(one)))
    if directory is not None:
        items.append(("directory", directory))
    return items


_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def _check_path(path: str) -> None:
    """Every path segment (ids included) must be a plain identifier: no traversal."""
    for segment in path.strip("/").split("/"):
        if segment and (not _SEGMENT.fullmatch(segment) or ".." in segment):
            raise UpstreamPayloadError(f"Refusing to call OpenCode with the path {path!r}")


def _decode(response: UpstreamResponse, method: str, path: str) -> Any:
    if response.status_code >= 400:
        raise UpstreamHTTPError(response.status_code, _error_message(response))
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UpstreamPayloadError(f"OpenCode returned invalid JSON for {method} {path}") from exc


def _error_message(response: UpstreamResponse) -> str:
    """Pull a readable message out of OpenCode's several error shapes."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip()
        return text[:300] or response.reason_phrase
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
        if body.get("message"):
            return str(body["message"])
        if body.get("name") or body.get("_tag"):
            return str(body.get("name") or body.get("_tag"))
    return json.dumps(body)[:300]


def _expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UpstreamPayloadError(f"OpenCode returned an unexpected payload for {what}")
    return value
