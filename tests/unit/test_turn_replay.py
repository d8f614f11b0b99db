"""Drive a real Turn with recorded OpenCode event streams and check the A2A events it publishes.

The upstream is faked at the OpenCodeClient boundary: `prompt_async` starts feeding the
recording through a real EventHub (`hub.dispatch`), and `messages()` answers with the history
OpenCode would have stored, rebuilt from the same recording. The A2A side is a real TaskStream
over a queue that records every event.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import TaskArtifactUpdateEvent, TaskState, TaskStatusUpdateEvent
from google.protobuf import json_format

from opencode_a2a_server.errors import UpstreamUnreachable
from opencode_a2a_server.execution import turn as turn_module
from opencode_a2a_server.execution.interrupts import InterruptService
from opencode_a2a_server.execution.mapping import TEXT_SEPARATOR, text_of_parts
from opencode_a2a_server.execution.stream import FINAL_STATES, TaskStream
from opencode_a2a_server.execution.turn import Turn, TurnRequest
from opencode_a2a_server.store.database import create_engine
from opencode_a2a_server.store.interrupts import InterruptStore
from opencode_a2a_server.upstream.events import EventHub, StreamLost, StreamRestored

from .recordings import (
    created_sessions,
    load_events,
    session_of,
    session_titled,
    stored_history,
    user_messages,
)

TASK_ID = "task-1"
CONTEXT_ID = "ctx-1"
RUN_TIMEOUT = 5.0

Script = Callable[["FakeOpenCode"], Awaitable[None]]


# -- fakes ----------------------------------------------------------------------


class FakeQueue:
    """Stands in for the a2a EventQueue: keeps every enqueued event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def enqueue_event(self, event: Any) -> None:
        self.events.append(event)


class FakeOpenCode:
    """The OpenCodeClient surface a Turn uses, answering from a recording."""

    base_url = "http://opencode.test"

    def __init__(
        self,
        *,
        session_id: str,
        events: Iterable[dict[str, Any]] = (),
        history_mode: str = "final",
        busy: Iterable[bool] = (False,),
        health_error: Exception | None = None,
    ) -> None:
        self.session_id = session_id
        self.events = list(events)
        self.history_mode = history_mode
        self.busy = list(busy)
        self.health_error = health_error
        self.hub: EventHub | None = None
        self.script: Script | None = None
        self.feeder: asyncio.Task[None] | None = None
        self.delivered: list[dict[str, Any]] = []
        self.prompts: list[tuple[str, str, dict[str, Any]]] = []
        self.aborts: list[str] = []
        self.message_calls = 0
        self.status_calls = 0
        self.health_calls = 0
        self.messages_called = asyncio.Event()

    async def prompt_async(self, session_id: str, directory: str, body: dict[str, Any]) -> None:
        self.prompts.append((session_id, directory, body))
        if self.script is not None:
            self.feeder = asyncio.create_task(self.script(self))

    async def abort(self, session_id: str, directory: str | None = None) -> None:
        self.aborts.append(session_id)

    async def messages(self, session_id: str, directory: str | None = None) -> list[Any]:
        self.message_calls += 1
        self.messages_called.set()
        source = self.delivered if self.history_mode == "live" else self.events
        return stored_history(source, session_id)

    async def session_status(self, directory: str | None = None) -> dict[str, Any]:
        self.status_calls += 1
        busy = self.busy.pop(0) if len(self.busy) > 1 else self.busy[0]
        return {self.session_id: {"type": "busy"}} if busy else {}

    async def health(self, timeout: float = 2.0) -> dict[str, Any]:
        self.health_calls += 1
        if self.health_error is not None:
            raise self.health_error
        return {"healthy": True, "version": "1.18.33"}

    # -- delivering events -------------------------------------------------------

    def deliver(self, event: dict[str, Any]) -> None:
        """Through the hub's routing, like the real upstream stream."""
        assert self.hub is not None
        self.delivered.append(event)
        self.hub.dispatch(event)

    def inject(self, event: dict[str, Any]) -> None:
        """Straight into the turn's subscription, bypassing the hub's session routing."""
        assert self.hub is not None
        self.delivered.append(event)
        for subscription in list(self.hub._subscribers.get(self.session_id, ())):
            subscription.put(event)


def feed(
    events: Iterable[dict[str, Any]],
    *,
    direct: bool = False,
    hold_after_first_idle: bool = False,
) -> Script:
    """A script that delivers `events` one by one, yielding to the turn in between.

    With `hold_after_first_idle`, delivery stops after the session's first `session.idle`
    until the turn has read the stored messages once, so the events OpenCode sends after
    that idle really are late for the turn.
    """
    events = list(events)

    async def script(client: FakeOpenCode) -> None:
        holding = hold_after_first_idle
        for event in events:
            (client.inject if direct else client.deliver)(event)
            await asyncio.sleep(0)
            if (
                holding
                and event.get("type") == "session.idle"
                and session_of(event) == client.session_id
            ):
                holding = False
                await client.messages_called.wait()

    return script


# -- the harness -----------------------------------------------------------------


def pin_clock(monkeypatch: pytest.MonkeyPatch, epoch_ms: float) -> None:
    """Make the turn's `time.time()` read `epoch_ms` (the recordings are from the past)."""
    monkeypatch.setattr(turn_module.time, "time", lambda: epoch_ms / 1000)


@dataclass
class Replay:
    turn: Turn
    stream: TaskStream
    client: FakeOpenCode
    session_id: str
    published: list[Any]

    # -- status updates ----------------------------------------------------------

    @property
    def statuses(self) -> list[TaskStatusUpdateEvent]:
        return [e for e in self.published if isinstance(e, TaskStatusUpdateEvent)]

    @property
    def final(self) -> TaskStatusUpdateEvent:
        return self.statuses[-1]

    @property
    def final_state(self) -> int:
        return self.final.status.state

    def final_text(self) -> str:
        return status_text(self.final)

    def final_metadata(self) -> dict[str, Any]:
        return json_format.MessageToDict(self.final.metadata)

    def retry_statuses(self) -> list[dict[str, Any]]:
        found = []
        for event in self.statuses:
            meta = json_format.MessageToDict(event.metadata)
            retry = meta.get("opencode", {}).get("retry")
            if retry is not None:
                assert event.status.state == TaskState.TASK_STATE_WORKING
                found.append({"text": status_text(event), **retry})
        return found

    # -- artifacts -----------------------------------------------------------------

    @property
    def artifacts(self) -> list[TaskArtifactUpdateEvent]:
        return [e for e in self.published if isinstance(e, TaskArtifactUpdateEvent)]

    def block_events(self, block: str, source: str) -> list[TaskArtifactUpdateEvent]:
        artifact_id = self.stream.artifact_id(block)
        return [
            e
            for e in self.artifacts
            if e.artifact.artifact_id == artifact_id and stream_meta(e)["source"] == source
        ]

    def chunks(self, block: str) -> list[str]:
        return [e.artifact.parts[0].text for e in self.block_events(block, "stream")]

    def snapshot(self, block: str) -> TaskArtifactUpdateEvent | None:
        snapshots = self.block_events(block, "final_snapshot")
        assert len(snapshots) <= 1
        return snapshots[0] if snapshots else None

    def client_view(self) -> dict[str, Any]:
        """What a client holds after applying every artifact update (append or replace)."""
        view: dict[str, Any] = {}
        for event in self.artifacts:
            artifact = event.artifact
            part = artifact.parts[0]
            if part.WhichOneof("content") == "text":
                if event.append:
                    view[artifact.artifact_id] += part.text
                else:
                    view[artifact.artifact_id] = part.text
            else:
                view[artifact.artifact_id] = json_format.MessageToDict(part.data)
        return view

    def tool_updates(self) -> dict[str, list[TaskArtifactUpdateEvent]]:
        updates: dict[str, list[TaskArtifactUpdateEvent]] = {}
        for event in self.artifacts:
            if event.artifact.name == "tool_call":
                updates.setdefault(event.artifact.artifact_id, []).append(event)
        return updates


def status_text(event: TaskStatusUpdateEvent) -> str:
    if not event.status.HasField("message"):
        return ""
    return "".join(part.text for part in event.status.message.parts)


def stream_meta(event: TaskArtifactUpdateEvent) -> dict[str, Any]:
    return json_format.MessageToDict(event.artifact.metadata)["shared"]["stream"]


def tool_data(event: TaskArtifactUpdateEvent) -> dict[str, Any]:
    return json_format.MessageToDict(event.artifact.parts[0].data)


def stored_texts(history: list[dict[str, Any]], user_id: str, kind: str = "text") -> str:
    """The turn's answer as OpenCode stored it: texts of the user message's replies."""
    texts = [
        text
        for entry in history
        if entry["info"].get("role") == "assistant" and entry["info"].get("parentID") == user_id
        for text in text_of_parts(entry["parts"], kind)
    ]
    return TEXT_SEPARATOR.join(texts)


def assert_well_formed(replay: Replay) -> None:
    """Invariants of every turn's output, whatever the scenario."""
    assert replay.published, "the turn published nothing"
    finals = [e for e in replay.statuses if e.status.state in FINAL_STATES]
    assert len(finals) == 1, "exactly one final status"
    assert replay.published[-1] is finals[0], "nothing is published after the final status"
    assert replay.stream.final_state == finals[0].status.state
    for event in replay.published:
        assert event.task_id == TASK_ID
        assert event.context_id == CONTEXT_ID
    sequences = [stream_meta(e)["sequence"] for e in replay.artifacts]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)
    meta = replay.final_metadata()
    assert meta["shared"]["session"]["id"] == replay.session_id
    assert replay.turn.phase is turn_module.Phase.DONE
    assert replay.client.hub is not None
    assert not replay.client.hub._subscribers, "the turn's subscription was closed"


def make_turn(
    client: FakeOpenCode,
    *,
    directory: str = "/workspace/ws1",
    stream_timeout: float | None = None,
    connected: bool = True,
) -> tuple[Turn, TaskStream, FakeQueue]:
    hub = EventHub(client)  # type: ignore[arg-type]
    if connected:
        hub._connected.set()
    client.hub = hub
    queue = FakeQueue()
    stream = TaskStream(queue, TASK_ID, CONTEXT_ID)  # type: ignore[arg-type]
    request = TurnRequest(
        session_id=client.session_id,
        session_title="replayed session",
        directory=directory,
        body={"parts": [{"type": "text", "text": "replayed prompt"}]},
    )
    turn = Turn(
        client=client,  # type: ignore[arg-type]
        hub=hub,
        stream=stream,
        request=request,
        interrupts=interrupt_service(client),
        owner="tester",
        stream_timeout=stream_timeout,
    )
    return turn, stream, queue


def interrupt_service(client: FakeOpenCode) -> InterruptService:
    """A real InterruptService on a throwaway SQLite file."""
    folder = Path(tempfile.mkdtemp(prefix="asks-"))
    engine = create_engine(f"sqlite+aiosqlite:///{folder / 'asks.db'}")
    return InterruptService(InterruptStore(engine), client)  # type: ignore[arg-type]


async def run_replay(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    *,
    session_id: str | None = None,
    user_index: int = 0,
    script: Script | None = None,
    history_mode: str = "final",
    stream_timeout: float | None = None,
    busy: Iterable[bool] = (False,),
    health_error: Exception | None = None,
    directory: str = "/workspace/ws1",
) -> Replay:
    """Run one Turn against recording `name`, for the session it was recorded for."""
    events = load_events(name)
    if session_id is None:
        session_id = str(created_sessions(events)[0]["id"])
    user = user_messages(events, session_id)[user_index]
    pin_clock(monkeypatch, user["time"]["created"] - 100)
    client = FakeOpenCode(
        session_id=session_id,
        events=events,
        history_mode=history_mode,
        busy=busy,
        health_error=health_error,
    )
    client.script = script if script is not None else feed(events)
    turn, stream, queue = make_turn(client, directory=directory, stream_timeout=stream_timeout)
    await asyncio.wait_for(turn.run(), RUN_TIMEOUT)
    if client.feeder is not None:
        await asyncio.wait_for(client.feeder, RUN_TIMEOUT)
    assert client.prompts == [(session_id, directory, turn.request.body)]
    return Replay(turn, stream, client, session_id, queue.events)


def user_id_of(name: str, session_id: str, index: int = 0) -> str:
    return str(user_messages(load_events(name), session_id)[index]["id"])


# -- scenarios ---------------------------------------------------------------------


async def test_plain_text_streams_then_snapshots_and_completes(monkeypatch):
    replay = await run_replay(monkeypatch, "notitle_plain")
    assert_well_formed(replay)
    history = stored_history(load_events("notitle_plain"), replay.session_id)
    expected = stored_texts(history, user_id_of("notitle_plain", replay.session_id))
    assert expected == "Hello from fake LLM. You said: hello plain"

    chunks = replay.chunks("text")
    assert len(chunks) > 1, "the answer is streamed in several chunks"
    assert "".join(chunks) == expected
    streamed = replay.block_events("text", "stream")
    assert streamed[0].append is False
    assert all(e.append for e in streamed[1:])
    assert all(e.artifact.name == "response" for e in streamed)

    snapshot = replay.snapshot("text")
    assert snapshot is not None
    assert snapshot.artifact.parts[0].text == expected
    assert snapshot.append is False
    assert snapshot.last_chunk is True
    assert replay.artifacts[-1] is snapshot
    assert replay.client_view() == {f"{TASK_ID}:response": expected}

    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    usage = replay.final_metadata()["shared"]["usage"]
    assert usage["input_tokens"] == 10
    assert usage["output_tokens"] == 5
    assert usage["total_tokens"] == 15
    assert replay.final_metadata()["shared"]["session"]["title"] == "replayed session"
    assert replay.retry_statuses() == []


async def test_reasoning_is_its_own_block_and_stays_out_of_the_answer(monkeypatch):
    replay = await run_replay(monkeypatch, "reasoning")
    assert_well_formed(replay)
    reasoning = "Let me think about this. "
    answer = "Hello from fake LLM. You said: think first [[reason]]"

    assert "".join(replay.chunks("reasoning")) == reasoning
    # Five deltas; those already queued together are merged into one chunk.
    assert 1 <= len(replay.chunks("reasoning")) <= 5
    snapshot = replay.snapshot("reasoning")
    assert snapshot is not None
    assert snapshot.artifact.parts[0].text == reasoning
    assert snapshot.artifact.name == "reasoning"
    assert snapshot.last_chunk is True
    assert all(
        stream_meta(e)["block_type"] == "reasoning"
        for e in replay.block_events("reasoning", "stream")
    )

    # The answer starts a fresh block: no separator, no reasoning text in it.
    assert "".join(replay.chunks("text")) == answer
    assert replay.snapshot("text").artifact.parts[0].text == answer
    view = replay.client_view()
    assert view == {f"{TASK_ID}:reasoning": reasoning, f"{TASK_ID}:response": answer}
    assert "think about" not in view[f"{TASK_ID}:response"]
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED


async def test_tool_call_is_published_per_state_and_both_steps_are_answered(monkeypatch):
    replay = await run_replay(monkeypatch, "tool_bash_default")
    assert_well_formed(replay)

    tools = replay.tool_updates()
    assert list(tools) == [f"{TASK_ID}:tool:prt_21293a642001IkjV1b0hcdCMNx"]
    updates = next(iter(tools.values()))
    data = [tool_data(e) for e in updates]
    # A `running` update that adds bash's live output (metadata.output) is published.
    assert [d["status"] for d in data] == ["pending", "running", "running", "completed"]
    assert data[2]["output"] == "hi\n"
    assert all(d["call_id"] == "call_1795607995951" and d["tool"] == "bash" for d in data)
    assert "input" not in data[0]  # `{}` is left out
    assert data[1]["input"] == {"command": "echo hi"}
    assert data[3]["output"] == "hi\n"
    assert data[3]["title"] == "echo hi"
    assert [e.last_chunk for e in updates] == [False, False, False, True]
    assert all(e.append is False for e in updates)
    assert all(e.artifact.parts[0].media_type == "application/json" for e in updates)
    assert all(stream_meta(e)["block_type"] == "tool_call" for e in updates)

    expected = "Running tool. " + TEXT_SEPARATOR + "Tool finished. Result: hi\n"
    assert "".join(replay.chunks("text")) == expected
    assert replay.snapshot("text").artifact.parts[0].text == expected
    # The second step's text begins with the separator, streamed once.
    assert replay.chunks("text")[1].startswith(TEXT_SEPARATOR)
    assert sum(c.count(TEXT_SEPARATOR) for c in replay.chunks("text")) == 1
    assert replay.client_view()[f"{TASK_ID}:response"] == expected

    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    usage = replay.final_metadata()["shared"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (30, 15)
    assert usage["total_tokens"] == 45


@pytest.mark.parametrize("history_mode", ["final", "live"])
async def test_provider_401_ends_auth_required(monkeypatch, history_mode):
    events = load_events("llm_error_401")
    replay = await run_replay(
        monkeypatch,
        "llm_error_401",
        history_mode=history_mode,
        script=feed(events, hold_after_first_idle=history_mode == "live"),
    )
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_AUTH_REQUIRED
    assert replay.stream.final_state == TaskState.TASK_STATE_AUTH_REQUIRED
    text = replay.final_text()
    assert "Incorrect API key provided (fake)" in text
    assert "credentials" in text
    error = replay.final_metadata()["opencode"]["error"]
    assert error["type"] == "UPSTREAM_UNAUTHORIZED"
    assert error["upstream_error"] == "APIError"
    assert error["upstream_status"] == 401
    assert replay.artifacts == []
    if history_mode == "live":
        # At the first idle OpenCode had not stored the error yet: the turn re-read.
        assert replay.client.message_calls >= 2


async def test_retries_are_reported_then_the_500_fails_the_turn(monkeypatch):
    events = load_events("llm_error_500_full")
    session_id = session_titled(events, "scen llm_error_500_full")
    replay = await run_replay(monkeypatch, "llm_error_500_full", session_id=session_id)
    assert_well_formed(replay)

    retries = replay.retry_statuses()
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4, 5]
    assert all(r["message"] == "Internal server error (fake)" for r in retries)
    assert all("retrying (attempt" in r["text"] for r in retries)

    assert replay.final_state == TaskState.TASK_STATE_FAILED
    assert "Internal server error (fake)" in replay.final_text()
    error = replay.final_metadata()["opencode"]["error"]
    assert error["type"] == "UPSTREAM_EXECUTION_ERROR"
    assert error["upstream_status"] == 500
    # Other sessions in the same stream answered with text; none of it is ours.
    assert replay.artifacts == []


async def test_midstream_failure_fails_and_the_snapshot_drops_repeated_partials(monkeypatch):
    events = load_events("llm_midstream_error_full")
    session_id = session_titled(events, "scen llm_midstream_error_full")
    replay = await run_replay(monkeypatch, "llm_midstream_error_full", session_id=session_id)
    assert_well_formed(replay)

    assert [r["attempt"] for r in replay.retry_statuses()] == [1, 2, 3, 4, 5]
    assert replay.final_state == TaskState.TASK_STATE_FAILED
    assert "upstream exploded mid-stream (fake)" in replay.final_text()
    assert replay.final_metadata()["opencode"]["error"]["upstream_error"] == "UnknownError"

    partial = "partial answer before failure "
    # Every attempt re-streamed the partial text while it ran ...
    assert "".join(replay.chunks("text")).count(partial.strip()) == 6
    # ... but the final snapshot is what OpenCode stored: the last attempt's text, once.
    assert replay.snapshot("text").artifact.parts[0].text == partial
    assert replay.client_view()[f"{TASK_ID}:response"] == partial


@pytest.mark.parametrize("history_mode", ["final", "live"])
async def test_abort_by_someone_else_ends_canceled_with_the_partial_text(monkeypatch, history_mode):
    events = load_events("abort_midstream")
    replay = await run_replay(
        monkeypatch,
        "abort_midstream",
        history_mode=history_mode,
        script=feed(events, hold_after_first_idle=history_mode == "live"),
    )
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_CANCELED
    assert replay.final_text() == "The OpenCode turn was aborted."
    assert replay.client.aborts == [], "the adapter did not abort anything itself"
    partial = "word0 word1 word2 word3 word4 "
    assert "".join(replay.chunks("text")) == partial
    assert replay.snapshot("text").artifact.parts[0].text == partial
    # An abort is not an error; the task still records which OpenCode message it is.
    assert "error" not in replay.final_metadata()["opencode"]
    assert replay.final_metadata()["opencode"]["message_id"].startswith("msg")


async def test_cancel_by_the_client_aborts_opencode_and_publishes_nothing_after(monkeypatch):
    events = load_events("abort_midstream")
    session_id = str(created_sessions(events)[0]["id"])
    first_delta = next(i for i, e in enumerate(events) if e["type"] == "message.part.delta")
    reached = asyncio.Event()
    resume = asyncio.Event()

    async def script(client: FakeOpenCode) -> None:
        for event in events[: first_delta + 1]:
            client.deliver(event)
            await asyncio.sleep(0)
        reached.set()
        await resume.wait()
        for event in events[first_delta + 1 :]:
            client.deliver(event)
            await asyncio.sleep(0)

    user = user_messages(events, session_id)[0]
    pin_clock(monkeypatch, user["time"]["created"] - 100)
    client = FakeOpenCode(session_id=session_id, events=events)
    client.script = script
    turn, stream, queue = make_turn(client)
    running = asyncio.create_task(turn.run())
    await asyncio.wait_for(reached.wait(), RUN_TIMEOUT)
    # Let the turn drain what was delivered, so the first chunk is out.
    await until(lambda: any(isinstance(e, TaskArtifactUpdateEvent) for e in queue.events))
    await turn.cancel()
    await turn.cancel()  # idempotent
    resume.set()
    await asyncio.wait_for(running, RUN_TIMEOUT)
    await asyncio.wait_for(client.feeder, RUN_TIMEOUT)

    replay = Replay(turn, stream, client, session_id, queue.events)
    assert_well_formed(replay)
    assert client.aborts == [session_id]
    assert replay.final_state == TaskState.TASK_STATE_CANCELED
    assert replay.final_text() == "Canceled at the client's request."
    assert replay.chunks("text") == ["word0 "]
    assert replay.snapshot("text") is None


async def until(condition: Callable[[], bool], timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def foreign_texts(events: list[dict[str, Any]], session_id: str) -> set[str]:
    """Every text other sessions in the recording streamed (deltas and final part texts)."""
    texts = set()
    for event in events:
        if session_of(event) in (session_id, None):
            continue
        props = event["properties"]
        if event["type"] == "message.part.delta" and props.get("delta"):
            texts.add(props["delta"])
        elif event["type"] == "message.part.updated" and props["part"].get("text"):
            texts.add(props["part"]["text"])
    return texts


@pytest.mark.parametrize("direct", [False, True], ids=["via-hub", "straight-to-turn"])
@pytest.mark.parametrize(
    ("name", "title", "answer"),
    [
        ("busy_queue", "busy", "word0 word1 word2 word3 word4 word5 word6 word7"),
        (
            "sync_tool",
            "scen sync_tool",
            "Running tool. " + TEXT_SEPARATOR + "Tool finished. Result: sync\n",
        ),
    ],
)
async def test_other_sessions_never_leak_into_the_answer(monkeypatch, name, title, answer, direct):
    events = load_events(name)
    session_id = session_titled(events, title)
    others = {session_of(e) for e in events} - {session_id, None}
    assert others, "the recording has concurrent sessions"
    foreign = foreign_texts(events, session_id)
    assert "partial " in foreign

    replay = await run_replay(
        monkeypatch, name, session_id=session_id, script=feed(events, direct=direct)
    )
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    view = replay.client_view()
    assert view[f"{TASK_ID}:response"] == answer
    published_text = "".join(
        e.artifact.parts[0].text for e in replay.artifacts if e.artifact.name != "tool_call"
    )
    for text in foreign:
        if text not in answer:
            assert text not in published_text
    assert "partial" not in published_text
    # The other sessions' retries and errors are not ours either.
    assert replay.retry_statuses() == []
    assert "error" not in replay.final_metadata().get("opencode", {})


async def test_a_queued_second_prompt_gets_only_its_own_answer(monkeypatch):
    events = load_events("busy_queue")
    session_id = session_titled(events, "busy")
    replay = await run_replay(monkeypatch, "busy_queue", session_id=session_id, user_index=1)
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    answer = "Hello from fake LLM. You said: second prompt"
    assert "".join(replay.chunks("text")) == answer
    assert replay.client_view() == {f"{TASK_ID}:response": answer}
    assert "word0" not in answer


async def test_subagent_events_do_not_end_or_pollute_the_parent_turn(monkeypatch):
    events = load_events("task_subagent")
    parent = session_titled(events, "task parent")
    child = next(info["id"] for info in created_sessions(events) if info.get("parentID"))
    replay = await run_replay(
        monkeypatch, "task_subagent", session_id=parent, directory="/workspace/ws2"
    )
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED

    # Only the parent's task tool is published, not the child's bash call.
    tools = replay.tool_updates()
    assert list(tools) == [f"{TASK_ID}:tool:prt_212a8525e001jiRgxDJ5BR35aP"]
    data = [tool_data(e) for e in next(iter(tools.values()))]
    assert [d["tool"] for d in data] == ["task"] * len(data)
    assert data[-1]["status"] == "completed"
    assert f'<task id="{child}" state="completed">' in data[-1]["output"]

    # The child went idle first; the turn still waited for the parent's final answer.
    history = stored_history(events, parent)
    expected = stored_texts(history, user_id_of("task_subagent", parent))
    assert expected.endswith("</task_result>\n</task>")
    assert replay.client_view()[f"{TASK_ID}:response"] == expected
    usage = replay.final_metadata()["shared"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (30, 15)


async def test_a_stale_idle_before_our_message_does_not_end_the_turn(monkeypatch):
    events = load_events("notitle_plain")
    session_id = str(created_sessions(events)[0]["id"])
    stale = [
        {
            "type": "session.status",
            "properties": {"sessionID": session_id, "status": {"type": "idle"}},
        },
        {"type": "session.idle", "properties": {"sessionID": session_id}},
    ]
    replay = await run_replay(monkeypatch, "notitle_plain", script=feed(stale + events))
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    assert "".join(replay.chunks("text")) == "Hello from fake LLM. You said: hello plain"


async def test_an_error_before_any_message_fails_the_turn(monkeypatch):
    session_id = "ses_unknown_model"
    events = [
        {
            "type": "session.status",
            "properties": {"sessionID": session_id, "status": {"type": "busy"}},
        },
        {
            "type": "session.error",
            "properties": {
                "sessionID": session_id,
                "error": {
                    "name": "UnknownError",
                    "data": {"message": "Model not found: fake/nope."},
                },
            },
        },
        {
            "type": "session.status",
            "properties": {"sessionID": session_id, "status": {"type": "idle"}},
        },
        {"type": "session.idle", "properties": {"sessionID": session_id}},
    ]
    pin_clock(monkeypatch, 1795608000000)
    client = FakeOpenCode(session_id=session_id, events=events)
    client.script = feed(events)
    turn, stream, queue = make_turn(client)
    await asyncio.wait_for(turn.run(), RUN_TIMEOUT)
    replay = Replay(turn, stream, client, session_id, queue.events)
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_FAILED
    assert (
        replay.final_text()
        == "OpenCode failed the turn (UnknownError): Model not found: fake/nope."
    )
    assert replay.final_metadata()["opencode"]["error"]["type"] == "UPSTREAM_EXECUTION_ERROR"


# -- losing the upstream -------------------------------------------------------------


async def test_stream_lost_with_opencode_down_fails_quickly(monkeypatch):
    events = load_events("notitle_plain")
    first_delta = next(i for i, e in enumerate(events) if e["type"] == "message.part.delta")

    async def script(client: FakeOpenCode) -> None:
        for event in events[: first_delta + 1]:
            client.deliver(event)
            await asyncio.sleep(0)
        client.hub._broadcast(StreamLost("OpenCode closed its event stream"))

    down = UpstreamUnreachable(
        "OpenCode is unreachable at http://opencode.test (ConnectError: connection refused)"
    )
    started = time.monotonic()
    replay = await run_replay(monkeypatch, "notitle_plain", script=script, health_error=down)
    assert time.monotonic() - started < 1.0
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_FAILED
    text = replay.final_text()
    assert "OpenCode became unreachable during the turn" in text
    assert "OpenCode closed its event stream" in text
    assert "connection refused" in text
    assert replay.final_metadata()["opencode"]["error"]["type"] == "UPSTREAM_UNREACHABLE"
    assert replay.client.health_calls == 1
    assert replay.chunks("text") == ["Hello "]


async def test_stream_lost_and_restored_recovers_the_answer_from_history(monkeypatch):
    events = load_events("notitle_plain")
    first_delta = next(i for i, e in enumerate(events) if e["type"] == "message.part.delta")

    async def script(client: FakeOpenCode) -> None:
        for event in events[: first_delta + 1]:
            client.deliver(event)
            await asyncio.sleep(0)
        client.hub._broadcast(StreamLost("OpenCode closed its event stream"))
        await asyncio.sleep(0)
        client.hub._broadcast(StreamRestored())

    replay = await run_replay(monkeypatch, "notitle_plain", script=script, busy=(False,))
    assert_well_formed(replay)
    assert replay.client.health_calls == 1
    assert replay.client.status_calls == 1
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    answer = "Hello from fake LLM. You said: hello plain"
    assert replay.chunks("text") == ["Hello "]
    assert replay.snapshot("text").artifact.parts[0].text == answer
    assert replay.client_view() == {f"{TASK_ID}:response": answer}


async def test_silent_session_that_is_idle_finishes_from_history(monkeypatch):
    async def silent(client: FakeOpenCode) -> None:
        return None

    started = time.monotonic()
    replay = await run_replay(
        monkeypatch, "notitle_plain", script=silent, stream_timeout=0.05, busy=(False,)
    )
    assert time.monotonic() - started < 1.0
    assert_well_formed(replay)
    assert replay.client.status_calls == 1
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED
    # Nothing was streamed, but the stored answer is published in full.
    assert replay.chunks("text") == []
    answer = "Hello from fake LLM. You said: hello plain"
    assert replay.snapshot("text").artifact.parts[0].text == answer
    assert replay.final_metadata()["shared"]["usage"]["output_tokens"] == 5


async def test_silence_probe_waits_while_busy_then_finishes(monkeypatch):
    monkeypatch.setattr(turn_module, "SILENCE_PROBE_SECONDS", 0.02)

    async def silent(client: FakeOpenCode) -> None:
        return None

    replay = await run_replay(monkeypatch, "notitle_plain", script=silent, busy=(True, True, False))
    assert_well_formed(replay)
    assert replay.client.status_calls == 3
    assert replay.final_state == TaskState.TASK_STATE_COMPLETED


async def test_silence_with_a_busy_session_and_a_stream_timeout_fails(monkeypatch):
    async def silent(client: FakeOpenCode) -> None:
        return None

    replay = await run_replay(
        monkeypatch, "notitle_plain", script=silent, stream_timeout=0.05, busy=(True,)
    )
    assert_well_formed(replay)
    assert replay.final_state == TaskState.TASK_STATE_FAILED
    assert "OpenCode sent no event for 0.05 s" in replay.final_text()
    assert "OPENCODE_TIMEOUT_STREAM" in replay.final_text()
    assert replay.final_metadata()["opencode"]["error"]["type"] == "UPSTREAM_UNREACHABLE"


@pytest.mark.parametrize("opencode_up", [False, True])
async def test_hub_not_connected_fails_before_prompting(monkeypatch, opencode_up):
    monkeypatch.setattr(turn_module, "HUB_CONNECT_TIMEOUT", 0.01)
    error = None if opencode_up else UpstreamUnreachable("OpenCode is unreachable (refused)")
    client = FakeOpenCode(session_id="ses_x", health_error=error)
    turn, stream, queue = make_turn(client, connected=False)
    await asyncio.wait_for(turn.run(), RUN_TIMEOUT)
    replay = Replay(turn, stream, client, "ses_x", queue.events)
    assert_well_formed(replay)
    assert client.prompts == []
    assert replay.final_state == TaskState.TASK_STATE_FAILED
    error_meta = replay.final_metadata()["opencode"]["error"]
    assert error_meta["type"] == "UPSTREAM_UNREACHABLE"
    if opencode_up:
        assert "event stream is not connected" in replay.final_text()
    else:
        assert replay.final_text() == "OpenCode is unreachable (refused)"


async def test_partials_of_failed_attempts_do_not_survive_an_abort_during_retry(monkeypatch):
    """Mid-stream failures (§7.15) followed by an abort during the backoff (§7.12).

    The recorded attempts stream a partial answer that OpenCode never stores (their text
    parts stay ""). An abort during the backoff completes the message with no error. The
    task's final answer must agree with what OpenCode stored: no text.
    """
    events = load_events("llm_midstream_error_full")
    session_id = session_titled(events, "scen llm_midstream_error_full")
    own = [e for e in events if session_of(e) == session_id]
    second_retry = next(
        i
        for i, e in enumerate(own)
        if e["type"] == "session.status" and e["properties"]["status"].get("attempt") == 2
    )
    assistant = next(
        e["properties"]["info"]
        for e in own
        if e["type"] == "message.updated" and e["properties"]["info"]["role"] == "assistant"
    )
    completed = {**assistant, "time": {**assistant["time"], "completed": 1795608193000}}
    ending = [
        {"type": "message.updated", "properties": {"sessionID": session_id, "info": completed}},
        {
            "type": "session.status",
            "properties": {"sessionID": session_id, "status": {"type": "idle"}},
        },
        {"type": "session.idle", "properties": {"sessionID": session_id}},
    ]
    scenario = own[: second_retry + 1] + ending

    user = user_messages(events, session_id)[0]
    pin_clock(monkeypatch, user["time"]["created"] - 100)
    client = FakeOpenCode(session_id=session_id, events=scenario)
    client.script = feed(scenario)
    turn, stream, queue = make_turn(client)
    await asyncio.wait_for(turn.run(), RUN_TIMEOUT)
    replay = Replay(turn, stream, client, session_id, queue.events)
    assert_well_formed(replay)

    stored = stored_texts(stored_history(scenario, session_id), str(user["id"]))
    assert stored == ""
    assert "partial" in "".join(replay.chunks("text")), "the attempts did stream text"
    assert replay.client_view().get(f"{TASK_ID}:response", "") == stored


WHOLE_TURNS = [
    ("notitle_plain", {}),
    ("reasoning", {}),
    ("tool_bash_default", {}),
    ("task_subagent", {"directory": "/workspace/ws2"}),
    ("busy_queue", {"user_index": 1}),
]


@pytest.mark.parametrize(("name", "options"), WHOLE_TURNS, ids=[n for n, _ in WHOLE_TURNS])
async def test_a_turn_seen_whole_in_the_events_ends_as_the_read_back_would(
    monkeypatch, name, options
):
    """No `GET /message` after idle when the events showed every message to its end,
    and the final snapshot, usage and state equal those of a turn that read it back."""
    events = load_events(name)
    if name == "busy_queue":
        options = {**options, "session_id": session_titled(events, "busy")}
    if name == "task_subagent":
        options = {**options, "session_id": session_titled(events, "task parent")}
    seen = await run_replay(monkeypatch, name, **options)
    assert seen.client.message_calls == 0

    monkeypatch.setattr(Turn, "_seen_turn", lambda self: None)
    read_back = await run_replay(monkeypatch, name, **options)
    assert read_back.client.message_calls >= 1

    assert seen.final_state == read_back.final_state == TaskState.TASK_STATE_COMPLETED
    assert seen.client_view() == read_back.client_view()
    assert seen.final_metadata() == read_back.final_metadata()


async def test_a_retried_turn_reads_the_stored_messages_back(monkeypatch):
    replay = await run_replay(monkeypatch, "llm_error_once_500")
    assert replay.retry_statuses()
    assert replay.client.message_calls >= 1


@pytest.mark.parametrize(
    ("stored", "announced"),
    [(TaskState.TASK_STATE_WORKING, True), (TaskState.TASK_STATE_INPUT_REQUIRED, False)],
)
async def test_a_resumed_turn_with_a_pending_ask_says_input_required(stored, announced):
    """After a crash the stored state may lag behind the ask (state writes are behind
    the stream): the resumed turn then announces the ask again."""
    from a2a.types.a2a_pb2 import Task, TaskStatus

    from opencode_a2a_server.store.migrations import upgrade

    client = FakeOpenCode(session_id="ses_resumed", busy=(True,))
    turn, stream, queue = make_turn(client)
    await upgrade(turn.interrupts.store._engine)
    props = {
        "id": "per_resumed",
        "sessionID": "ses_resumed",
        "permission": "bash",
        "patterns": ["echo hi"],
        "metadata": {"command": "echo hi"},
        "always": ["echo *"],
    }
    ask = turn.interrupts.new_ask(
        "permission",
        props,
        owner="tester",
        task_id=TASK_ID,
        context_id=CONTEXT_ID,
        directory="/workspace/ws1",
    )
    await turn.interrupts.register(ask)
    stream.continue_after(Task(id=TASK_ID, context_id=CONTEXT_ID, status=TaskStatus(state=stored)))

    runner = asyncio.create_task(turn.resume("msg_user", 0))
    try:
        await asyncio.wait_for(turn.wait_settled(), RUN_TIMEOUT)
        statuses = [e for e in queue.events if isinstance(e, TaskStatusUpdateEvent)]
        if announced:
            assert [s.status.state for s in statuses] == [TaskState.TASK_STATE_INPUT_REQUIRED]
            meta = json_format.MessageToDict(statuses[0].metadata)
            assert meta["shared"]["interrupt"]["request_id"] == "per_resumed"
        else:
            assert statuses == []
        assert turn.paused
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def test_a_block_keeps_deltas_apart_until_its_whole_text_is_asked_for() -> None:
    block = turn_module._Block("text", "msg_1")
    for word in ("w0 ", "w1 ", "w2"):
        block.add(word)
    assert block.chunks == ["w0 ", "w1 ", "w2"] and block.length == 8
    assert block.emitted == "w0 w1 w2"
    assert block.chunks == ["w0 w1 w2"]  # joined once, then kept joined
    block.add(" w3")
    assert block.emitted == "w0 w1 w2 w3" and block.length == 11
