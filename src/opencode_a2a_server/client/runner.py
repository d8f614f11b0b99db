"""`opencode-a2a-server call`: send one message to an A2A agent and follow the task to its end.

Asks (`input-required`) are shown and answered at the terminal, and the answer goes back as
a follow-up message on the same task; without a terminal (or with `--json`) the command
stops with exit code 3 and says how to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import A2AError, InvalidParamsError
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from .answers import (
    PERMISSION_PROMPT,
    AnswerError,
    Question,
    parse_permission_answer,
    parse_question_answer,
    question_prompt,
    questions_of,
)
from .connect import (
    ConnectError,
    Endpoint,
    base_url,
    discover,
    http_client,
    http_status,
    make_client,
    requires_auth,
    token_from_env,
)
from .render import (
    INTERRUPTED_STATES,
    TERMINAL_STATES,
    Ask,
    Renderer,
    Style,
    describe_ask,
    state_name,
)

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_NEEDS_INPUT = 3
EXIT_INTERRUPTED = 130
CANCEL_TIMEOUT = 10.0
PROG = "opencode-a2a-server call"


@dataclass
class CallOptions:
    """Everything `call` was asked to do."""

    url: str
    message: str
    protocol: str | None = None
    transport: str | None = None
    json: bool = False
    quiet: bool = False
    context_id: str | None = None
    task_id: str | None = None
    session_id: str | None = None
    directory: str | None = None
    model: str | None = None


@dataclass
class Streams:
    """The process's standard streams and environment (replaceable in tests)."""

    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    env: Mapping[str, str] = field(default_factory=dict)

    def error(self, message: str) -> None:
        self.stderr.write(f"{PROG}: {message}\n")
        self.stderr.flush()


class UsageError(Exception):
    """A bad option value; exit code 2."""


class Aborted(Exception):
    """The person closed the prompt (end of input) without answering."""


# -- requests -----------------------------------------------------------------------


def build_metadata(
    session_id: str | None, directory: str | None, model: str | None
) -> dict[str, Any]:
    """Request metadata: `shared.session.id`, `shared.model`, `opencode.directory`."""
    shared: dict[str, Any] = {}
    if session_id:
        shared["session"] = {"id": session_id}
    if model:
        provider, _, model_id = model.partition("/")
        if not provider or not model_id:
            raise UsageError(f"--model must be PROVIDER/MODEL, not {model!r}")
        shared["model"] = {"providerID": provider, "modelID": model_id}
    metadata: dict[str, Any] = {}
    if shared:
        metadata["shared"] = shared
    if directory:
        metadata["opencode"] = {"directory": directory}
    return metadata


def build_request(
    parts: list[Part],
    *,
    context_id: str | None = None,
    task_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts)
    if context_id:
        message.context_id = context_id
    if task_id:
        message.task_id = task_id
    request = SendMessageRequest(message=message)
    if metadata:
        struct = Struct()
        struct.update(metadata)
        request.metadata.CopyFrom(struct)
    return request


def text_part(text: str) -> Part:
    return Part(text=text)


def data_part(value: dict[str, Any]) -> Part:
    part = Part(media_type="application/json")
    part.data.struct_value.update(value)
    return part


def exit_code_for(state: int, got_message: bool = False) -> int:
    if state == TaskState.TASK_STATE_COMPLETED:
        return EXIT_OK
    if state == TaskState.TASK_STATE_UNSPECIFIED and got_message:
        return EXIT_OK  # a message-only agent answered without a task
    if state == TaskState.TASK_STATE_INPUT_REQUIRED:
        return EXIT_NEEDS_INPUT
    return EXIT_TASK_FAILED


# -- the terminal -------------------------------------------------------------------


class Prompter(Protocol):
    style: Style

    def show(self, lines: list[str]) -> None: ...

    def ask(self, prompt: str) -> str: ...


class TtyPrompter:
    """Shows asks and reads answers on a terminal; Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, inp: TextIO, out: TextIO) -> None:
        self.inp = inp
        self.out = out
        self.style = Style(_isatty(out))

    def show(self, lines: list[str]) -> None:
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    def ask(self, prompt: str) -> str:
        self.out.write(prompt)
        self.out.flush()
        # asyncio turns SIGINT into a task cancellation, which a blocking read never sees.
        previous = _swap_sigint(signal.default_int_handler)
        try:
            line = self.inp.readline()
        except KeyboardInterrupt:
            self.out.write("\n")
            self.out.flush()
            raise
        finally:
            _swap_sigint(previous)
        if not line:
            raise Aborted
        return line.rstrip("\r\n")


def _swap_sigint(handler: Any) -> Any:
    try:
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, handler)
        return previous
    except ValueError:  # not the main thread
        return handler


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def open_prompter(streams: Streams) -> TtyPrompter | None:
    """A prompter on the terminal: stdin when it is one, else /dev/tty; None without one."""
    if _isatty(streams.stdin):
        out = streams.stdout if _isatty(streams.stdout) else streams.stderr
        return TtyPrompter(streams.stdin, out)
    try:
        tty_in = open("/dev/tty")  # kept open for the whole call
        tty_out = open("/dev/tty", "w")
    except OSError:
        return None
    return TtyPrompter(tty_in, tty_out)


def read_message(
    argument: str | None, streams: Streams, prompter: Callable[[], TtyPrompter | None]
) -> str:
    """The message: the argument, else stdin when piped, else asked for on the terminal."""
    if argument is not None:
        text = argument
    elif not _isatty(streams.stdin):
        text = streams.stdin.read()
    else:
        terminal = prompter()
        if terminal is None:
            raise UsageError("no MESSAGE given")
        try:
            text = terminal.ask("message> ")
        except Aborted:
            text = ""
    if not text.strip():
        raise UsageError("the message is empty")
    return text.strip("\n")


class Spinner:
    """An elapsed-time indicator on stderr until the agent shows something (terminals only)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, err: TextIO, enabled: bool, label: str = "waiting for the agent") -> None:
        self.err = err
        self.enabled = enabled
        self.label = label
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._spin(time.monotonic()))

    async def _spin(self, started: float) -> None:
        frame = 0
        while True:
            elapsed = time.monotonic() - started
            glyph = self.FRAMES[frame % len(self.FRAMES)]
            self.err.write(f"\r\x1b[2m{glyph} {self.label} {elapsed:.1f}s\x1b[0m\x1b[K")
            self.err.flush()
            frame += 1
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        self._task = None
        self.err.write("\r\x1b[K")
        self.err.flush()


# -- one conversation -----------------------------------------------------------------


class Conversation:
    """Sends the message, renders each stream, answers asks, until the task settles."""

    def __init__(
        self,
        client: Client,
        endpoint: Endpoint,
        options: CallOptions,
        streams: Streams,
        prompter: Prompter | None,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.options = options
        self.streams = streams
        self.prompter = prompter
        self.spinner = Spinner(streams.stderr, _isatty(streams.stderr) and not options.json)
        if options.json:
            sink = _Sink()
            self.renderer = Renderer(sink, sink, color=False, err_color=False)
        else:
            self.renderer = Renderer(
                streams.stdout,
                streams.stderr,
                color=_isatty(streams.stdout),
                err_color=_isatty(streams.stderr),
                quiet=options.quiet,
                before_output=self.spinner.stop,
            )

    async def run(self, request: SendMessageRequest) -> int:
        try:
            await self._stream(self.client.send_message(request))
            await self._settle()
            while self.renderer.task.state in INTERRUPTED_STATES:
                if not self._can_prompt():
                    return self._report_ask()
                await self._answer_round()
                await self._settle()
        except (KeyboardInterrupt, asyncio.CancelledError):
            return await self._interrupted()
        except Aborted:
            self.streams.error("no answer given; the ask is still pending")
            return self._report_ask()
        except A2AError as exc:
            return self._failed_call(exc)
        finally:
            self.spinner.stop()
        return self._finished()

    # -- streams ----------------------------------------------------------------------

    async def _stream(self, events: AsyncIterator[StreamResponse]) -> None:
        self.spinner.start()
        try:
            async for event in events:
                if self.options.json:
                    self._print_json(event)
                self.renderer.handle(event)
        finally:
            self.spinner.stop()

    async def _settle(self) -> None:
        """A stream that ended before the task did: follow the task to its end."""
        task = self.renderer.task
        if task.got_message or not task.task_id:
            return
        if task.state in TERMINAL_STATES or task.state in INTERRUPTED_STATES:
            return
        try:
            await self._stream(self.client.subscribe(SubscribeToTaskRequest(id=task.task_id)))
        except A2AError:
            self._maybe_print_task(await self.client.get_task(GetTaskRequest(id=task.task_id)))

    def _maybe_print_task(self, task: Any) -> None:
        event = StreamResponse(task=task)
        if self.options.json:
            self._print_json(event)
        self.renderer.handle(event)

    def _print_json(self, event: StreamResponse) -> None:
        line = json.dumps(json_format.MessageToDict(event), ensure_ascii=False)
        self.streams.stdout.write(line + "\n")
        self.streams.stdout.flush()

    # -- asks -------------------------------------------------------------------------

    def _can_prompt(self) -> bool:
        return (
            self.prompter is not None
            and not self.options.json
            and self.renderer.task.state == TaskState.TASK_STATE_INPUT_REQUIRED
        )

    async def _answer_round(self) -> None:
        assert self.prompter is not None
        ask = self.renderer.ask()
        assert ask is not None
        self.renderer.finish()
        self.prompter.show(describe_ask(ask, self.prompter.style))
        while True:
            parts = self._prompt_answer(self.prompter, ask)
            request = build_request(
                parts,
                context_id=self.renderer.task.context_id,
                task_id=self.renderer.task.task_id,
            )
            try:
                await self._stream(self.client.send_message(request))
                return
            except InvalidParamsError as exc:
                self.prompter.show([self.prompter.style.red(f"✗ the agent refused: {exc}")])

    def _prompt_answer(self, prompter: Prompter, ask: Ask) -> list[Part]:
        if ask.kind == "permission":
            answer = _ask_until_valid(prompter, PERMISSION_PROMPT, parse_permission_answer)
            return [data_part(_with_request_id(answer, ask))]
        if ask.kind == "question":
            answers: list[list[str]] = []
            questions = questions_of(ask.details)
            for number, question in enumerate(questions, start=1):
                prefix = f"[{number}/{len(questions)}] " if len(questions) > 1 else ""
                picked = _ask_until_valid(
                    prompter,
                    prefix + question_prompt(question),
                    functools.partial(_parse_question, question),
                )
                if picked is None:
                    return [data_part(_with_request_id({"reject": True}, ask))]
                answers.append(picked)
            return [data_part(_with_request_id({"answers": answers}, ask))]
        reply = _ask_until_valid(prompter, "reply> ", _non_empty)
        return [text_part(reply)]

    def _report_ask(self) -> int:
        """No one to ask: show the ask on stderr with the way to answer it later."""
        self.renderer.finish()
        ask = self.renderer.ask()
        style = Style(_isatty(self.streams.stderr))
        lines = describe_ask(ask, style) if ask else []
        task = self.renderer.task
        if task.state == TaskState.TASK_STATE_AUTH_REQUIRED:
            lines.append(f"task {task.task_id} is {state_name(task.state)}")
            self._write_err(lines)
            return EXIT_TASK_FAILED
        answer = "once|always|reject" if ask and ask.kind == "permission" else "'<option label>'"
        lines.append(
            "no terminal to answer on; answer with:\n"
            f"  opencode-a2a-server call {self.options.url} "
            f"--context {task.context_id} --task {task.task_id} {answer}"
        )
        self._write_err(lines)
        return EXIT_NEEDS_INPUT

    # -- endings ----------------------------------------------------------------------

    async def _interrupted(self) -> int:
        self.spinner.stop()
        self.renderer.finish()
        task_id = self.renderer.task.task_id
        state = self.renderer.task.state
        if not task_id or state in TERMINAL_STATES:
            self.streams.error("interrupted")
            return EXIT_INTERRUPTED
        self.streams.error(f"interrupted: canceling task {task_id}")
        try:
            await asyncio.wait_for(
                self.client.cancel_task(CancelTaskRequest(id=task_id)), CANCEL_TIMEOUT
            )
        except (A2AError, TimeoutError) as exc:
            self.streams.error(f"could not cancel task {task_id}: {exc}")
        return EXIT_INTERRUPTED

    def _failed_call(self, exc: A2AError) -> int:
        self.renderer.finish()
        self.streams.error(describe_call_error(exc))
        return EXIT_USAGE

    def _finished(self) -> int:
        task = self.renderer.task
        self.renderer.finish()
        code = exit_code_for(task.state, task.got_message)
        if code == EXIT_TASK_FAILED and task.state not in TERMINAL_STATES:
            self.streams.error(
                f"the stream ended with task {task.task_id} still {state_name(task.state)}"
            )
        if _isatty(self.streams.stderr) and not self.options.json and task.context_id:
            style = Style(True)
            self._write_err([style.dim(f"context {task.context_id} · task {task.task_id}")])
        return code

    def _write_err(self, lines: list[str]) -> None:
        self.streams.stderr.write("".join(line + "\n" for line in lines))
        self.streams.stderr.flush()


def _ask_until_valid(prompter: Prompter, prompt: str, parse: Callable[[str], Any]) -> Any:
    while True:
        typed = prompter.ask(prompt)
        try:
            return parse(typed)
        except AnswerError as exc:
            prompter.show([prompter.style.red(f"  {exc}")])


def _parse_question(question: Question, typed: str) -> list[str] | None:
    return parse_question_answer(typed, question)


def _non_empty(typed: str) -> str:
    if not typed.strip():
        raise AnswerError("type a reply")
    return typed.strip()


def _with_request_id(answer: dict[str, Any], ask: Ask) -> dict[str, Any]:
    return {**answer, "request_id": ask.request_id} if ask.request_id else dict(answer)


def describe_call_error(exc: BaseException) -> str:
    """One line for a failed call; HTTP 401/403 name the token variable."""
    status = http_status(exc)
    if status in (401, 403):
        return (
            f"the agent refused the credentials (HTTP {status}): set A2A_TOKEN (or "
            "A2A_BEARER_TOKEN) to the agent's bearer token"
        )
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if status is None else text


class _Sink(io.StringIO):
    """A text stream that discards everything (the renderer's output under --json)."""

    def write(self, text: str) -> int:
        return len(text)


# -- entry point --------------------------------------------------------------------------


async def run_call(options: CallOptions, streams: Streams, prompter: Prompter | None) -> int:
    """Discover the agent, send the message, follow the task; returns the exit code."""
    try:
        url = base_url(options.url)
        metadata = build_metadata(options.session_id, options.directory, options.model)
    except (ConnectError, UsageError) as exc:
        streams.error(str(exc))
        return EXIT_USAGE
    token = token_from_env(streams.env)
    async with http_client(token) as http:
        try:
            endpoint = await discover(http, url, options.protocol, options.transport)
        except ConnectError as exc:
            streams.error(str(exc))
            return EXIT_USAGE
        if requires_auth(endpoint.card) and not token:
            streams.error(
                "the agent requires a bearer token: set A2A_TOKEN (or A2A_BEARER_TOKEN) "
                "in the environment"
            )
            return EXIT_USAGE
        client = make_client(http, endpoint)
        try:
            request = build_request(
                [text_part(options.message)],
                context_id=options.context_id,
                task_id=options.task_id,
                metadata=metadata,
            )
            conversation = Conversation(client, endpoint, options, streams, prompter)
            return await conversation.run(request)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
