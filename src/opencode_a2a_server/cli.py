"""Command line: `opencode-a2a-server serve | migrate | call | doctor`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from . import __version__
from .config import Settings, SettingsError, load_settings

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opencode-a2a-server",
        description="Serve the OpenCode coding agent over the A2A protocol (1.0 and 0.3).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser(
        "serve",
        help="run the A2A server",
        description=(
            "Run the A2A server. Settings come from the environment (A2A_BEARER_TOKEN is "
            "required; see README for every variable). Without OPENCODE_BASE_URL an "
            "`opencode serve` process is started and supervised."
        ),
    )
    serve.add_argument("--host", help="override A2A_HOST")
    serve.add_argument("--port", type=int, help="override A2A_PORT")
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser(
        "migrate",
        help="apply database schema migrations and exit",
        description="Apply pending schema migrations to A2A_DATABASE_URL (serve does this "
        "at startup too) and print the schema version.",
    )
    migrate.set_defaults(run=_migrate)
    _add_call(commands)
    _add_doctor(commands)
    return parser


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from .store.database import create_engine
    from .store.migrations import LATEST, upgrade

    try:
        # Migrating needs only the database; the token is not required for it.
        settings = load_settings(a2a_bearer_token=os.environ.get("A2A_BEARER_TOKEN") or "-")
    except SettingsError as exc:
        print(f"opencode-a2a-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def run() -> list[int]:
        engine = create_engine(settings.database_url)
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    applied = asyncio.run(run())
    done = ", ".join(str(v) for v in applied) if applied else "none"
    print(f"schema version {LATEST} (applied: {done})")
    return 0


def _quiet_sdk_tracing() -> None:
    """The a2a-sdk opens OpenTelemetry spans for every event unless told not to; that
    costs CPU on every streamed chunk. Our own tracing (observability.tracing) gives a
    span per request and per OpenCode call; the SDK's inner spans stay off unless
    OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true asks for them too. Runs before a2a is
    imported, which reads the variable once."""
    os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")


def _serve(args: argparse.Namespace) -> int:
    _quiet_sdk_tracing()
    overrides: dict[str, object] = {}
    if args.host:
        overrides["a2a_host"] = args.host
    if args.port is not None:
        overrides["a2a_port"] = args.port
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"opencode-a2a-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings)
    return _run_uvicorn(settings)


def _configure_logging(settings: Settings) -> None:
    from .observability.logs import configure

    configure(settings.a2a_log_level, settings.a2a_log_format, sys.stderr)
    # Libraries log whole request bodies and URLs at DEBUG; payloads are logged only by
    # our own redacting middleware (A2A_LOG_PAYLOADS), so they stay at INFO or above.
    library_level = max(logging.INFO, logging.getLevelName(settings.a2a_log_level))
    for name in ("a2a", "sse_starlette", "asyncio"):
        logging.getLogger(name).setLevel(library_level)
    # These log statements with their parameters (task contents) at INFO and below.
    for name in ("aiohttp", "httpx", "httpcore", "sqlalchemy", "aiosqlite", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run_uvicorn(settings: Settings) -> int:
    import uvicorn

    from .app import create_app
    from .errors import StartupError
    from .upstream.process import ManagedOpenCodeError

    try:
        app = create_app(settings)
    except (ManagedOpenCodeError, StartupError) as exc:
        print(f"opencode-a2a-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    config = uvicorn.Config(
        app,
        host=settings.a2a_host,
        port=settings.a2a_port,
        log_level=settings.a2a_log_level.lower(),
        log_config=None,  # uvicorn's lines go through our handler and format
        access_log=False,
        # Counts only once the drain is over (see shutdown.py): closing connections.
        timeout_graceful_shutdown=5,
    )
    server = _draining_server_class()(config, app.state.drain)
    server.run()
    return 0 if server.started else 1


def _draining_server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, with SIGTERM/SIGINT handed to the app's drain (shutdown.py) first.

        uvicorn's own shutdown (stop listening, close connections, lifespan) starts
        only when the drain asks for it; a signal during that shutdown forces it.
        """

        def __init__(self, config: uvicorn.Config, drain: Any) -> None:
            super().__init__(config)
            self.drain = drain
            drain.exit_server = self._exit

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            elif not self.drain.request():
                super().handle_exit(sig, frame)

        def _exit(self, forced: bool) -> None:
            # Even after a second signal the rest is quick: the turns are stopped and
            # the streams ended, so connections close and the lifespan cleans up.
            self.should_exit = True

    return DrainingServer


class _IntermixedParser(argparse.ArgumentParser):
    """Options may come after the positionals too: `call URL --json MESSAGE`."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_call(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = commands.add_parser(
        "call",
        help="send a message to an A2A agent and follow the task",
        description=(
            "Send MESSAGE to the A2A agent at URL (its card is read from "
            "URL/.well-known/agent-card.json) and render the streamed answer; asks are "
            "answered at the terminal. The bearer token comes from A2A_TOKEN, else "
            "A2A_BEARER_TOKEN. Exit codes: 0 completed, 1 failed/canceled/rejected, "
            "2 usage or connection error, 3 input required without a terminal."
        ),
    )
    call.__class__ = _IntermixedParser
    call.add_argument("url", metavar="URL", help="the agent's base URL")
    call.add_argument(
        "message", metavar="MESSAGE", nargs="?", help="the message (default: stdin or a prompt)"
    )
    call.add_argument("--protocol", choices=["1.0", "0.3"], help="default: the best offered")
    call.add_argument(
        "--transport", choices=["jsonrpc", "http-json"], help="default: the card's first"
    )
    call.add_argument("--json", action="store_true", help="print each event as a JSON line")
    call.add_argument(
        "-q", "--quiet", action="store_true", help="print only the answer (no reasoning, tools)"
    )
    call.add_argument("--context", metavar="ID", help="continue this conversation (contextId)")
    call.add_argument("--task", metavar="ID", help="send the message to this task (an answer)")
    call.add_argument("--session", metavar="ID", help="OpenCode session (metadata.shared.session)")
    call.add_argument(
        "--directory", metavar="DIR", help="working directory (metadata.opencode.directory)"
    )
    call.add_argument(
        "--model", metavar="PROVIDER/MODEL", help="model for this request (metadata.shared.model)"
    )
    call.set_defaults(run=_call)


def _call(args: argparse.Namespace) -> int:
    import asyncio

    from .client.runner import (
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        CallOptions,
        Streams,
        UsageError,
        open_prompter,
        read_message,
        run_call,
    )

    streams = Streams(env=os.environ)
    try:
        message = read_message(args.message, streams, lambda: open_prompter(streams))
    except UsageError as exc:
        streams.error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    options = CallOptions(
        url=args.url,
        message=message,
        protocol=args.protocol,
        transport=args.transport,
        json=args.json,
        quiet=args.quiet,
        context_id=args.context,
        task_id=args.task,
        session_id=args.session,
        directory=args.directory,
        model=args.model,
    )
    prompter = None if args.json else open_prompter(streams)
    try:
        return asyncio.run(run_call(options, streams, prompter))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _add_doctor(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check settings, OpenCode, the database, the public URL and the workspace",
        description=(
            "Check the deployment described by the environment (the same variables as "
            "serve): one line per check, ok/warn/FAIL, with what to fix. Exit code 1 when a "
            "check failed. Starts nothing and changes nothing."
        ),
    )
    doctor.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import main as doctor_main

    return doctor_main()


if __name__ == "__main__":
    raise SystemExit(main())
