"""InterruptService and in-band answer parsing, on a real SQLite store and a fake OpenCode."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import Message, Part
from sqlalchemy import update

from opencode_a2a_server.errors import (
    InterruptAlreadyResolved,
    InterruptExpired,
    InterruptNotFound,
    InterruptTypeMismatch,
    InvalidParams,
    UpstreamHTTPError,
    UpstreamUnreachable,
)
from opencode_a2a_server.execution.interrupts import (
    PERMISSION,
    QUESTION,
    Answer,
    InterruptService,
    answer_from_message,
    ask_text,
    permission_answer,
)
from opencode_a2a_server.store.database import create_engine
from opencode_a2a_server.store.interrupts import InterruptStore, interrupts

PERMISSION_PROPS = {
    "id": "per_1",
    "sessionID": "ses_1",
    "permission": "edit",
    "patterns": ["a.txt"],
    "always": ["*"],
    "metadata": {"filepath": "/w/a.txt", "diff": "+hello"},
}
QUESTION_PROPS = {
    "id": "que_1",
    "sessionID": "ses_1",
    "questions": [
        {
            "question": "Which color?",
            "header": "Color",
            "options": [{"label": "Red", "description": "warm"}, {"label": "Blue"}],
        }
    ],
}


class FakeOpenCode:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: Exception | None = None

    async def request(self, method: str, path: str, *, directory=None, json_body=None, **_: Any):
        if self.fail is not None:
            raise self.fail
        self.calls.append((method, path, json_body))
        return True


@pytest.fixture
def upstream() -> FakeOpenCode:
    return FakeOpenCode()


@pytest.fixture
def service(tmp_path: Path, upstream: FakeOpenCode) -> InterruptService:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'asks.db'}")
    return InterruptService(InterruptStore(engine), upstream, ttl=60, tombstone_ttl=60)  # type: ignore[arg-type]


async def register(service: InterruptService, kind: str, props: dict, owner: str = "alice"):
    ask = service.new_ask(kind, props, owner=owner, task_id="t1", context_id="c1", directory="/w")
    await service.register(ask)
    return ask


async def test_permission_is_forwarded_once(service, upstream) -> None:
    await register(service, PERMISSION, PERMISSION_PROPS)
    ask = await service.resolve("alice", "per_1", permission_answer("ONCE"))
    assert ask.resolution == {"reply": "once"}
    assert upstream.calls == [("POST", "/permission/per_1/reply", {"reply": "once"})]
    with pytest.raises(InterruptAlreadyResolved):
        await service.resolve("alice", "per_1", permission_answer("once"))
    assert len(upstream.calls) == 1


async def test_concurrent_answers_forward_once(service, upstream) -> None:
    await register(service, PERMISSION, PERMISSION_PROPS)
    results = await asyncio.gather(
        *(service.resolve("alice", "per_1", permission_answer("once")) for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, InterruptAlreadyResolved) for r in results if isinstance(r, Exception))
    assert len(upstream.calls) == 1


async def test_someone_elses_ask_is_not_found(service, upstream) -> None:
    await register(service, PERMISSION, PERMISSION_PROPS, owner="alice")
    with pytest.raises(InterruptNotFound):
        await service.resolve("mallory", "per_1", permission_answer("once"))
    assert await service.list_pending("mallory", PERMISSION) == []
    assert [a.request_id for a in await service.list_pending("alice", PERMISSION)] == ["per_1"]
    assert upstream.calls == []


async def test_wrong_type_and_unknown(service) -> None:
    await register(service, PERMISSION, PERMISSION_PROPS)
    with pytest.raises(InterruptTypeMismatch) as caught:
        await service.resolve("alice", "per_1", Answer(QUESTION, answers=[["x"]]))
    assert caught.value.data["actual_interrupt_type"] == "permission"
    with pytest.raises(InterruptNotFound):
        await service.resolve("alice", "per_unknown", permission_answer("once"))


async def test_expired_ask_is_recognised_then_forgotten(service, upstream) -> None:
    await register(service, QUESTION, QUESTION_PROPS)
    async with service.store._engine.begin() as conn:
        await conn.execute(update(interrupts).values(expires_at=time.time() - 1))
    with pytest.raises(InterruptExpired):
        await service.resolve("alice", "que_1", Answer(QUESTION, reject=True))
    due = await service.expire_due()
    assert [a.request_id for a in due] == ["que_1"]
    assert upstream.calls == [("POST", "/question/que_1/reject", None)]
    with pytest.raises(InterruptExpired):
        await service.resolve("alice", "que_1", Answer(QUESTION, reject=True))
    async with service.store._engine.begin() as conn:
        await conn.execute(update(interrupts).values(expires_at=time.time() - 120))
    await service.expire_due()
    with pytest.raises(InterruptNotFound):
        await service.resolve("alice", "que_1", Answer(QUESTION, reject=True))


async def test_upstream_failure_leaves_the_ask_pending(service, upstream) -> None:
    await register(service, PERMISSION, PERMISSION_PROPS)
    upstream.fail = UpstreamUnreachable("down")
    with pytest.raises(UpstreamUnreachable):
        await service.resolve("alice", "per_1", permission_answer("once"))
    upstream.fail = None
    await service.resolve("alice", "per_1", permission_answer("once"))


async def test_upstream_404_means_gone(service, upstream) -> None:
    await register(service, PERMISSION, PERMISSION_PROPS)
    upstream.fail = UpstreamHTTPError(404, "PermissionNotFoundError")
    with pytest.raises(InterruptNotFound):
        await service.resolve("alice", "per_1", permission_answer("once"))


def message(*parts: Part) -> Message:
    return Message(parts=list(parts))


def data(value: dict) -> Part:
    part = Part()
    part.data.struct_value.update(value)
    return part


async def test_in_band_answers(service) -> None:
    permission = await register(service, PERMISSION, PERMISSION_PROPS)
    question = await register(service, QUESTION, QUESTION_PROPS)
    answer = answer_from_message(message(data({"reply": "reject", "message": "no"})), permission)
    assert (answer.reply, answer.message, answer.declines) == ("reject", "no", False)
    assert answer_from_message(message(data({"reply": "reject"})), permission).declines
    assert answer_from_message(message(Part(text="always")), permission).reply == "always"
    with pytest.raises(InvalidParams, match="permission answer"):
        answer_from_message(message(Part(text="yes please")), permission)
    with pytest.raises(InvalidParams, match="must be one of"):
        answer_from_message(message(data({"reply": "maybe"})), permission)

    assert answer_from_message(message(Part(text="red")), question).answers == [["Red"]]
    assert answer_from_message(message(data({"answers": [["Blue"]]})), question).answers == [
        ["Blue"]
    ]
    assert answer_from_message(message(data({"reject": True})), question).declines
    with pytest.raises(InvalidParams, match="not one of the options"):
        answer_from_message(message(Part(text="green")), question)
    with pytest.raises(InvalidParams, match="list of option labels"):
        answer_from_message(message(data({"answers": ["Blue"]})), question)


def test_ask_text_is_readable() -> None:
    from opencode_a2a_server.execution.interrupts import ask_details

    text = ask_text(PERMISSION, ask_details(PERMISSION, PERMISSION_PROPS))
    assert "permission to use edit: /w/a.txt" in text and "+hello" in text
    text = ask_text(QUESTION, ask_details(QUESTION, QUESTION_PROPS))
    assert "Which color?" in text and "Red (warm)" in text and "Blue" in text
