"""The failure taxonomy: OpenCode session errors and adapter exceptions to A2A task states."""

from __future__ import annotations

import pytest
from a2a.types.a2a_pb2 import TaskState

from opencode_a2a_server.errors import (
    InvalidRequest,
    TurnFailure,
    UpstreamHTTPError,
    UpstreamPayloadError,
    UpstreamUnreachable,
    failure_from_exception,
    failure_from_session_error,
)

from .recordings import load_events


def recorded_error(name: str, index: int = 0) -> dict:
    errors = [e["properties"]["error"] for e in load_events(name) if e["type"] == "session.error"]
    return errors[index]


# -- failure_from_session_error ------------------------------------------------------


def test_recorded_api_error_401_needs_auth():
    error = recorded_error("llm_error_401")
    assert error["name"] == "APIError"
    failure = failure_from_session_error(error)
    assert failure is not None
    assert failure.state == TaskState.TASK_STATE_AUTH_REQUIRED
    assert failure.message == (
        "The model provider rejected its credentials: Incorrect API key provided (fake)"
    )
    assert failure.metadata() == {
        "opencode": {
            "error": {
                "type": "UPSTREAM_UNAUTHORIZED",
                "upstream_error": "APIError",
                "upstream_status": 401,
            }
        }
    }


def test_api_error_403_needs_auth_too():
    failure = failure_from_session_error(
        {"name": "APIError", "data": {"message": "Forbidden", "statusCode": 403}}
    )
    assert failure.state == TaskState.TASK_STATE_AUTH_REQUIRED


def test_provider_auth_error_needs_auth_and_names_the_provider():
    failure = failure_from_session_error(
        {"name": "ProviderAuthError", "data": {"providerID": "openai", "message": "No API key"}}
    )
    assert failure.state == TaskState.TASK_STATE_AUTH_REQUIRED
    assert failure.message == (
        "The model provider rejected its credentials for provider openai: No API key"
    )
    assert failure.error_type == "UPSTREAM_UNAUTHORIZED"
    assert failure.details == {"upstream_error": "ProviderAuthError"}


def test_recorded_api_error_500_fails_with_the_provider_message():
    events = load_events("llm_error_500_full")
    error = next(
        e["properties"]["error"]
        for e in events
        if e["type"] == "session.error"
        and e["properties"]["error"]["name"] == "APIError"
        and e["properties"]["error"]["data"].get("statusCode") == 500
    )
    failure = failure_from_session_error(error)
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert failure.message == "The model provider failed: Internal server error (fake)"
    assert failure.error_type == "UPSTREAM_EXECUTION_ERROR"
    assert failure.details == {"upstream_error": "APIError", "upstream_status": 500}


def test_recorded_unknown_error_fails_with_its_name_and_message():
    error = recorded_error("llm_midstream_error_full", -1)
    assert error["name"] == "UnknownError"
    failure = failure_from_session_error(error)
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert failure.message.startswith("OpenCode failed the turn (UnknownError): ")
    assert "upstream exploded mid-stream (fake)" in failure.message
    assert failure.details == {"upstream_error": "UnknownError"}


def test_recorded_abort_is_not_a_failure():
    error = recorded_error("abort_midstream")
    assert error["name"] == "MessageAbortedError"
    assert failure_from_session_error(error) is None


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({}, "OpenCode failed the turn (UnknownError): UnknownError"),
        ({"name": "Weird", "data": "not an object"}, "OpenCode failed the turn (Weird): Weird"),
        ({"name": "APIError", "data": {}}, "The model provider failed: APIError"),
    ],
)
def test_malformed_errors_still_map_to_a_readable_failure(error, message):
    failure = failure_from_session_error(error)
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert failure.message == message


def test_non_integer_status_codes_are_left_out():
    failure = failure_from_session_error(
        {"name": "APIError", "data": {"message": "x", "statusCode": "401"}}
    )
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert "upstream_status" not in failure.details


# -- failure_from_exception ----------------------------------------------------------


def test_upstream_http_401_points_at_the_opencode_credentials():
    failure = failure_from_exception(UpstreamHTTPError(401, "Unauthorized"))
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert "OPENCODE_SERVER_PASSWORD" in failure.message
    assert failure.error_type == "UPSTREAM_UNAUTHORIZED"
    assert failure.metadata() == {
        "opencode": {"error": {"type": "UPSTREAM_UNAUTHORIZED", "upstream_status": 401}}
    }


def test_other_upstream_http_errors_keep_their_message_and_status():
    failure = failure_from_exception(UpstreamHTTPError(404, "Session not found"))
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert failure.message == "OpenCode answered HTTP 404: Session not found"
    assert failure.metadata()["opencode"]["error"] == {
        "type": "UPSTREAM_HTTP_ERROR",
        "upstream_status": 404,
    }


def test_upstream_unreachable():
    failure = failure_from_exception(UpstreamUnreachable("OpenCode is unreachable at http://x"))
    assert failure == TurnFailure(
        TaskState.TASK_STATE_FAILED, "OpenCode is unreachable at http://x", "UPSTREAM_UNREACHABLE"
    )


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (InvalidRequest("bad"), "INVALID_REQUEST"),
        (UpstreamPayloadError("odd payload"), "UPSTREAM_PAYLOAD_ERROR"),
    ],
)
def test_adapter_errors_keep_their_type(exc, error_type):
    failure = failure_from_exception(exc)
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert failure.message == exc.message
    assert failure.error_type == error_type


def test_unexpected_exceptions_are_internal_errors_without_details():
    failure = failure_from_exception(KeyError("secret detail"))
    assert failure.state == TaskState.TASK_STATE_FAILED
    assert failure.error_type == "INTERNAL_ERROR"
    assert failure.message == "Internal error while running the turn (KeyError)."
    assert "secret" not in failure.message
