"""EventHub routing (by session, child sessions to parents, noise dropped) and the SSE parser."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from opencode_a2a_server.upstream.events import (
    EventHub,
    StreamLost,
    StreamRestored,
    Subscription,
    parse_sse,
)

from .recordings import created_sessions, load_events, session_of, session_titled


@pytest.fixture
def hub() -> EventHub:
    return EventHub(client=None)  # type: ignore[arg-type]  # dispatch never touches the client


def drain(subscription: Subscription) -> list[Any]:
    items = []
    while (item := subscription.get_nowait()) is not None:
        items.append(item)
    return items


def event(kind: str, session_id: str | None = None, **props: Any) -> dict[str, Any]:
    properties = dict(props)
    if session_id is not None:
        properties["sessionID"] = session_id
    return {"id": "evt_1", "type": kind, "properties": properties}


# -- routing ---------------------------------------------------------------------------


def test_events_go_to_the_subscribers_of_their_session_only(hub):
    events = load_events("busy_queue")
    mine = session_titled(events, "busy")
    mine_a, mine_b = hub.subscribe(mine), hub.subscribe(mine)
    other_id = "ses_ded6a2c27ffenwIB6TjMI1cxom"
    other = hub.subscribe(other_id)
    for e in events:
        hub.dispatch(e)

    got = drain(mine_a)
    assert got == drain(mine_b), "every subscriber of a session gets the same events"
    assert got == [e for e in events if session_of(e) == mine]
    assert {session_of(e) for e in drain(other)} == {other_id}


def test_every_event_of_a_session_arrives_in_order(hub):
    events = load_events("tool_bash_default")
    session_id = str(created_sessions(events)[0]["id"])
    subscription = hub.subscribe(session_id)
    for e in events:
        hub.dispatch(e)
    own = [e for e in events if session_of(e) == session_id]
    # session.diff is not noise for routing purposes; only IGNORED_TYPES are dropped.
    assert drain(subscription) == own


def test_child_session_events_reach_the_parents_subscribers(hub):
    events = load_events("task_subagent")
    parent = session_titled(events, "task parent")
    child_info = next(info for info in created_sessions(events) if info.get("parentID"))
    child = child_info["id"]
    assert child_info["parentID"] == parent

    subscription = hub.subscribe(parent)
    for e in events:
        hub.dispatch(e)
    got = drain(subscription)
    sessions = {session_of(e) for e in got}
    assert sessions == {parent, child}
    # The child's permission request, the point of this routing, reaches the parent.
    asked = [e for e in got if e["type"] == "permission.asked"]
    assert len(asked) == 1 and asked[0]["properties"]["sessionID"] == child
    # The child's own session.created is routed too (it names the parent).
    assert any(e["type"] == "session.created" and session_of(e) == child for e in got)
    assert [e for e in got if session_of(e) == child] == [
        e for e in events if session_of(e) == child
    ]
    assert hub._parents == {child: parent}


def test_child_events_before_its_session_created_are_not_routed(hub):
    subscription = hub.subscribe("ses_parent")
    hub.dispatch(event("session.status", "ses_child", status={"type": "busy"}))
    assert drain(subscription) == []
    hub.dispatch(
        event("session.created", "ses_child", info={"id": "ses_child", "parentID": "ses_parent"})
    )
    hub.dispatch(event("session.status", "ses_child", status={"type": "busy"}))
    assert [e["type"] for e in drain(subscription)] == ["session.created", "session.status"]


def test_grandchildren_reach_the_root_session_and_the_child(hub):
    root, child = hub.subscribe("ses_root"), hub.subscribe("ses_child")
    hub.dispatch(event("session.created", "ses_child", info={"parentID": "ses_root"}))
    hub.dispatch(event("session.created", "ses_grand", info={"parentID": "ses_child"}))
    drain(root), drain(child)
    hub.dispatch(event("session.idle", "ses_grand"))
    assert [session_of(e) for e in drain(root)] == ["ses_grand"]
    assert [session_of(e) for e in drain(child)] == ["ses_grand"]


def test_a_parent_cycle_does_not_loop_forever(hub):
    subscription = hub.subscribe("ses_a")
    hub.dispatch(event("session.created", "ses_a", info={"parentID": "ses_b"}))
    hub.dispatch(event("session.created", "ses_b", info={"parentID": "ses_a"}))
    drain(subscription)
    hub.dispatch(event("session.idle", "ses_b"))
    assert len(drain(subscription)) == 1


@pytest.mark.parametrize(
    "kind",
    [
        "server.heartbeat",
        "plugin.added",
        "catalog.updated",
        "reference.updated",
        "integration.updated",
        "file.watcher.updated",
        "lsp.updated",
        "project.updated",
        "todo.updated",
    ],
)
def test_noise_is_dropped_even_with_a_session_id(hub, kind):
    subscription = hub.subscribe("ses_1")
    hub.dispatch(event(kind, "ses_1"))
    assert drain(subscription) == []


def test_recorded_noise_never_reaches_subscribers(hub):
    events = load_events("task_subagent")
    parent = session_titled(events, "task parent")
    subscription = hub.subscribe(parent)
    for e in events:
        hub.dispatch(e)
    kinds = {e["type"] for e in drain(subscription)}
    assert "plugin.added" not in kinds and "catalog.updated" not in kinds
    assert {e["type"] for e in events} >= {"plugin.added", "catalog.updated"}


def test_events_without_a_session_or_properties_are_dropped(hub):
    subscription = hub.subscribe("ses_1")
    for raw in (
        {"type": "server.connected", "properties": {}},
        {"type": "file.edited", "properties": {"file": "/x"}},
        {"type": "session.idle"},
        {"type": "session.idle", "properties": "ses_1"},
        {"type": "session.idle", "properties": {"sessionID": 1}},
        {"payload": "not an object"},
    ):
        hub.dispatch(raw)
    assert drain(subscription) == []


def test_global_event_payloads_are_unwrapped(hub):
    subscription = hub.subscribe("ses_1")
    inner = event("session.idle", "ses_1")
    hub.dispatch({"directory": "/workspace/ws1", "project": "global", "payload": inner})
    assert drain(subscription) == [inner]


def test_global_sync_duplicates_are_ignored(hub):
    subscription = hub.subscribe("ses_1")
    hub.dispatch(
        {
            "directory": "/workspace/ws1",
            "project": "global",
            "payload": {
                "id": "evt_2",
                "type": "sync",
                "properties": {"sessionID": "ses_1"},
                "syncEvent": {"type": "message.updated.1", "seq": 3, "aggregateID": "ses_1"},
            },
        }
    )
    assert drain(subscription) == []


def test_unsubscribed_sessions_are_forgotten(hub):
    subscription = hub.subscribe("ses_1")
    with hub.subscribe("ses_1"):
        assert len(hub._subscribers["ses_1"]) == 2
    assert hub._subscribers["ses_1"] == {subscription}
    subscription.close()
    assert hub._subscribers == {}
    hub.dispatch(event("session.idle", "ses_1"))  # nobody listening: no error


def test_broadcast_signals_reach_every_subscriber(hub):
    a, b = hub.subscribe("ses_a"), hub.subscribe("ses_b")
    hub._broadcast(StreamLost("gone"))
    hub._broadcast(StreamRestored())
    assert drain(a) == drain(b) == [StreamLost("gone"), StreamRestored()]


async def test_subscription_get_times_out_on_silence(hub):
    subscription = hub.subscribe("ses_1")
    with pytest.raises(TimeoutError):
        await subscription.get(timeout=0.01)
    hub.dispatch(event("session.idle", "ses_1"))
    assert (await subscription.get(timeout=0.01))["type"] == "session.idle"


async def test_wait_connected(hub):
    assert await hub.wait_connected(0.01) is False
    hub._connected.set()
    assert await hub.wait_connected(0.01) is True
    assert hub.connected


# -- parse_sse --------------------------------------------------------------------------


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def parse(lines: Iterable[str], newline: str = "\n") -> list[dict[str, Any]]:
    """Parse the lines as one stream, whole and cut into chunks of every size up to 9."""
    data = "".join(line + newline for line in lines).encode()
    whole = [item async for item in parse_sse(_chunks(data, max(len(data), 1)))]
    for size in range(1, 10):
        assert [item async for item in parse_sse(_chunks(data, size))] == whole, size
    return whole


async def test_parse_sse_decodes_one_event_per_blank_line():
    lines = [
        'data: {"type":"server.connected","properties":{}}',
        "",
        'data: {"type":"session.idle","properties":{"sessionID":"ses_1"}}',
        "",
    ]
    assert await parse(lines) == [
        {"type": "server.connected", "properties": {}},
        {"type": "session.idle", "properties": {"sessionID": "ses_1"}},
    ]


async def test_parse_sse_joins_multi_line_data_with_newlines():
    lines = ['data: {"type": "x",', 'data: "properties":', 'data: {"text": "a"}}', ""]
    assert await parse(lines) == [{"type": "x", "properties": {"text": "a"}}]


async def test_parse_sse_keeps_newlines_inside_strings_of_multi_line_data():
    # Two data lines are joined with "\n"; inside a JSON string that would be invalid,
    # so the escaped form is what OpenCode sends and what survives.
    lines = ['data: {"text": "line1\\nline2"}', ""]
    assert await parse(lines) == [{"text": "line1\nline2"}]


async def test_parse_sse_skips_junk_comments_and_other_fields():
    lines = [
        ": keep-alive comment",
        "event: message",
        "id: 7",
        "retry: 1000",
        "",
        "data: not json at all",
        "",
        "data: [1, 2, 3]",
        "",
        'data:{"no":"space"}',
        "",
        "",
        "",
        'data: {"last": true}',
    ]
    # The junk event and the JSON array are skipped; blank lines without data are no-ops;
    # the last event has no terminating blank line, so it was never complete.
    assert await parse(lines) == [{"no": "space"}]


async def test_parse_sse_accepts_crlf_line_endings_split_across_chunks():
    lines = ['data: {"type": "a"}', "", 'data: {"type": "b",', 'data: "n": "é"}', ""]
    assert await parse(lines, newline="\r\n") == [{"type": "a"}, {"type": "b", "n": "é"}]


async def test_parse_sse_skips_an_event_that_is_not_utf8():
    async def stream() -> AsyncIterator[bytes]:
        yield b"data: \xff\xfe\n\n"
        yield b'data: {"ok": 1}\n\n'

    assert [item async for item in parse_sse(stream())] == [{"ok": 1}]


async def test_parse_sse_over_a_recording_round_trips_every_event():
    events = load_events("notitle_plain")
    lines: list[str] = []
    for e in events:
        lines += [f"data: {json.dumps(e)}", ""]
    assert await parse(lines) == events
