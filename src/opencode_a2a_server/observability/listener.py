"""The metrics port (A2A_METRICS_PORT): `GET /metrics` without authentication.

A deliberately small HTTP/1.1 responder on its own socket: one request per connection,
only `GET /metrics` (and HEAD), everything else 404/405. It shares the application's
event loop, so scraping sees the same registry. Meant for a private network: whoever
reaches the port can read the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0


class MetricsListener:
    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        bound = self._server.sockets[0].getsockname()
        self.port = int(bound[1])
        log.info("metrics served on http://%s:%s/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, content_type = await self._answer(head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, body, content_type = "400 Bad Request", b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        payload = b"" if head.startswith(b"HEAD ") else body
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1"):
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target != "/metrics":
            return "404 Not Found", b"not found; metrics are at /metrics\n", "text/plain"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"method not allowed\n", "text/plain"
        return "200 OK", await self.metrics.render(), CONTENT_TYPE
