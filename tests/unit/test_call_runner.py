"""`call` without a server: interface choice, requests, the ask-and-answer loop, exit codes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client.errors import A2AClientError
from a2a.types.a2a_pb2 import (
    AgentCard,
    AgentInterface,
    SecurityRequirement,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format

from opencode_a2a_server.client.connect import (
    ConnectError,
    Endpoint,
    base_url,
    choose_interface,
    http_status,
    requires_auth,
    token_from_env,
)
from opencode_a2a_server.client.render import Style
from opencode_a2a_server.client.runner import (
    Aborted,
    CallOptions,
    Conversation,
    Streams,
    UsageError,
    build_metadata,
    describe_call_error,
    read_message,
)

from .test_call_render import chunk, status, submitted, tool

INTERFACES = [
    ("JSONRPC", "1.0"),
    ("HTTP+JSON", "1.0"),
    ("JSONRPC", "0.3"),
    ("HTTP+JSON", "0.3"),
]


def card(interfaces: list[tuple[str, str]] = INTERFACES) -> AgentCard:
    return AgentCard(
        name="agent",
        supported_interfaces=[
            AgentInterface(url=f"http://a/{b}/{v}", protocol_binding=b, protocol_version=v)
            for b, v in interfaces
        ],
    )


@pytest.mark.parametrize(
    ("protocol", "transport", "expected"),
    [
        (None, None, ("JSONRPC", "1.0")),
        ("0.3", None, ("JSONRPC", "0.3")),
        (None, "http-json", ("HTTP+JSON", "1.0")),
        ("0.3", "http-json", ("HTTP+JSON", "0.3")),
        ("1.0", "jsonrpc", ("JSONRPC", "1.0")),
    ],
)
def test_choose_interface(
    protocol: str | None, transport: str | None, expected: tuple[str, str]
) -> None:
    chosen = choose_interface(card(), protocol, transport)
    assert (chosen.protocol_binding, chosen.protocol_version) == expected


def test_default_transport_is_the_cards_first_of_the_best_version() -> None:
    chosen = choose_interface(
        card([("HTTP+JSON", "0.3"), ("HTTP+JSON", "1.0"), ("JSONRPC", "1.0")])
    )
    assert (chosen.protocol_binding, chosen.protocol_version) == ("HTTP+JSON", "1.0")
    only_old = choose_interface(card([("JSONRPC", "0.3.0")]))
    assert only_old.protocol_version == "0.3.0"
    assert choose_interface(card([("JSONRPC", "0.3.0")]), "0.3").protocol_version == "0.3.0"


def test_missing_interface_says_what_is_offered() -> None:
    with pytest.raises(ConnectError, match=r"no http-json 0.3 interface \(it offers: JSONRPC 1.0"):
        choose_interface(card([("JSONRPC", "1.0"), ("GRPC", "1.0")]), "0.3", "http-json")


def test_token_and_url_helpers() -> None:
    assert token_from_env({"A2A_TOKEN": "a", "A2A_BEARER_TOKEN": "b"}) == "a"
    assert token_from_env({"A2A_TOKEN": " ", "A2A_BEARER_TOKEN": "b"}) == "b"
    assert token_from_env({}) is None
    assert base_url("http://h:1/.well-known/agent-card.json") == "http://h:1"
    assert base_url(" http://h:1/ ") == "http://h:1"
    with pytest.raises(ConnectError):
        base_url("h:1")
    secured = card()
    assert not requires_auth(secured)
    requirement = SecurityRequirement()
    requirement.schemes["bearerAuth"].SetInParent()
    secured.security_requirements.append(requirement)
    assert requires_auth(secured)


def test_http_status_and_error_lines() -> None:
    response = httpx.Response(401, request=httpx.Request("POST", "http://a/"))
    try:
        try:
            raise httpx.HTTPStatusError("401", request=response.request, response=response)
        except httpx.HTTPStatusError as inner:
            raise A2AClientError("HTTP Error 401") from inner
    except A2AClientError as exc:
        assert http_status(exc) == 401
        assert "A2A_TOKEN" in describe_call_error(exc)
    assert describe_call_error(InvalidParamsError("bad directory")).endswith("bad directory")


def test_build_metadata() -> None:
    assert build_metadata(None, None, None) == {}
    assert build_metadata("ses_1", "sub", "fake/fake-1") == {
        "shared": {
            "session": {"id": "ses_1"},
            "model": {"providerID": "fake", "modelID": "fake-1"},
        },
        "opencode": {"directory": "sub"},
    }
    with pytest.raises(UsageError, match="PROVIDER/MODEL"):
        build_metadata(None, None, "just-a-model")


def test_read_message_from_argument_or_pipe() -> None:
    streams = Streams(stdin=io.StringIO("piped text\n"))
    assert read_message("arg", streams, lambda: None) == "arg"
    assert read_message(None, streams, lambda: None) == "piped text"
    with pytest.raises(UsageError, match="empty"):
        read_message(None, Streams(stdin=io.StringIO("  \n")), lambda: None)


# -- the conversation loop, with a scripted client ------------------------------------------


class FakeClient:
    """Plays one scripted stream per send; records what was sent."""

    def __init__(self, *rounds: list[StreamResponse] | Exception) -> None:
        self.rounds = list(rounds)
        self.sent: list[SendMessageRequest] = []

    async def send_message(self, request: SendMessageRequest) -> AsyncIterator[StreamResponse]:
        self.sent.append(request)
        round_ = self.rounds.pop(0)
        if isinstance(round_, Exception):
            raise round_
        for event in round_:
            yield event

    async def subscribe(self, request: Any) -> AsyncIterator[StreamResponse]:
        self.sent.append(request)
        for event in self.rounds.pop(0):  # type: ignore[union-attr]
            yield event


class FakePrompter:
    def __init__(self, *typed: str) -> None:
        self.typed = list(typed)
        self.style = Style(False)
        self.shown: list[str] = []
        self.prompts: list[str] = []

    def show(self, lines: list[str]) -> None:
        self.shown += lines

    def ask(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.typed:
            raise Aborted
        return self.typed.pop(0)


PERMISSION = {
    "shared": {
        "interrupt": {
            "request_id": "per_1",
            "type": "permission",
            "phase": "asked",
            "details": {"permission": "bash", "command": "echo hi"},
        }
    }
}
QUESTION = {
    "shared": {
        "interrupt": {
            "request_id": "que_1",
            "type": "question",
            "phase": "asked",
            "details": {
                "questions": [
                    {"question": "Which color?", "options": [{"label": "Red"}, {"label": "Blue"}]}
                ]
            },
        }
    }
}
ASKED = [
    submitted(),
    chunk("text", "Running tool. ", append=False),
    status(TaskState.TASK_STATE_INPUT_REQUIRED, metadata=PERMISSION),
]
RESUMED = [
    status(TaskState.TASK_STATE_WORKING),
    tool("c1", status="completed", output="hi\n"),
    chunk("text", "\n\nDone.", append=True),
    chunk("text", "Running tool. \n\nDone.", append=False, last=True),
    status(TaskState.TASK_STATE_COMPLETED),
]


async def converse(
    client: FakeClient, prompter: FakePrompter | None, *, json: bool = False
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    streams = Streams(stdin=io.StringIO(), stdout=out, stderr=err, env={})
    endpoint = Endpoint(card(), card().supported_interfaces[0])
    options = CallOptions(url="http://agent", message="go", json=json)
    conversation = Conversation(client, endpoint, options, streams, prompter)  # type: ignore[arg-type]
    request = SendMessageRequest()
    code = await conversation.run(request)
    return code, out.getvalue(), err.getvalue()


def sent_data(request: SendMessageRequest) -> dict[str, Any]:
    assert request.message.task_id == "task-1" and request.message.context_id == "ctx-1"
    return json_format.MessageToDict(request.message.parts[0].data)


async def test_permission_answered_once_continues_on_the_same_task() -> None:
    client = FakeClient(ASKED, RESUMED)
    prompter = FakePrompter("o")
    code, out, err = await converse(client, prompter)
    assert code == 0, err
    assert sent_data(client.sent[1]) == {"reply": "once", "request_id": "per_1"}
    assert prompter.shown[:2] == ["? Permission needed: bash", "  command: echo hi"]
    assert out == "Running tool. \n✓ bash: hi\nDone.\n"


async def test_invalid_typing_and_refused_answers_are_asked_again() -> None:
    refused = InvalidParamsError("No pending ask")
    client = FakeClient(ASKED, refused, RESUMED)
    prompter = FakePrompter("yes", "a", "r try again")
    code, _, _ = await converse(client, prompter)
    assert code == 0
    assert len(prompter.prompts) == 3
    assert any("'yes' is not an answer" in line for line in prompter.shown)
    assert any("the agent refused: No pending ask" in line for line in prompter.shown)
    assert sent_data(client.sent[1]) == {"reply": "always", "request_id": "per_1"}
    assert sent_data(client.sent[2]) == {
        "reply": "reject",
        "message": "try again",
        "request_id": "per_1",
    }


async def test_question_answered_by_number_or_rejected() -> None:
    asked = [submitted(), status(TaskState.TASK_STATE_INPUT_REQUIRED, metadata=QUESTION)]
    done = [status(TaskState.TASK_STATE_COMPLETED)]
    client = FakeClient(asked, done)
    code, _, _ = await converse(client, FakePrompter("2"))
    assert code == 0
    assert sent_data(client.sent[1]) == {"answers": [["Blue"]], "request_id": "que_1"}

    canceled = [status(TaskState.TASK_STATE_CANCELED, text="The question was dismissed.")]
    client = FakeClient(asked, canceled)
    code, _, err = await converse(client, FakePrompter("r"))
    assert code == 1
    assert sent_data(client.sent[1]) == {"reject": True, "request_id": "que_1"}
    assert "✗ task canceled: The question was dismissed." in err


async def test_without_a_terminal_the_ask_exits_3_with_the_way_to_answer() -> None:
    code, out, err = await converse(FakeClient(ASKED), None)
    assert code == 3
    assert out == "Running tool. \n"
    assert "? Permission needed: bash" in err
    assert "--context ctx-1 --task task-1 once|always|reject" in err


async def test_json_mode_prints_events_and_never_prompts() -> None:
    prompter = FakePrompter("o")
    code, out, err = await converse(FakeClient(ASKED), prompter, json=True)
    assert code == 3
    assert prompter.prompts == []
    lines = out.splitlines()
    assert len(lines) == len(ASKED)
    assert '"TASK_STATE_INPUT_REQUIRED"' in lines[-1]
    assert "Permission needed" in err


async def test_end_of_input_at_the_prompt_leaves_the_ask_pending() -> None:
    code, _, err = await converse(FakeClient(ASKED), FakePrompter())
    assert code == 3
    assert "no answer given" in err


async def test_request_errors_exit_2() -> None:
    client = FakeClient(InvalidParamsError("sub is outside the workspace root"))
    code, _, err = await converse(client, None)
    assert code == 2
    assert "outside the workspace root" in err


async def test_failed_task_exits_1() -> None:
    failed = [submitted(), status(TaskState.TASK_STATE_FAILED, text="boom")]
    code, _, err = await converse(FakeClient(failed), None)
    assert code == 1
    assert "✗ task failed: boom" in err


async def test_a_stream_that_ends_early_is_followed_by_subscribing() -> None:
    cut = [submitted(), status(TaskState.TASK_STATE_WORKING), chunk("text", "Hel", append=False)]
    rest = [chunk("text", "lo", append=True), status(TaskState.TASK_STATE_COMPLETED)]
    client = FakeClient(cut, rest)
    code, out, _ = await converse(client, None)
    assert code == 0
    assert out == "Hello\n"
    assert client.sent[1].id == "task-1"  # SubscribeToTaskRequest
