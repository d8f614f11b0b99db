"""The adapter CLI with timing probes and what-if patches (diagnostics only).

- $BENCH_TRACE_FILE: wrap a few functions of the adapter (upstream calls, stores,
  turn phases, hub dispatch) to record monotonic timestamps, written there as JSON
  lines when the process exits (used by `python -m bench.trace`).
- $BENCH_PROFILE_FILE: run the whole process under cProfile (CPU clock) and dump the
  stats there at exit.
- $BENCH_EXPERIMENTS: comma-separated what-if changes, applied as monkeypatches, to
  measure a suggested fix before anyone writes it (`python -m bench.run --experiment`):
  see EXPERIMENTS.

Nothing under src/ is changed: everything is applied at import time here.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

TRACE: list[tuple[float, float, str, str]] = []


def _record(name: str, start: float, detail: str = "") -> None:
    TRACE.append((start, time.monotonic() - start, name, detail))


def _wrap_async(owner: Any, attr: str, name: str, detail: Callable[..., str] | None = None) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return await original(*args, **kwargs)
        finally:
            _record(name, start, detail(*args, **kwargs) if detail else "")

    setattr(owner, attr, wrapper)


def install() -> None:
    from a2a.server.tasks import DatabaseTaskStore

    from opencode_a2a_server.execution import executor, stream, turn
    from opencode_a2a_server.store import bindings, tasks
    from opencode_a2a_server.upstream import client, events

    def upstream_detail(self: Any, method: str, path: str, *a: Any, **k: Any) -> str:
        return f"{method} {path.split('?')[0]}"

    _wrap_async(client.OpenCodeClient, "request", "upstream", upstream_detail)
    _wrap_async(bindings.BindingStore, "get", "bindings.get")
    _wrap_async(bindings.BindingStore, "bind", "bindings.bind")
    _wrap_async(DatabaseTaskStore, "save", "db.task_save")
    _wrap_async(tasks.WriteBehindTaskStore, "save", "store.save")
    _wrap_async(executor.OpenCodeExecutor, "execute", "executor.execute")
    _wrap_async(executor.OpenCodeExecutor, "plan", "executor.plan")
    _wrap_async(executor.OpenCodeExecutor, "_open_task", "executor.open_task")
    _wrap_async(executor.OpenCodeExecutor, "_turn_request", "executor.turn_request")
    _wrap_async(turn.Turn, "_start", "turn.prompt")
    _wrap_async(turn.Turn, "_consume", "turn.consume")
    _wrap_async(turn.Turn, "_finish", "turn.finish")
    _wrap_async(turn.Turn, "_stored_turn", "turn.stored_turn")
    _wrap_async(stream.TaskStream, "text_chunk", "stream.text_chunk")
    _wrap_async(stream.TaskStream, "text_snapshot", "stream.text_snapshot")

    def status_detail(self: Any, state: int, *a: Any, **k: Any) -> str:
        return str(state)

    _wrap_async(stream.TaskStream, "status", "stream.status", status_detail)

    from a2a.server.agent_execution import active_task

    def event_kind(self: Any, event: Any, *a: Any, **k: Any) -> str:
        return type(event).__name__

    _wrap_async(active_task.EventConsumer, "_process_event", "sdk.consume", event_kind)

    dispatch = events.EventHub.dispatch

    def traced_dispatch(self: Any, raw: dict[str, Any]) -> None:
        start = time.monotonic()
        dispatch(self, raw)
        event = raw.get("payload", raw)
        kind = str(event.get("type")) if isinstance(event, dict) else "?"
        _record("hub.dispatch", start, kind)

    events.EventHub.dispatch = traced_dispatch  # type: ignore[method-assign]

    from opencode_a2a_server import observability

    call = observability.RequestLogMiddleware.__call__

    async def traced_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await call(self, scope, receive, send)
            return
        start = time.monotonic()

        async def traced_send(message: Any) -> None:
            if message.get("type") == "http.response.body":
                body = message.get("body") or b""
                if b"TASK_STATE_COMPLETED" in body:
                    _record("asgi.send_completed", time.monotonic())
                elif body:
                    _record("asgi.send", time.monotonic(), str(len(body)))
            await send(message)

        _record("asgi.request_start", start, scope.get("path", ""))
        try:
            await call(self, scope, receive, traced_send)
        finally:
            _record("asgi.request", start, scope.get("path", ""))

    observability.RequestLogMiddleware.__call__ = traced_call  # type: ignore[method-assign]

    import gc

    started: dict[str, float] = {}

    def gc_probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started["t"] = time.monotonic()
        elif "t" in started:
            _record("gc", started.pop("t"), str(info.get("generation")))

    gc.callbacks.append(gc_probe)


# --------------------------------------------------------------------------- what-ifs


def _exp_otel_off() -> None:
    """a2a-sdk wraps its request path in OpenTelemetry spans unless this is false."""
    os.environ["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = "false"


def _exp_fast_get() -> None:
    """Subscription.get without a wait_for (a new Task) per event when one is queued."""
    import asyncio

    from opencode_a2a_server.upstream import events

    original = events.Subscription.get

    async def get(self: Any, timeout: float | None = None) -> Any:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return await original(self, timeout)

    events.Subscription.get = get  # type: ignore[method-assign]


def _exp_coalesce() -> None:
    """Merge text deltas of one part that are already queued into one event.

    Nothing waits for more: only the backlog that built up while the turn was busy is
    merged, so a slow stream is forwarded as before and a fast one in fewer chunks.
    """
    from opencode_a2a_server.upstream import events

    original = events.Subscription.get

    def key(item: Any) -> Any:
        if not isinstance(item, dict) or item.get("type") != "message.part.delta":
            return None
        props = item.get("properties") or {}
        return (props.get("messageID"), props.get("partID"), props.get("field"))

    async def get(self: Any, timeout: float | None = None) -> Any:
        item = await original(self, timeout)
        first = key(item)
        if first is None:
            return item
        pending = self._queue._queue  # the asyncio.Queue's deque
        chunks = None
        while pending and key(pending[0]) == first:
            nxt = self._queue.get_nowait()
            if chunks is None:
                chunks = [str(item["properties"].get("delta") or "")]
            chunks.append(str(nxt["properties"].get("delta") or ""))
        if chunks is None:
            return item
        props = {**item["properties"], "delta": "".join(chunks)}
        return {**item, "properties": props}

    events.Subscription.get = get  # type: ignore[method-assign]


def _exp_deferred_writes() -> None:
    """Publish a state change before its database write commits (write in background)."""
    import asyncio

    from opencode_a2a_server.store import tasks

    store_cls = tasks.WriteBehindTaskStore
    pending: set[asyncio.Task[None]] = set()
    locks: dict[Any, asyncio.Lock] = {}

    async def save(self: Any, task: Any, context: Any) -> None:
        key = (self._owner(context), task.id)
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = tasks._Entry(tasks.Task(), context)
        entry.task.CopyFrom(task)
        entry.context = context
        if entry.persisted_state != task.status.state:
            entry.persisted_state = task.status.state
            lock = locks.setdefault(key, asyncio.Lock())

            async def write() -> None:
                async with lock:
                    await self._write(key, entry)

            job = asyncio.get_running_loop().create_task(write())
            pending.add(job)
            job.add_done_callback(pending.discard)
        else:
            entry.dirty = True
            self._schedule_flush()

    store_cls.save = save  # type: ignore[method-assign]


def _exp_new_context_fast() -> None:
    """Upper bound of skipping the database on a new context's critical path.

    Valid only for a benchmark where every turn starts a new context: the binding
    lookup is skipped (no binding can exist), the binding is written in the
    background, and a task unknown to the write-behind store is not looked up.
    """
    import asyncio

    from opencode_a2a_server.store import bindings, tasks

    pending: set[asyncio.Task[None]] = set()
    original_bind = bindings.BindingStore.bind

    async def get(self: Any, owner: str, context_id: str, directory: str) -> Any:
        return None

    async def bind(self: Any, *args: Any, **kwargs: Any) -> None:
        job = asyncio.get_running_loop().create_task(original_bind(self, *args, **kwargs))
        pending.add(job)
        job.add_done_callback(pending.discard)

    async def task_get(self: Any, task_id: str, context: Any) -> Any:
        entry = self._live.get((self._owner(context), task_id))
        if entry is None:
            return None
        copy = tasks.Task()
        copy.CopyFrom(entry.task)
        return copy

    bindings.BindingStore.get = get  # type: ignore[method-assign]
    bindings.BindingStore.bind = bind  # type: ignore[method-assign]
    tasks.WriteBehindTaskStore.get = task_get  # type: ignore[method-assign]


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "otel-off": _exp_otel_off,
    "fast-get": _exp_fast_get,
    "coalesce": _exp_coalesce,
    "deferred-writes": _exp_deferred_writes,
    "new-context-fast": _exp_new_context_fast,
}


def apply_experiments(names: str) -> None:
    """Apply the named what-ifs in EXPERIMENTS order (fast-get under coalesce)."""
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - set(EXPERIMENTS)
    if unknown:
        raise SystemExit(f"unknown experiment(s) {sorted(unknown)}; known: {list(EXPERIMENTS)}")
    for name, patch in EXPERIMENTS.items():
        if name in wanted:
            patch()


def _dump() -> None:
    path = os.environ.get("BENCH_TRACE_FILE")
    if not path:
        return
    with open(path, "w") as fh:
        for start, dur, name, detail in TRACE:
            fh.write(json.dumps([start, dur, name, detail]) + "\n")


def main() -> int:
    names = os.environ.get("BENCH_EXPERIMENTS", "")
    if "otel-off" in names:
        _exp_otel_off()  # before a2a is imported
    apply_experiments(names)
    if os.environ.get("BENCH_TRACE_FILE"):
        install()
    from opencode_a2a_server import cli

    profile_path = os.environ.get("BENCH_PROFILE_FILE")
    profiler = None
    if profile_path:
        import cProfile

        # CPU time, not wall time: waiting for the loop or being preempted is not work.
        clock = time.process_time if os.environ.get("BENCH_PROFILE_CLOCK") != "wall" else None
        profiler = cProfile.Profile(clock) if clock else cProfile.Profile()

        def dump_profile() -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        atexit.register(dump_profile)
        profiler.enable()
    atexit.register(_dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return cli.main(["serve"])


if __name__ == "__main__":
    raise SystemExit(main())
