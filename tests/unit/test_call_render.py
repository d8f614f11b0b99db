"""The `call` renderer: text deltas and snapshots, reasoning dimming, tool one-liners, asks."""

from __future__ import annotations

import io
from typing import Any

from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.struct_pb2 import Struct

from opencode_a2a_server.client.render import Renderer, Style, describe_ask

TASK = "task-1"
CONTEXT = "ctx-1"
DIM = "\x1b[2m"


def struct(value: dict[str, Any]) -> Struct:
    result = Struct()
    result.update(value)
    return result


def chunk(
    block: str,
    text: str,
    *,
    append: bool,
    last: bool = False,
    source: str = "stream",
    name: str | None = None,
) -> StreamResponse:
    artifact_name = name or ("reasoning" if block == "reasoning" else "response")
    artifact = Artifact(
        artifact_id=f"{TASK}:{artifact_name}",
        name=artifact_name,
        parts=[Part(text=text)],
        metadata=struct({"shared": {"stream": {"block_type": block, "source": source}}}),
    )
    return StreamResponse(
        artifact_update=TaskArtifactUpdateEvent(
            task_id=TASK, context_id=CONTEXT, artifact=artifact, append=append, last_chunk=last
        )
    )


def tool(call_id: str, **call: Any) -> StreamResponse:
    part = Part(media_type="application/json")
    part.data.struct_value.update({"call_id": call_id, "tool": "bash", **call})
    artifact = Artifact(
        artifact_id=f"{TASK}:tool:{call_id}",
        name="tool_call",
        parts=[part],
        metadata=struct({"shared": {"stream": {"block_type": "tool_call"}}}),
    )
    return StreamResponse(
        artifact_update=TaskArtifactUpdateEvent(task_id=TASK, context_id=CONTEXT, artifact=artifact)
    )


def status(state: int, *, text: str = "", metadata: dict[str, Any] | None = None) -> StreamResponse:
    message = None
    if text:
        message = Message(message_id="m", role=Role.ROLE_AGENT, parts=[Part(text=text)])
    return StreamResponse(
        status_update=TaskStatusUpdateEvent(
            task_id=TASK,
            context_id=CONTEXT,
            status=TaskStatus(state=state, message=message),
            metadata=struct(metadata or {}),
        )
    )


def submitted() -> StreamResponse:
    return StreamResponse(
        task=Task(
            id=TASK, context_id=CONTEXT, status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED)
        )
    )


def render(
    events: list[StreamResponse], *, color: bool = False, quiet: bool = False
) -> tuple[str, str, Renderer]:
    out, err = io.StringIO(), io.StringIO()
    renderer = Renderer(out, err, color=color, err_color=color, quiet=quiet)
    for event in events:
        renderer.handle(event)
    renderer.finish()
    return out.getvalue(), err.getvalue(), renderer


def test_deltas_then_final_snapshot_print_the_text_once() -> None:
    events = [
        submitted(),
        status(TaskState.TASK_STATE_WORKING),
        chunk("text", "Hello ", append=False),
        chunk("text", "world", append=True),
        chunk("text", "Hello world", append=False, last=True, source="final_snapshot"),
        status(TaskState.TASK_STATE_COMPLETED),
    ]
    out, err, renderer = render(events)
    assert out == "Hello world\n"
    assert err == ""
    assert renderer.task.state == TaskState.TASK_STATE_COMPLETED
    assert renderer.task.task_id == TASK and renderer.task.context_id == CONTEXT


def test_snapshot_with_more_text_prints_only_the_missing_end() -> None:
    events = [
        chunk("text", "Hello ", append=False),
        chunk("text", "Hello world, complete.", append=False, last=True),
    ]
    out, _, renderer = render(events)
    assert out == "Hello world, complete.\n"
    assert renderer.text_of("text") == "Hello world, complete."


def test_snapshot_that_differs_is_printed_in_full_once_marked() -> None:
    events = [
        chunk("text", "partial ans", append=False),
        chunk("text", "The real answer.", append=False, last=True),
    ]
    out, _, renderer = render(events)
    assert out == "partial ans\n↺ corrected text:\nThe real answer.\n"
    assert renderer.text_of("text") == "The real answer."


def test_joining_mid_block_does_not_reprint_on_the_snapshot() -> None:
    # A follow-up on a task another process started: the first chunk seen is a delta.
    events = [
        chunk("text", "\n\nTool finished.", append=True),
        chunk("text", "Running tool. \n\nTool finished.", append=False, last=True),
        status(TaskState.TASK_STATE_COMPLETED),
    ]
    out, _, _ = render(events)
    assert out == "Tool finished.\n"


def test_reasoning_is_dimmed_only_on_a_terminal() -> None:
    events = [
        chunk("reasoning", "Thinking.", append=False),
        chunk("text", "Answer.", append=False),
    ]
    plain, _, _ = render(events, color=False)
    assert plain == "Thinking.\nAnswer.\n"
    assert "\x1b[" not in plain
    colored, _, _ = render(events, color=True)
    assert f"{DIM}Thinking.\x1b[0m" in colored
    assert "Answer." in colored and f"{DIM}Answer." not in colored


def test_quiet_leaves_out_reasoning_and_tools() -> None:
    events = [
        chunk("reasoning", "Thinking.", append=False),
        tool("c1", status="running", input={"command": "ls"}),
        tool("c1", status="completed", output="a\n"),
        chunk("text", "Answer.", append=False),
    ]
    out, _, _ = render(events, quiet=True)
    assert out == "Answer.\n"


def test_tool_calls_are_one_line_per_state_change() -> None:
    events = [
        chunk("text", "Running tool. ", append=False),
        tool("c1", status="pending"),
        tool("c1", status="running", input={"command": "echo hi"}),
        tool("c1", status="running", input={"command": "echo hi"}, output="hi\n"),
        tool("c1", status="completed", input={"command": "echo hi"}, output="hi\nthere\n"),
        chunk("text", "\n\nTool finished.", append=True),
        chunk("text", "Running tool. \n\nTool finished.", append=False, last=True),
    ]
    out, _, _ = render(events)
    assert out == (
        "Running tool. \n⚙ bash running: echo hi\n✓ bash: hi (+1 lines)\nTool finished.\n"
    )


def test_failed_tool_and_completed_without_running() -> None:
    events = [
        tool("c1", status="error", error="boom\nstack"),
        tool("c2", status="completed", title="read file", output=""),
    ]
    out, _, _ = render(events)
    assert out == "✗ bash: boom (+1 lines)\n✓ bash: read file\n"


def test_text_resumes_after_an_answer_on_the_same_renderer() -> None:
    out, err = io.StringIO(), io.StringIO()
    renderer = Renderer(out, err, color=False, err_color=False)
    for event in [chunk("text", "Running tool. ", append=False), status(6)]:
        renderer.handle(event)
    for event in [
        chunk("text", "\n\nDone.", append=True),
        chunk("text", "Running tool. \n\nDone.", append=False, last=True),
        status(TaskState.TASK_STATE_COMPLETED),
    ]:
        renderer.handle(event)
    assert out.getvalue() == "Running tool. \n\nDone.\n"


def test_failure_is_reported_on_stderr() -> None:
    events = [
        chunk("text", "partial", append=False),
        status(TaskState.TASK_STATE_FAILED, text="The model provider failed.\nmore"),
    ]
    out, err, renderer = render(events)
    assert out == "partial\n"
    assert err == "✗ task failed: The model provider failed. (+1 lines)\n"
    assert renderer.task.state == TaskState.TASK_STATE_FAILED


def test_retry_status_is_a_note() -> None:
    meta = {"opencode": {"retry": {"attempt": 2, "message": "rate limited"}}}
    _, err, _ = render([status(TaskState.TASK_STATE_WORKING, metadata=meta)])
    assert err == "↻ retrying (attempt 2): rate limited\n"


def test_permission_ask_is_described() -> None:
    interrupt = {
        "request_id": "per_1",
        "type": "permission",
        "phase": "asked",
        "details": {
            "permission": "edit",
            "filepath": "/w/a.py",
            "always": ["*"],
            "diff": "--- a\n+++ b\n-old\n+new",
        },
    }
    events = [
        status(
            TaskState.TASK_STATE_INPUT_REQUIRED,
            text="OpenCode asks permission",
            metadata={"shared": {"interrupt": interrupt}},
        )
    ]
    _, _, renderer = render(events)
    ask = renderer.ask()
    assert ask is not None and ask.kind == "permission" and ask.request_id == "per_1"
    lines = describe_ask(ask, Style(False))
    assert lines == [
        "? Permission needed: edit",
        "  file:    /w/a.py",
        "  [a]lways allows: *",
        "  --- a",
        "  +++ b",
        "  -old",
        "  +new",
    ]
    colored = describe_ask(ask, Style(True))
    assert "  \x1b[32m+new\x1b[0m" in colored and "  \x1b[31m-old\x1b[0m" in colored


def test_question_ask_lists_numbered_options() -> None:
    interrupt = {
        "request_id": "que_1",
        "type": "question",
        "phase": "asked",
        "details": {
            "questions": [
                {
                    "question": "Which color?",
                    "header": "Color",
                    "options": [{"label": "Red", "description": "warm"}, {"label": "Blue"}],
                    "multiple": False,
                }
            ]
        },
    }
    _, _, renderer = render([status(6, metadata={"shared": {"interrupt": interrupt}})])
    ask = renderer.ask()
    assert ask is not None
    assert describe_ask(ask, Style(False)) == [
        "? Which color? [Color]",
        "  1. Red — warm",
        "  2. Blue",
    ]


def test_resolved_interrupt_is_not_an_ask() -> None:
    resolved = {"shared": {"interrupt": {"request_id": "p", "phase": "resolved"}}}
    _, _, renderer = render([status(TaskState.TASK_STATE_WORKING, metadata=resolved)])
    assert renderer.ask() is None


def test_input_required_without_interrupt_metadata_is_a_plain_ask() -> None:
    _, _, renderer = render([status(6, text="What is your name?")])
    ask = renderer.ask()
    assert ask is not None and ask.kind == ""
    assert describe_ask(ask, Style(False)) == ["? The agent needs input", "  What is your name?"]


def test_message_only_agent_and_non_streaming_task() -> None:
    message = Message(message_id="m1", role=Role.ROLE_AGENT, parts=[Part(text="Just a message.")])
    out, _, renderer = render([StreamResponse(message=message)])
    assert out == "Just a message.\n"
    assert renderer.task.got_message

    task = Task(
        id=TASK,
        context_id=CONTEXT,
        status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED),
        artifacts=[Artifact(artifact_id="a", name="response", parts=[Part(text="Done.")])],
    )
    out, _, renderer = render([StreamResponse(task=task)])
    assert out == "Done.\n"
    assert renderer.task.state == TaskState.TASK_STATE_COMPLETED
