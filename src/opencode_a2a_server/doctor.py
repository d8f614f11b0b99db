"""`opencode-a2a-server doctor`: check a deployment's settings and dependencies.

Each check prints one line, `ok`, `warn` or `FAIL`, saying what to fix. Nothing is
started or changed: a managed OpenCode is only asked for its version, and a SQLite
database that does not exist yet is not created.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import inspect, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from .config import Settings, SettingsError, load_settings
from .errors import UpstreamError, UpstreamHTTPError, UpstreamUnreachable
from .store.database import create_engine
from .store.migrations import LATEST, current_version
from .upstream.client import OpenCodeClient
from .upstream.process import OpenCodeNotFound, find_opencode_binary

# The OpenCode release this service is tested with (Makefile's OPENCODE_VERSION).
PINNED_OPENCODE_VERSION = "1.18.33"
UPSTREAM_TIMEOUT = 5.0
VERSION_TIMEOUT = 30.0
DATABASE_TIMEOUT = 10.0
MIN_TOKEN_LENGTH = 16
PLACEHOLDER_TOKEN = "doctor-placeholder-token"

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    status: Status
    name: str
    message: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name:<9} {self.message}"


def ok(name: str, message: str) -> Check:
    return Check("ok", name, message)


def warn(name: str, message: str) -> Check:
    return Check("warn", name, message)


def fail(name: str, message: str) -> Check:
    return Check("FAIL", name, message)


@dataclass
class Context:
    """The settings the checks read, and the variables that were invalid."""

    settings: Settings
    invalid: set[str] = field(default_factory=set)
    opencode_version: str | None = None

    def usable(self, *variables: str) -> bool:
        return not self.invalid.intersection(v.lower() for v in variables)


# -- settings -----------------------------------------------------------------------------


def check_settings() -> tuple[Context | None, list[Check]]:
    """Load the settings like `serve`; on errors report each one, then go on with the
    defaults in place of the invalid values so the other checks can still run."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        problems = _validation_errors(exc)
        checks = [fail("settings", line) for line, _ in problems]
        invalid = {name for _, name in problems if name}
        return _fallback_context(invalid), checks
    return Context(settings), [
        ok("settings", "loaded from the environment"),
        *_token_checks(settings),
    ]


def _validation_errors(exc: SettingsError) -> list[tuple[str, str | None]]:
    """(line, field) for each problem; load_settings joins them into one message."""
    cause = exc.__context__
    if not isinstance(cause, ValidationError):
        return [(str(exc), None)]
    problems = []
    for error in cause.errors():
        name = str(error["loc"][0]) if error["loc"] else None
        variable = (name or "settings").upper()
        if error["type"] == "missing":
            line = f"{variable} is required but not set"
        elif error["type"] == "config":
            line = str(error["msg"])
        else:
            line = f"{variable} is invalid: {str(error['msg']).removeprefix('Value error, ')}"
        problems.append((line, name))
    return problems


def _fallback_context(invalid: set[str]) -> Context | None:
    overrides: dict[str, object] = {}
    for name in invalid:
        info = Settings.model_fields.get(name)
        if info is None:
            return None
        overrides[name] = info.default if not info.is_required() else None
        if name == "a2a_bearer_token":
            overrides[name] = PLACEHOLDER_TOKEN
    try:
        return Context(load_settings(**overrides), invalid)
    except SettingsError:
        return None


def _token_checks(settings: Settings) -> list[Check]:
    token = getattr(settings, "a2a_bearer_token", None)
    if token is None:
        return []
    length = len(token.get_secret_value().strip())
    if length < MIN_TOKEN_LENGTH:
        return [
            warn(
                "token",
                f"A2A_BEARER_TOKEN is only {length} characters: use a long random one, e.g. "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        ]
    return []


# -- upstream -----------------------------------------------------------------------------


async def check_upstream(ctx: Context) -> list[Check]:
    """OpenCode answers /global/health with our credentials, or the binary can be found."""
    if not ctx.usable("OPENCODE_BASE_URL", "OPENCODE_SERVER_PASSWORD", "OPENCODE_BIN"):
        return []
    settings = ctx.settings
    if settings.opencode_base_url is None:
        return await _check_managed(ctx)
    base = str(settings.opencode_base_url).rstrip("/")
    password = settings.opencode_server_password
    client = OpenCodeClient(
        base,
        username=settings.opencode_server_username,
        password=password.get_secret_value() if password else None,
        timeout=UPSTREAM_TIMEOUT,
    )
    try:
        health = await client.health(timeout=UPSTREAM_TIMEOUT)
    except UpstreamHTTPError as exc:
        return [_http_failure(base, exc, password is not None)]
    except UpstreamUnreachable as exc:
        return [
            fail(
                "upstream",
                f"OpenCode is unreachable at {base} ({exc.message}): start `opencode serve` "
                "there, or fix OPENCODE_BASE_URL (unset it to let serve manage OpenCode)",
            )
        ]
    except UpstreamError as exc:
        return [fail("upstream", f"{base}/global/health answered something unexpected: {exc}")]
    finally:
        await client.aclose()
    ctx.opencode_version = str(health.get("version") or "") or None
    if health.get("healthy") is False:
        return [warn("upstream", f"OpenCode at {base} answers but reports itself unhealthy")]
    return [ok("upstream", f"OpenCode at {base} answers /global/health with these credentials")]


def _http_failure(base: str, exc: UpstreamHTTPError, has_password: bool) -> Check:
    if exc.status in (401, 403):
        fix = (
            "check OPENCODE_SERVER_USERNAME and OPENCODE_SERVER_PASSWORD"
            if has_password
            else "it has a password: set OPENCODE_SERVER_PASSWORD (and OPENCODE_SERVER_USERNAME)"
        )
        return fail(
            "upstream", f"OpenCode at {base} refused the credentials (HTTP {exc.status}): {fix}"
        )
    return fail(
        "upstream",
        f"{base}/global/health answered HTTP {exc.status}: is OPENCODE_BASE_URL an OpenCode "
        "server (`opencode serve`)?",
    )


async def _check_managed(ctx: Context) -> list[Check]:
    try:
        binary = find_opencode_binary(ctx.settings.opencode_bin)
    except OpenCodeNotFound as exc:
        return [fail("upstream", str(exc))]
    try:
        version = await opencode_version(binary)
    except (OSError, TimeoutError, RuntimeError) as exc:
        return [fail("upstream", f"`{binary} --version` failed: {exc}: fix OPENCODE_BIN")]
    ctx.opencode_version = version
    return [ok("upstream", f"OPENCODE_BASE_URL unset: serve will start {binary} (not started now)")]


async def opencode_version(binary: str) -> str:
    """What `opencode --version` prints (its last non-empty line)."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--version",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), VERSION_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"no answer in {VERSION_TIMEOUT:.0f} s") from None
    lines = [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exit code {proc.returncode}: {detail[0]}")
    return lines[-1]


def check_version(ctx: Context) -> list[Check]:
    version = ctx.opencode_version
    if version is None:
        return []
    if version.removeprefix("v") == PINNED_OPENCODE_VERSION:
        return [ok("version", f"OpenCode {version} (the version this release is tested with)")]
    return [
        warn(
            "version",
            f"OpenCode {version} differs from the tested {PINNED_OPENCODE_VERSION}: install "
            f"opencode-ai@{PINNED_OPENCODE_VERSION} (`make setup`), or test this version first",
        )
    ]


# -- database -----------------------------------------------------------------------------


async def check_database(ctx: Context) -> list[Check]:
    """Connect, run SELECT 1, list the tables, and report the schema version."""
    if not ctx.usable("A2A_DATABASE_URL"):
        return []
    url = ctx.settings.database_url
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        missing = _missing_sqlite_file(parsed.database or "")
        if missing is not None:
            return [missing]
    try:
        engine = create_engine(url)
    except ModuleNotFoundError as exc:
        return [fail("database", f"the driver for {shown} is not installed ({exc.name})")]
    try:
        tables, version = await asyncio.wait_for(_inspect(engine), DATABASE_TIMEOUT)
    except TimeoutError:
        return [
            fail(
                "database",
                f"{shown} did not answer in {DATABASE_TIMEOUT:.0f} s: check A2A_DATABASE_URL",
            )
        ]
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [fail("database", f"cannot use {shown}: {reason}: check A2A_DATABASE_URL")]
    finally:
        await engine.dispose()
    listed = ", ".join(sorted(tables)) if tables else "none yet (serve creates them)"
    checks = [ok("database", f"{shown} answers SELECT 1; tables: {listed}")]
    checks += _schema_checks(version)
    return checks


def _missing_sqlite_file(database: str) -> Check | None:
    if not database or database == ":memory:":
        return None
    path = Path(database).expanduser()
    if path.exists():
        return None
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        return fail(
            "database",
            f"{path} does not exist and {folder} is not writable: fix A2A_DATABASE_URL or "
            "the folder's permissions",
        )
    return ok("database", f"{path} does not exist yet; serve creates it")


async def _inspect(engine: AsyncEngine) -> tuple[list[str], tuple[int, int] | None]:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    return tables, await _schema_version(engine)


async def _schema_version(engine: AsyncEngine) -> tuple[int, int]:
    """(current, latest) version of the service's own tables."""
    return await current_version(engine), LATEST


def _schema_checks(version: tuple[int, int] | None) -> list[Check]:
    if version is None:
        return []
    current, latest = version
    if current == latest:
        return [ok("schema", f"version {current} (current)")]
    if current < latest:
        return [
            warn(
                "schema",
                f"version {current}, this release needs {latest}: serve migrates at startup, "
                "or run `opencode-a2a-server migrate`",
            )
        ]
    return [
        fail(
            "schema",
            f"version {current} is newer than this release knows ({latest}): upgrade "
            "opencode-a2a-server",
        )
    ]


# -- public URL and workspace -----------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_public_url(ctx: Context) -> list[Check]:
    settings = ctx.settings
    if not ctx.usable("A2A_PUBLIC_URL"):
        return []
    if settings.a2a_public_url is not None:
        return [_judge_public_url(settings.public_url)]
    if ctx.usable("A2A_HOST", "A2A_PORT"):
        if settings.a2a_host in ("0.0.0.0", "::", ""):
            return [
                warn(
                    "publicurl",
                    f"A2A_PUBLIC_URL is not set and A2A_HOST={settings.a2a_host or '(empty)'} "
                    f"listens on every interface: the Agent Card advertises "
                    f"{settings.public_url}, which other machines cannot reach; set "
                    "A2A_PUBLIC_URL to the URL clients use",
                )
            ]
        return [ok("publicurl", f"not set; the Agent Card advertises {settings.public_url}")]
    return []


def _judge_public_url(url: str) -> Check:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return fail("publicurl", f"A2A_PUBLIC_URL={url} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        return warn("publicurl", f"A2A_PUBLIC_URL={url} has a query or fragment: remove it")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return warn(
            "publicurl",
            f"A2A_PUBLIC_URL={url} is plain http on a non-loopback host: bearer tokens "
            "cross the network unencrypted; serve it behind TLS and use https://",
        )
    return ok("publicurl", f"A2A_PUBLIC_URL={url}")


def check_workspace(ctx: Context) -> list[Check]:
    if not ctx.usable("OPENCODE_WORKSPACE_ROOT"):
        return []
    root = ctx.settings.workspace_root
    how = "" if ctx.settings.opencode_workspace_root else " (the current directory)"
    if not root.is_dir():
        return [fail("workspace", f"{root} is not a directory: fix OPENCODE_WORKSPACE_ROOT")]
    if not os.access(root, os.W_OK | os.X_OK):
        return [
            warn(
                "workspace",
                f"{root}{how} is not writable by this user: OpenCode cannot change files there",
            )
        ]
    return [ok("workspace", f"{root}{how} exists and is writable")]


# -- running ------------------------------------------------------------------------------


async def run_checks() -> list[Check]:
    """Every check, in the order they are printed."""
    ctx, checks = check_settings()
    if ctx is None:
        checks.append(fail("settings", "other checks skipped: fix the settings above first"))
        return checks
    checks += await check_upstream(ctx)
    checks += check_version(ctx)
    checks += await check_database(ctx)
    checks += check_public_url(ctx)
    checks += check_workspace(ctx)
    return checks


def main(out: TextIO | None = None) -> int:
    """Print one line per check; exit code 1 when any check failed."""
    out = out or sys.stdout
    checks = asyncio.run(run_checks())
    for check in checks:
        out.write(check.line() + "\n")
    failed = sum(check.status == "FAIL" for check in checks)
    warned = sum(check.status == "warn" for check in checks)
    out.write(f"{failed} failed, {warned} warnings\n" if failed or warned else "all checks ok\n")
    out.flush()
    return 1 if failed else 0
