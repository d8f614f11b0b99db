"""The end of a turn: one log line with its identifiers, and the turn metrics."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from a2a.types.a2a_pb2 import TaskState

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("opencode_a2a_server.turns")


def state_label(state: int | None) -> str:
    """`completed` for TASK_STATE_COMPLETED; `unknown` when no final state was reached."""
    if not state:
        return "unknown"
    try:
        return TaskState.Name(state).removeprefix("TASK_STATE_").lower()
    except ValueError:
        return "unknown"


def record_turn(turn: Any, owner: str, started: float, metrics: Metrics | None) -> None:
    """Log and count a turn that ended; `started` is its time.monotonic() start."""
    now = time.monotonic()
    duration = now - started
    first_text = getattr(turn, "first_text_at", None)
    ttft = first_text - started if first_text is not None else None
    state = state_label(turn.stream.final_state)
    if metrics is not None:
        metrics.observe_turn(state, duration, ttft)
    fields = {
        "task_id": turn.stream.task_id,
        "context_id": turn.stream.context_id,
        "session_id": turn.session_id,
        "principal": owner,
        "state": state,
        "duration_ms": round(duration * 1000),
        "ttft_ms": round(ttft * 1000) if ttft is not None else None,
    }
    log.info(
        "turn task=%s context=%s session=%s principal=%s state=%s duration_ms=%d ttft_ms=%s",
        *(fields[k] for k in ("task_id", "context_id", "session_id", "principal", "state")),
        fields["duration_ms"],
        fields["ttft_ms"] if ttft is not None else "-",
        extra=fields,
    )
