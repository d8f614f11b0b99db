"""A fake OpenCode for unit tests: a real HTTP server on 127.0.0.1 with canned answers.

Routes are declared like this:

    route = upstream.get("/agent").respond(json=AGENTS)
    ... call the code under test with a client pointed at upstream.url ...
    assert route.calls[-1].params["directory"] == "/srv/ws"

A request that matches no route is answered 404 and still recorded in `upstream.calls`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Call], Answer]


class Route:
    def __init__(self, methods: Iterable[str] | None, path: str | None) -> None:
        self.methods = {m.upper() for m in methods} if methods is not None else None
        self.path = path
        self.calls: list[Call] = []
        self._answer: Answer | Responder = Answer()

    def respond(
        self,
        status: int = 200,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Route:
        self._answer = Answer(status, json, body, headers or {})
        return self

    def answer_with(self, responder: Responder) -> Route:
        """Answer each call with what `responder(call)` returns."""
        self._answer = responder
        return self

    def matches(self, call: Call) -> bool:
        if self.methods is not None and call.method not in self.methods:
            return False
        return self.path is None or call.path == self.path

    def answer(self, call: Call) -> Answer:
        self.calls.append(call)
        return self._answer(call) if callable(self._answer) else self._answer


class FakeUpstream:
    """The server; `url` is its base URL once started."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.calls: list[Call] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    def route(
        self, *, method: str | None = None, path: str | None = None, method__in: Any = None
    ) -> Route:
        methods = [method] if method else method__in
        route = Route(methods, path)
        self.routes.append(route)
        return route

    def get(self, path: str) -> Route:
        return self.route(method="GET", path=path)

    def post(self, path: str) -> Route:
        return self.route(method="POST", path=path)

    def reset(self) -> None:
        self.routes.clear()
        self.calls.clear()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        call = Call(
            method=request.method,
            path=request.path,
            params=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            content=await request.read(),
        )
        self.calls.append(call)
        # The newest matching route wins, so a test can override a fixture's default.
        for route in reversed(self.routes):
            if route.matches(call):
                answer = route.answer(call)
                break
        else:
            answer = Answer(404, {"name": "NotFound", "data": {"message": "no such route"}})
        if answer.body is not None:
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        if answer.json is None and answer.status == 204:
            return web.Response(status=204, headers=answer.headers)
        return web.json_response(answer.json, status=answer.status, headers=answer.headers)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


class ThreadedUpstream(FakeUpstream):
    """The same fake on its own event loop in a thread, for tests that call asyncio.run."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start_in_thread(self) -> None:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="fake-upstream", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake upstream did not start")

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@pytest.fixture
def threaded_upstream() -> Iterator[ThreadedUpstream]:
    fake = ThreadedUpstream()
    fake.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()
