"""The ASGI application: A2A routes, guards, health, and the runtime behind them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import DatabasePushNotificationConfigStore
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, sse
from .auth import Authenticator, BearerAuthMiddleware, BodyLimitMiddleware
from .card import build_agent_card
from .config import Settings
from .errors import UpstreamError
from .execution.changes import FileCaps
from .execution.directories import DirectoryPolicy
from .execution.executor import ExecutorOptions, OpenCodeExecutor
from .execution.interrupts import InterruptService
from .extensions.methods import build_registry
from .extensions.registry import Registry
from .extensions.router import JsonRpcRouter
from .extensions.sessions import SessionMethods
from .handler import OpenCodeRequestHandler
from .observability import RequestLogMiddleware, tracing
from .observability.listener import MetricsListener
from .observability.metrics import CONTENT_TYPE, Metrics
from .observability.upstream import UpstreamObserver
from .push import PushDispatcher
from .security.input import InputGuardMiddleware
from .security.limits import RateLimiter, RateLimitMiddleware, TurnGate, TurnLimitMiddleware
from .shutdown import Drain, DrainMiddleware
from .store.bindings import BindingStore
from .store.database import create_engine
from .store.durable_tasks import UpsertTaskStore
from .store.gate import WriteGate
from .store.interrupts import InterruptStore
from .store.leases import LeaseStore
from .store.migrations import upgrade
from .store.tasks import WriteBehindTaskStore
from .upstream.client import OpenCodeClient
from .upstream.events import EventHub
from .upstream.process import ManagedOpenCode, find_opencode_binary

if TYPE_CHECKING:
    from .grpc_server import GrpcListener

log = logging.getLogger(__name__)

SSE_SHUTDOWN_GRACE = 2.0


@dataclass
class Runtime:
    """Everything with a lifetime: upstream connection, event hub, stores."""

    settings: Settings
    client: OpenCodeClient
    hub: EventHub
    task_store: WriteBehindTaskStore
    bindings: BindingStore
    interrupts: InterruptService
    leases: LeaseStore
    opencode_binary: str | None = None
    managed: ManagedOpenCode | None = None


def create_app(settings: Settings) -> FastAPI:
    """Build the application; upstream connections open in its lifespan."""
    engine = create_engine(settings.database_url)
    password = settings.opencode_server_password
    client = OpenCodeClient(
        str(settings.opencode_base_url or "http://127.0.0.1:0"),
        username=settings.opencode_server_username,
        password=password.get_secret_value() if password else None,
        timeout=settings.opencode_timeout,
    )
    hub = EventHub(client)
    metrics = Metrics()
    tracer = tracing.tracer()
    client.observer = UpstreamObserver(metrics, tracer)
    metrics.watch_reconnects(lambda: hub.reconnects)
    db_store = UpsertTaskStore(engine)
    gate = WriteGate()  # bookkeeping writes wait for new turns' prompts (store/gate.py)
    runtime = Runtime(
        settings=settings,
        client=client,
        hub=hub,
        task_store=WriteBehindTaskStore(db_store, gate=gate),
        bindings=BindingStore(engine),
        interrupts=InterruptService(
            InterruptStore(engine),
            client,
            ttl=settings.a2a_interrupt_request_ttl_seconds,
            tombstone_ttl=settings.a2a_interrupt_tombstone_ttl_seconds,
        ),
        leases=LeaseStore(engine, settings.replica_id),
    )
    if settings.opencode_base_url is None:
        # Resolved now so a missing binary stops startup with one clear line.
        runtime.opencode_binary = find_opencode_binary(settings.opencode_bin)
    executor = OpenCodeExecutor(
        client=client,
        hub=hub,
        bindings=runtime.bindings,
        interrupts=runtime.interrupts,
        leases=runtime.leases,
        persisted=runtime.task_store.settled,
        gate=gate,
        options=ExecutorOptions(
            workspace_root=settings.workspace_root,
            allow_directory_override=settings.a2a_allow_directory_override,
            default_model=settings.default_model,
            stream_timeout=settings.stream_timeout,
            file_caps=FileCaps(
                per_file=settings.a2a_changes_max_file_bytes,
                per_turn=settings.a2a_changes_max_total_bytes,
            ),
        ),
    )
    directories = DirectoryPolicy(
        settings.workspace_root, allow_override=settings.a2a_allow_directory_override
    )
    sessions = SessionMethods(
        client, runtime.bindings, directories, shell_enabled=settings.a2a_enable_session_shell
    )
    registry = build_registry(
        interrupts=runtime.interrupts,
        sessions=sessions,
        client=client,
        directories=directories,
        workspace_mutations=settings.a2a_enable_workspace_mutations,
    )
    executor.metrics = metrics
    metrics.refresh_with(_count_pending_asks(metrics, runtime.interrupts))
    card = build_agent_card(settings, registry)
    turns = TurnGate(settings.a2a_max_concurrent_turns_per_principal)
    push = _push(settings, engine)
    handler = OpenCodeRequestHandler(
        agent_executor=executor,
        task_store=turns.track(runtime.task_store),
        agent_card=card,
        push_config_store=push.store if push else None,
        push_sender=push,
        push_allowed_hosts=settings.push_allowed_hosts,
        task_ids=runtime.task_store.fresh_ids,
    )
    app_push = push
    if push is not None:
        metrics.watch_push(push.stats.as_dict)
    listener = (
        MetricsListener(metrics, settings.a2a_host, settings.a2a_metrics_port)
        if settings.a2a_metrics_port
        else None
    )
    drain = Drain(settings.a2a_shutdown_grace_seconds)
    registry.push_enabled = push is not None
    sessions.handler = handler
    authenticator = Authenticator.from_settings(settings)
    limiter = RateLimiter(rate) if (rate := settings.a2a_rate_limit_per_minute) else None
    grpc_listener = _grpc_listener(settings, handler, authenticator, limiter, turns)
    if grpc_listener is not None:
        grpc_listener.guard.drain = drain
        grpc_listener.guard.metrics = metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await db_store.initialize()
        applied = await upgrade(engine)
        if applied:
            log.info("database schema migrated to version %s", applied[-1])
        await _start_upstream(runtime)
        await _recover(runtime, handler, own=True)
        if listener is not None:
            await listener.start()
        background = [
            asyncio.create_task(_expire_asks(runtime), name="expire-asks"),
            asyncio.create_task(_keep_leases(runtime, handler), name="turn-leases"),
        ]
        upstream_continues = runtime.managed is None

        def settling() -> int:
            return handler.requests_in_flight() + (app_push.pending if app_push else 0)

        async def stop_turns() -> None:
            for task in background:
                task.cancel()  # lease upkeep would take the handed-off leases back
            await executor.aclose(upstream_continues=upstream_continues)
            # The last statuses (hand-off, failed) reach the open streams before the
            # queues are closed.
            await drain.settle(lambda: settling() + handler.undelivered())
            drain.stopped = True
            await handler.aclose()  # ends the streams that follow a task, cleanly

        drain.attach()
        supervisor = asyncio.create_task(
            drain.supervise(executor.running, lambda: executor.running() + settling(), stop_turns),
            name="drain",
        )
        try:
            if grpc_listener is not None:
                await grpc_listener.start()
            _tune_gc()
            yield
        finally:
            supervisor.cancel()
            if grpc_listener is not None:
                await grpc_listener.stop(SSE_SHUTDOWN_GRACE)
            for task in background:
                task.cancel()
            if listener is not None:
                await listener.stop()
            await executor.aclose(upstream_continues=upstream_continues)
            await handler.aclose()
            if app_push is not None:
                await app_push.aclose()
            await runtime.task_store.aclose()
            await hub.stop()
            if runtime.managed is not None:
                await runtime.managed.stop()
            await client.aclose()
            await engine.dispose()

    app = FastAPI(
        title="opencode-a2a-server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **tracing.fastapi_telemetry_off(),
    )
    app.state.runtime = runtime
    app.state.push = push
    app.state.metrics = metrics
    app.state.drain = drain
    sse.install()  # SSE frames get ids, for resubscribe with Last-Event-ID
    routes = [
        *create_agent_card_routes(card),
        Route("/health", _health, methods=["GET"]),
        # On the main port (behind auth) unless A2A_METRICS_PORT serves it apart.
        Route("/metrics", _metrics_elsewhere if listener else _metrics, methods=["GET"]),
        _jsonrpc_route(handler, registry),
        # The REST routes end with a catch-all /{tenant} mount, so they go last.
        *create_rest_routes(
            handler, enable_v0_3_compat=True, shutdown_grace_period=SSE_SHUTDOWN_GRACE
        ),
    ]
    app.router.routes.extend(routes)
    # Outermost last: log -> auth -> rate limit -> body limit -> drain -> input guard ->
    # turn cap.
    if turns.enabled:
        app.add_middleware(TurnLimitMiddleware, gate=turns)
    app.add_middleware(InputGuardMiddleware, workspace_root=settings.workspace_root)
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.a2a_max_request_body_bytes)
    if limiter is not None:
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    app.add_middleware(BearerAuthMiddleware, authenticator=authenticator)
    app.add_middleware(
        RequestLogMiddleware,
        log_payloads=settings.a2a_log_payloads,
        body_limit=settings.a2a_log_body_limit,
        metrics=metrics,
        tracer=tracer,
    )
    return app


def _push(settings: Settings, engine: AsyncEngine) -> PushDispatcher | None:
    """Push delivery, when A2A_PUSH_NOTIFICATIONS is on (configs live in the database)."""
    if not settings.a2a_push_notifications:
        return None
    key = settings.a2a_push_signing_key
    return PushDispatcher(
        DatabasePushNotificationConfigStore(engine),
        signing_key=key.get_secret_value() if key else None,
        allowed_hosts=settings.push_allowed_hosts,
    )


def _grpc_listener(
    settings: Settings,
    handler: OpenCodeRequestHandler,
    authenticator: Authenticator,
    limiter: RateLimiter | None,
    turns: TurnGate,
) -> GrpcListener | None:
    """The gRPC listener when A2A_GRPC_PORT is set (the module needs the grpc extra)."""
    if settings.a2a_grpc_port is None:
        return None
    from .grpc_server import GrpcListener

    return GrpcListener(settings, handler, authenticator=authenticator, limiter=limiter, gate=turns)


def _jsonrpc_route(handler: OpenCodeRequestHandler, registry: Registry) -> Route:
    """`POST /`: extension methods from the registry, A2A methods to the SDK."""
    (sdk_route,) = create_jsonrpc_routes(
        handler, "/", enable_v0_3_compat=True, shutdown_grace_period=SSE_SHUTDOWN_GRACE
    )
    assert isinstance(sdk_route, Route)
    return Route("/", JsonRpcRouter(registry, sdk_route.endpoint).handle, methods=["POST"])


LEASE_HEARTBEAT = 10.0
LEASE_STALE_AFTER = 35.0


async def _recover(runtime: Runtime, handler: OpenCodeRequestHandler, *, own: bool) -> None:
    """Re-attach turns this process drove before a restart, and orphaned ones."""
    for lease in await runtime.leases.adopt(LEASE_STALE_AFTER, own=own):
        try:
            resumed = await handler.resume_task(lease)
        except Exception:
            log.exception("re-attaching task %s failed", lease.task_id)
            resumed = False
        if resumed:
            log.info("re-attached task %s (session %s)", lease.task_id, lease.session_id)
        else:
            await runtime.leases.release(lease.task_id)


async def _keep_leases(runtime: Runtime, handler: OpenCodeRequestHandler) -> None:
    """Heartbeat this process's leases; adopt leases of processes that went away."""
    while True:
        await asyncio.sleep(LEASE_HEARTBEAT)
        try:
            await runtime.leases.heartbeat()
            await _recover(runtime, handler, own=False)
        except Exception:
            log.exception("turn lease upkeep failed")


async def _expire_asks(runtime: Runtime) -> None:
    """Withdraw asks nobody answered within A2A_INTERRUPT_REQUEST_TTL_SECONDS."""
    interval = min(30.0, max(0.5, runtime.settings.a2a_interrupt_request_ttl_seconds / 4))
    while True:
        await asyncio.sleep(interval)
        try:
            for ask in await runtime.interrupts.expire_due():
                log.info("ask %s of task %s expired", ask.request_id, ask.task_id)
        except Exception:
            log.exception("expiring asks failed")


async def _start_upstream(runtime: Runtime) -> None:
    settings = runtime.settings
    if runtime.opencode_binary is not None:
        managed = ManagedOpenCode(
            binary=runtime.opencode_binary,
            workspace=settings.workspace_root,
            data_dir=settings.opencode_data_dir,
            on_restart=_follow_restart(runtime),
        )
        await managed.start()
        runtime.managed = managed
        runtime.client.set_base_url(managed.base_url)
        runtime.client.set_credentials(managed.username, managed.password)
        log.info("managed OpenCode started at %s (pid %s)", managed.base_url, managed.pid)
    await runtime.hub.start()
    if not await runtime.hub.wait_connected(3):
        log.warning("OpenCode event stream not connected yet at %s", runtime.client.base_url)


def _follow_restart(runtime: Runtime) -> Callable[[str], Awaitable[None]]:
    async def on_restart(base_url: str) -> None:
        runtime.client.set_base_url(base_url)
        runtime.hub.retry_now()
        log.warning("managed OpenCode restarted at %s", base_url)

    return on_restart


async def _metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(await metrics.render(), media_type=CONTENT_TYPE)


async def _metrics_elsewhere(request: Request) -> Response:
    return JSONResponse({"error": "metrics are served on A2A_METRICS_PORT"}, status_code=404)


def _count_pending_asks(
    metrics: Metrics, interrupts: InterruptService
) -> Callable[[], Awaitable[None]]:
    async def refresh() -> None:
        metrics.pending_asks.set(await interrupts.pending_count())

    return refresh


async def _health(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    upstream: dict[str, object] = {"base_url": runtime.client.base_url}
    try:
        answer = await runtime.client.health(timeout=3.0)
        upstream.update(healthy=bool(answer.get("healthy")), version=answer.get("version"))
    except UpstreamError as exc:
        upstream.update(healthy=False, error=exc.message)
    upstream["event_stream_connected"] = runtime.hub.connected
    if runtime.managed is not None:
        upstream["managed_pid"] = runtime.managed.pid
    ok = bool(upstream.get("healthy")) and runtime.hub.connected
    draining = request.app.state.drain.draining
    body: dict[str, object] = {
        "status": "draining" if draining else "ok" if ok else "degraded",
        "adapter": {"name": "opencode-a2a-server", "version": __version__},
        "upstream": upstream,
    }
    if request.app.state.push is not None:
        body["push"] = request.app.state.push.stats.as_dict()
    return JSONResponse(body, status_code=200 if ok and not draining else 503)


GC_YOUNG_THRESHOLD = 7000  # objects allocated between two young collections (default 700)


def _tune_gc() -> None:
    """Make the garbage collector cheaper per turn once startup is done.

    What startup made (modules, the app, the SDK's descriptors) lives as long as the
    process: frozen, it is never traversed again. A turn allocates thousands of
    short-lived dicts and protobuf messages; collecting the young generation ten times
    less often cut its passes from ~1.3 ms of CPU per turn, in pauses of up to 2 ms,
    to a fraction of that.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)
