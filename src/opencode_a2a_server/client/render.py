"""Render an A2A event stream for a person: text live, reasoning dimmed, tools as one-liners.

The renderer follows the wire contract of `docs/guide.md` §3: text and reasoning arrive as
deltas (`append: true`) after a first chunk (`append: false`); the final snapshot
(`append: false`, `lastChunk: true`) replaces the block. Only what was not printed yet is
printed, so a block never appears twice. Agents that send no stream metadata are rendered
too: text parts as text, data parts as compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
INTERRUPTED_STATES = frozenset(
    {TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED}
)
SUMMARY_LIMIT = 120

_DIM, _RED, _GREEN, _CYAN, _BOLD, _RESET = (
    "\x1b[2m",
    "\x1b[31m",
    "\x1b[32m",
    "\x1b[36m",
    "\x1b[1m",
    "\x1b[0m",
)


@dataclass(frozen=True)
class Style:
    """ANSI styling, or none at all when the output is not a terminal."""

    color: bool

    def _wrap(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color and text else text

    def dim(self, text: str) -> str:
        return self._wrap(_DIM, text)

    def red(self, text: str) -> str:
        return self._wrap(_RED, text)

    def green(self, text: str) -> str:
        return self._wrap(_GREEN, text)

    def cyan(self, text: str) -> str:
        return self._wrap(_CYAN, text)

    def bold(self, text: str) -> str:
        return self._wrap(_BOLD, text)


def state_name(state: int) -> str:
    """`TASK_STATE_INPUT_REQUIRED` -> `input-required`."""
    return TaskState.Name(state).removeprefix("TASK_STATE_").lower().replace("_", "-")


def struct_dict(value: Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def part_data(part: Part) -> Any:
    """The JSON value of a data part."""
    return json_format.MessageToDict(part.data)


def message_text(message: Message) -> str:
    return "".join(part.text for part in message.parts if part.WhichOneof("content") == "text")


def first_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """The first non-empty line, shortened; with a count of the lines left out."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = shorten(lines[0].strip(), limit)
    if len(lines) > 1:
        line += f" (+{len(lines) - 1} lines)"
    return line


def shorten(text: str, limit: int = SUMMARY_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_summary(call: dict[str, Any]) -> str:
    """What a tool call works on: the command, the title, or its input as JSON."""
    raw_input = call.get("input")
    tool_input: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
    for key in ("command", "filePath", "filepath", "path", "pattern", "url"):
        if isinstance(tool_input.get(key), str) and tool_input[key]:
            return shorten(" ".join(str(tool_input[key]).split()))
    if call.get("title"):
        return shorten(str(call["title"]))
    if tool_input:
        return shorten(json.dumps(tool_input, ensure_ascii=False, separators=(",", ":")))
    return ""


@dataclass
class Ask:
    """An interrupted task's ask: the interrupt metadata (if any) and the agent's words."""

    state: int
    text: str
    interrupt: dict[str, Any] | None

    @property
    def kind(self) -> str:
        if self.interrupt:
            return str(self.interrupt.get("type", ""))
        return ""

    @property
    def request_id(self) -> str | None:
        value = (self.interrupt or {}).get("request_id")
        return str(value) if value else None

    @property
    def details(self) -> dict[str, Any]:
        details = (self.interrupt or {}).get("details")
        return details if isinstance(details, dict) else {}


def describe_ask(ask: Ask, style: Style) -> list[str]:
    """Lines that show an ask to a person (the prompt itself is added by the caller)."""
    if ask.kind == "permission":
        return _describe_permission(ask.details, style)
    if ask.kind == "question":
        return _describe_questions(ask.details, style)
    what = "input"
    if ask.state == TaskState.TASK_STATE_AUTH_REQUIRED:
        what = "authentication"
    lines = [style.bold(f"? The agent needs {what}")]
    lines += [f"  {line}" for line in ask.text.splitlines()] if ask.text else []
    return lines


def _describe_permission(details: dict[str, Any], style: Style) -> list[str]:
    permission = details.get("permission") or "a tool"
    lines = [style.bold(f"? Permission needed: {permission}")]
    if details.get("command"):
        lines.append(f"  command: {details['command']}")
    if details.get("filepath"):
        lines.append(f"  file:    {details['filepath']}")
    patterns = [str(p) for p in details.get("patterns") or []]
    if patterns and not details.get("command") and not details.get("filepath"):
        lines.append(f"  for:     {', '.join(patterns)}")
    always = [str(p) for p in details.get("always") or []]
    if always:
        lines.append(style.dim(f"  [a]lways allows: {', '.join(always)}"))
    diff = details.get("diff")
    if isinstance(diff, str) and diff.strip():
        lines += [_diff_line(line, style) for line in diff.rstrip("\n").splitlines()]
    return lines


def _diff_line(line: str, style: Style) -> str:
    if line.startswith("+") and not line.startswith("+++"):
        return "  " + style.green(line)
    if line.startswith("-") and not line.startswith("---"):
        return "  " + style.red(line)
    return "  " + style.dim(line)


def _describe_questions(details: dict[str, Any], style: Style) -> list[str]:
    from .answers import questions_of

    lines = []
    for question in questions_of(details):
        header = f" [{question.header}]" if question.header else ""
        lines.append(style.bold(f"? {question.question}") + style.dim(header))
        for number, option in enumerate(question.options, start=1):
            extra = style.dim(f" — {option.description}") if option.description else ""
            lines.append(f"  {number}. {option.label}{extra}")
    return lines


@dataclass
class _Block:
    kind: str
    shown: str = ""
    # Joined mid-block (the first chunk seen was a delta, e.g. when following up on a task
    # another process started): the start of the block was never seen.
    partial: bool = False


@dataclass
class TaskView:
    """What the stream told about the task so far."""

    task_id: str = ""
    context_id: str = ""
    state: int = TaskState.TASK_STATE_UNSPECIFIED
    status_text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    got_message: bool = False


class Renderer:
    """Prints a stream of `StreamResponse` events to `out` as they arrive.

    One renderer follows one task across its streams (the first send and each follow-up
    that answers an ask), so deltas after an answer extend the text printed before it.
    """

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        color: bool,
        err_color: bool,
        quiet: bool = False,
        before_output: Callable[[], None] | None = None,
    ) -> None:
        self.before_output = before_output
        self.out = out
        self.err = err
        self.style = Style(color)
        self.err_style = Style(err_color)
        self.quiet = quiet
        self.task = TaskView()
        self.texts: dict[str, _Block] = {}
        self._tools: dict[str, str] = {}
        self._current: str | None = None
        self._at_line_start = True
        self._after_line = False

    # -- entry points -----------------------------------------------------------------

    def handle(self, event: StreamResponse) -> None:
        kind = event.WhichOneof("payload")
        if kind == "task":
            self._on_task(event.task)
        elif kind == "status_update":
            self._on_status(event.status_update)
        elif kind == "artifact_update":
            self._on_artifact(event.artifact_update)
        elif kind == "message":
            self._on_message(event.message)
        self.out.flush()

    def finish(self) -> None:
        """End the output on a line of its own."""
        if not self._at_line_start:
            self._write("\n")
        self.out.flush()

    def ask(self) -> Ask | None:
        """The pending ask when the task is interrupted, else None."""
        if self.task.state not in INTERRUPTED_STATES:
            return None
        interrupt = self.task.metadata.get("shared", {}).get("interrupt")
        if not isinstance(interrupt, dict) or interrupt.get("phase") not in (None, "asked"):
            interrupt = None
        return Ask(self.task.state, self.task.status_text, interrupt)

    def text_of(self, kind: str = "text") -> str:
        """The whole text of every block of `kind` shown so far (for tests and summaries)."""
        return "".join(block.shown for block in self.texts.values() if block.kind == kind)

    # -- events -----------------------------------------------------------------------

    def _on_task(self, task: Task) -> None:
        self.task.task_id = task.id or self.task.task_id
        self.task.context_id = task.context_id or self.task.context_id
        self._merge_metadata(task.metadata)
        for artifact in task.artifacts:
            self._render_artifact(artifact, append=False)
        self._on_state(task.status)

    def _on_status(self, update: TaskStatusUpdateEvent) -> None:
        self.task.task_id = update.task_id or self.task.task_id
        self.task.context_id = update.context_id or self.task.context_id
        self._merge_metadata(update.metadata)
        retry = struct_dict(update.metadata).get("opencode", {}).get("retry")
        if isinstance(retry, dict):
            attempt = retry.get("attempt", "?")
            if isinstance(attempt, float) and attempt.is_integer():
                attempt = int(attempt)  # JSON numbers arrive as floats
            note = f"↻ retrying (attempt {attempt}): {retry.get('message', '')}"
            self._note(self.err_style.dim(note.rstrip(": ")))
        self._on_state(update.status)

    def _on_state(self, status: TaskStatus) -> None:
        self.task.state = status.state
        self.task.status_text = message_text(status.message) if status.HasField("message") else ""
        if status.state in TERMINAL_STATES and status.state != TaskState.TASK_STATE_COMPLETED:
            self.finish()
            reason = first_line(self.task.status_text, 500) or "no reason given"
            self._note(self.err_style.red(f"✗ task {state_name(status.state)}: {reason}"))
        elif status.state == TaskState.TASK_STATE_COMPLETED:
            self.finish()
        elif status.state == TaskState.TASK_STATE_WORKING and self.task.status_text.strip():
            if not self.quiet:
                self._line(self.style.dim(f"… {first_line(self.task.status_text, 500)}"))

    def _on_message(self, message: Message) -> None:
        self.task.got_message = True
        self.task.context_id = message.context_id or self.task.context_id
        key = f"message:{message.message_id}"
        for index, part in enumerate(message.parts):
            self._render_part(f"{key}:{index}", "text", part, append=False)
        self.finish()

    def _on_artifact(self, update: TaskArtifactUpdateEvent) -> None:
        self.task.task_id = update.task_id or self.task.task_id
        self.task.context_id = update.context_id or self.task.context_id
        self._render_artifact(update.artifact, append=update.append)

    # -- artifacts --------------------------------------------------------------------

    def _render_artifact(self, artifact: Artifact, *, append: bool) -> None:
        stream = struct_dict(artifact.metadata).get("shared", {}).get("stream", {})
        block_type = stream.get("block_type") if isinstance(stream, dict) else None
        if block_type == "tool_call":
            for part in artifact.parts:
                if part.WhichOneof("content") == "data":
                    self._render_tool(artifact.artifact_id, part_data(part))
            return
        kind = "reasoning" if block_type == "reasoning" else "text"
        text_parts = [p for p in artifact.parts if p.WhichOneof("content") == "text"]
        if text_parts or block_type in ("text", "reasoning"):
            chunk = "".join(p.text for p in text_parts)
            self._render_text(artifact.artifact_id, kind, chunk, append=append)
        for index, part in enumerate(artifact.parts):
            if part.WhichOneof("content") != "text":
                self._render_part(f"{artifact.artifact_id}:{index}", kind, part, append=append)

    def _render_part(self, key: str, kind: str, part: Part, *, append: bool) -> None:
        content = part.WhichOneof("content")
        if content == "text":
            self._render_text(key, kind, part.text, append=append)
        elif content == "data":
            data = json.dumps(part_data(part), ensure_ascii=False, separators=(",", ":"))
            self._line(self.style.dim(f"• data: {shorten(data, 400)}"))
        elif content in ("url", "raw"):
            name = part.filename or part.url or "(bytes)"
            self._line(self.style.dim(f"• file: {name} {part.media_type}".rstrip()))

    def _render_text(self, key: str, kind: str, chunk: str, *, append: bool) -> None:
        block = self.texts.get(key)
        if block is None:
            block = self.texts[key] = _Block(kind, partial=append)
        if append:
            new, delta = block.shown + chunk, chunk
        elif chunk.startswith(block.shown):
            new, delta = chunk, chunk[len(block.shown) :]
        elif block.partial and chunk.endswith(block.shown):
            new, delta = chunk, ""
        else:
            # The agent corrected what it streamed (e.g. a retried model attempt): the
            # printed text cannot be taken back, so print the final text in full.
            block.shown = chunk
            if not (self.quiet and kind == "reasoning"):
                self.finish()
                self._line(self.style.dim("↺ corrected text:"))
                self._show(key, kind, chunk)
            return
        block.shown = new
        block.partial = block.partial and append
        if self.quiet and kind == "reasoning":
            return
        self._show(key, kind, delta)

    def _show(self, key: str, kind: str, delta: str) -> None:
        if not delta:
            return
        if self._current != key and not self._at_line_start:
            self._write("\n")
        if self._after_line or self._current != key:
            delta = delta.lstrip("\n") if self._at_line_start else delta
            if not delta:
                return
        self._current = key
        self._after_line = False
        self._write(self.style.dim(delta) if kind == "reasoning" else delta)

    def _render_tool(self, key: str, call: dict[str, Any]) -> None:
        status = str(call.get("status", ""))
        tool = str(call.get("tool") or "tool")
        previous = self._tools.get(key)
        if status == previous or (status in ("pending", "running") and previous):
            return
        if status == "running":
            self._tools[key] = status
            line = self.style.cyan(f"⚙ {tool} running") + f": {tool_summary(call)}"
        elif status == "completed":
            self._tools[key] = status
            result = first_line(str(call.get("output") or "")) or tool_summary(call)
            line = self.style.green(f"✓ {tool}") + f": {result}"
        elif status == "error":
            self._tools[key] = status
            reason = first_line(str(call.get("error") or "")) or "failed"
            line = self.style.red(f"✗ {tool}") + f": {reason}"
        else:
            return
        if not self.quiet:
            self._line(line.rstrip(": "))

    # -- output -----------------------------------------------------------------------

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            self._write("\n")
        self._write(text + "\n")
        self._current = None
        self._after_line = True

    def _note(self, text: str) -> None:
        if self.before_output is not None:
            self.before_output()
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()

    def _write(self, text: str) -> None:
        if not text:
            return
        if self.before_output is not None:
            self.before_output()
        self.out.write(text)
        self._at_line_start = text.endswith("\n")

    def _merge_metadata(self, metadata: Struct) -> None:
        incoming = struct_dict(metadata)
        if "shared" in incoming and isinstance(incoming["shared"], dict):
            shared = self.task.metadata.setdefault("shared", {})
            shared.update(incoming.pop("shared"))
        self.task.metadata.update(incoming)
