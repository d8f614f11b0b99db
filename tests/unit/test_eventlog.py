"""EventLog: the replay log of running tasks stays bounded and is dropped after a turn ends."""

from __future__ import annotations

from a2a.types.a2a_pb2 import TaskStatusUpdateEvent

from opencode_a2a_server.execution import eventlog as eventlog_module
from opencode_a2a_server.execution.eventlog import EventLog


def event(task_id: str) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task_id, context_id="c")


def test_events_after_a_sequence_are_replayed_in_order():
    log = EventLog(size=3)
    for sequence in range(1, 6):
        log.record("t", sequence, event("t"))
    assert [seq for seq, _ in log.since("t", 0)] == [3, 4, 5]  # only the last `size`
    assert [seq for seq, _ in log.since("t", 4)] == [5]
    assert log.since("unknown", 0) == []


def test_a_finished_task_is_dropped_after_the_retention(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(eventlog_module.time, "monotonic", lambda: now[0])
    log = EventLog(retention=10.0)
    log.record("done", 1, event("done"))
    log.record("running", 1, event("running"))
    log.finish("done")
    assert log.since("done", 0)  # a reconnect racing the end still finds it
    now[0] += 11
    log.finish("running-elsewhere")  # any later finish or new task prunes
    assert log.since("done", 0) == []
    assert log.since("running", 0), "a running task's log is kept however old"


def test_at_most_max_tasks_logs_finished_ones_go_first():
    log = EventLog(max_tasks=3)
    for name in ("old-running", "finished", "b"):
        log.record(name, 1, event(name))
    log.finish("finished")
    log.record("new", 1, event("new"))
    assert len(log) == 3
    assert log.since("finished", 0) == []
    assert log.since("old-running", 0)
    log.record("newer", 1, event("newer"))
    assert len(log) == 3
    assert log.since("old-running", 0) == [], "then the oldest running one"
