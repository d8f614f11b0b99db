"""A small typed client for the parts of OpenCode's HTTP API the adapter uses."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ..errors import UpstreamHTTPError, UpstreamPayloadError, UpstreamUnreachable
from ..observability.upstream import UpstreamObserver

CONNECT_TIMEOUT = 5.0
STREAM_HEADERS_TIMEOUT = 5.0
STREAM_READ_TIMEOUT = 35.0
SHORT_CALLS = 32  # connections for ordinary requests to OpenCode


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
        auth = httpx.BasicAuth(username, password) if password else None
        # Short calls share a small pool: OpenCode answers them one at a time anyway,
        # and httpcore scans its whole pool on every request (a large pool costs CPU
        # under load). Calls that stay open (the event stream, a command that returns
        # when its turn ends) get their own pool, so they never hold the short ones up.
        self._http = httpx.AsyncClient(
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=SHORT_CALLS, max_keepalive_connections=SHORT_CALLS),
        )
        self._long = httpx.AsyncClient(
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=8),
        )

    def set_base_url(self, base_url: str) -> None:
        """Point at a new address (the managed OpenCode may restart on another port)."""
        self.base_url = base_url.rstrip("/")

    def set_credentials(self, username: str, password: str | None) -> None:
        """Use new basic-auth credentials (a managed OpenCode gets a fresh password)."""
        if password:
            self._http.auth = httpx.BasicAuth(username, password)
            self._long.auth = httpx.BasicAuth(username, password)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._long.aclose()

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
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
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
        timeout: float | object | None = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """Send one request and return the raw response (errors still raise)."""
        _check_path(path)
        query = dict(params or {})
        if directory is not None:
            query["directory"] = directory
        with self.observer.call(method, path) as headers:
            try:
                pool = self._long if timeout is None else self._http
                response = await pool.request(
                    method,
                    self.base_url + path,
                    params=query,
                    json=json_body,
                    headers=headers,
                    timeout=timeout,  # type: ignore[arg-type]
                )
            except httpx.TimeoutException as exc:
                raise UpstreamUnreachable(
                    f"OpenCode did not answer {method} {path} in time ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                raise UpstreamUnreachable(
                    f"OpenCode is unreachable at {self.base_url} ({type(exc).__name__}: {exc})"
                ) from exc
            if response.status_code >= 400:
                raise UpstreamHTTPError(response.status_code, _error_message(response))
        return response

    @asynccontextmanager
    async def stream_events(self, path: str = "/global/event") -> AsyncIterator[httpx.Response]:
        """Open an SSE stream; raises UpstreamError if it fails.

        OpenCode accepts connections before it can serve them, and a request in that
        window may never be answered: the response headers must come within
        STREAM_HEADERS_TIMEOUT. Once open, OpenCode sends a heartbeat every 10 s, so
        STREAM_READ_TIMEOUT of silence means the stream is dead.
        """
        timeout = httpx.Timeout(STREAM_READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        request = self._long.build_request("GET", self.base_url + path, timeout=timeout)
        try:
            async with asyncio.timeout(STREAM_HEADERS_TIMEOUT):
                response = await self._long.send(request, stream=True)
        except TimeoutError:
            raise UpstreamUnreachable(
                f"OpenCode at {self.base_url} accepted the event-stream connection but did "
                "not answer (still starting?)"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(
                f"OpenCode event stream at {self.base_url} failed ({type(exc).__name__})"
            ) from exc
        try:
            if response.status_code != 200:
                await response.aread()
                _decode(response, "GET", path)
            yield response
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(
                f"OpenCode event stream at {self.base_url} failed ({type(exc).__name__})"
            ) from exc
        finally:
            await response.aclose()

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


_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def _check_path(path: str) -> None:
    """Every path segment (ids included) must be a plain identifier: no traversal."""
    for segment in path.strip("/").split("/"):
        if segment and (not _SEGMENT.fullmatch(segment) or ".." in segment):
            raise UpstreamPayloadError(f"Refusing to call OpenCode with the path {path!r}")


def _decode(response: httpx.Response, method: str, path: str) -> Any:
    if response.status_code >= 400:
        raise UpstreamHTTPError(response.status_code, _error_message(response))
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except json.JSONDecodeError as exc:
        raise UpstreamPayloadError(f"OpenCode returned invalid JSON for {method} {path}") from exc


def _error_message(response: httpx.Response) -> str:
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
