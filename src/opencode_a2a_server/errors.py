"""One taxonomy of failures: upstream problems, client mistakes, and how they map to A2A.

Nothing else in the package invents error codes or decides task states for failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from a2a.types.a2a_pb2 import TaskState


class StartupError(RuntimeError):
    """The service cannot start as configured; the message says why, in one line."""


class AdapterError(Exception):
    """Base class of every error this package raises on purpose."""

    error_type = "ADAPTER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(AdapterError):
    """The client sent something this service cannot act on; the message says why."""

    error_type = "INVALID_REQUEST"


class UpstreamError(AdapterError):
    """OpenCode could not do what was asked."""

    error_type = "UPSTREAM_ERROR"


class UpstreamUnreachable(UpstreamError):
    """OpenCode did not answer at all (refused, reset, timed out)."""

    error_type = "UPSTREAM_UNREACHABLE"


class UpstreamHTTPError(UpstreamError):
    """OpenCode answered with an HTTP error status."""

    error_type = "UPSTREAM_HTTP_ERROR"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"OpenCode answered HTTP {status}: {message}")
        self.status = status
        self.detail = message


class UpstreamPayloadError(UpstreamError):
    """OpenCode answered something this service does not understand."""

    error_type = "UPSTREAM_PAYLOAD_ERROR"


@dataclass(frozen=True)
class TurnFailure:
    """How a failed turn ends: the A2A state, a readable message and error metadata."""

    state: int
    message: str
    error_type: str
    details: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """The `metadata.opencode.error` object clients read."""
        return {"opencode": {"error": {"type": self.error_type, **self.details}}}


def failure_from_exception(exc: BaseException) -> TurnFailure:
    """Map an exception raised while driving a turn to its terminal state."""
    if isinstance(exc, InvalidRequest):
        return TurnFailure(TaskState.TASK_STATE_FAILED, exc.message, exc.error_type)
    if isinstance(exc, UpstreamHTTPError):
        details = {"upstream_status": exc.status}
        if exc.status == 401:
            return TurnFailure(
                TaskState.TASK_STATE_FAILED,
                "OpenCode rejected this service's credentials (HTTP 401); check "
                "OPENCODE_SERVER_USERNAME and OPENCODE_SERVER_PASSWORD.",
                "UPSTREAM_UNAUTHORIZED",
                details,
            )
        return TurnFailure(TaskState.TASK_STATE_FAILED, exc.message, exc.error_type, details)
    if isinstance(exc, AdapterError):
        return TurnFailure(TaskState.TASK_STATE_FAILED, exc.message, exc.error_type)
    return TurnFailure(
        TaskState.TASK_STATE_FAILED,
        f"Internal error while running the turn ({type(exc).__name__}).",
        "INTERNAL_ERROR",
    )


def failure_from_session_error(error: dict[str, Any]) -> TurnFailure | None:
    """Map OpenCode's `session.error` / `info.error` object to a terminal state.

    Returns None for an abort, which is a cancellation and not a failure.
    """
    name = str(error.get("name") or "UnknownError")
    data = error.get("data")
    if not isinstance(data, dict):
        data = {}
    message = str(data.get("message") or name)
    if name == "MessageAbortedError":
        return None
    details: dict[str, Any] = {"upstream_error": name}
    status = data.get("statusCode")
    if isinstance(status, int):
        details["upstream_status"] = status
    if name == "ProviderAuthError" or (name == "APIError" and status in (401, 403)):
        provider = data.get("providerID")
        where = f" for provider {provider}" if provider else ""
        return TurnFailure(
            TaskState.TASK_STATE_AUTH_REQUIRED,
            f"The model provider rejected its credentials{where}: {message}",
            "UPSTREAM_UNAUTHORIZED",
            details,
        )
    if name == "APIError":
        return TurnFailure(
            TaskState.TASK_STATE_FAILED,
            f"The model provider failed: {message}",
            "UPSTREAM_EXECUTION_ERROR",
            details,
        )
    return TurnFailure(
        TaskState.TASK_STATE_FAILED,
        f"OpenCode failed the turn ({name}): {message}",
        "UPSTREAM_EXECUTION_ERROR",
        details,
    )


# -- errors of the extension JSON-RPC methods ------------------------------------------
#
# Codes follow the wire contract of the older adapter where it had one, so existing
# clients keep working; clients should key on `error.data.type`.


class MethodError(AdapterError):
    """An extension method failed in a way the client can act on."""

    code = -32603
    error_type = "INTERNAL_ERROR"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.data = {key: value for key, value in data.items() if value is not None}

    def to_jsonrpc(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "data": {"type": self.error_type, **self.data},
        }


class InvalidParams(MethodError):
    code = -32602
    error_type = "INVALID_PARAMS"


class MethodNotSupported(MethodError):
    code = -32601
    error_type = "METHOD_NOT_SUPPORTED"


class MethodDisabled(MethodError):
    code = -32011
    error_type = "METHOD_DISABLED"


class SessionNotFound(MethodError):
    code = -32001
    error_type = "SESSION_NOT_FOUND"


class SessionForbidden(MethodError):
    code = -32006
    error_type = "SESSION_FORBIDDEN"


class InterruptNotFound(MethodError):
    code = -32004
    error_type = "INTERRUPT_REQUEST_NOT_FOUND"


class InterruptExpired(MethodError):
    code = -32007
    error_type = "INTERRUPT_REQUEST_EXPIRED"


class InterruptTypeMismatch(MethodError):
    code = -32008
    error_type = "INTERRUPT_TYPE_MISMATCH"


class InterruptAlreadyResolved(MethodError):
    code = -32010
    error_type = "INTERRUPT_ALREADY_RESOLVED"


class UpstreamUnreachableError(MethodError):
    code = -32002
    error_type = "UPSTREAM_UNREACHABLE"


class UpstreamHTTPErrorResponse(MethodError):
    code = -32003
    error_type = "UPSTREAM_HTTP_ERROR"


class UpstreamPayloadErrorResponse(MethodError):
    code = -32005
    error_type = "UPSTREAM_PAYLOAD_ERROR"


def method_error_from_upstream(exc: UpstreamError, **context: Any) -> MethodError:
    """The extension-method error for an upstream failure."""
    if isinstance(exc, UpstreamUnreachable):
        return UpstreamUnreachableError(exc.message, **context)
    if isinstance(exc, UpstreamHTTPError):
        return UpstreamHTTPErrorResponse(exc.message, upstream_status=exc.status, **context)
    return UpstreamPayloadErrorResponse(exc.message, **context)
