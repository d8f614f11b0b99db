"""Permission and question asks: what they look like on A2A, and answering them.

An answer can come in-band (a follow-up A2A message on the waiting task) or through
the `a2a.interrupt.*` methods; both end in `InterruptService.resolve`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from a2a.types.a2a_pb2 import Message
from google.protobuf import json_format

from ..errors import (
    InterruptAlreadyResolved,
    InterruptExpired,
    InterruptNotFound,
    InterruptTypeMismatch,
    InvalidParams,
    UpstreamHTTPError,
)
from ..store.interrupts import EXPIRED, PENDING, RESOLVED, RESOLVING, Ask, InterruptStore
from ..upstream.client import OpenCodeClient
from .mapping import as_dict

log = logging.getLogger(__name__)

PERMISSION = "permission"
QUESTION = "question"
PERMISSION_REPLIES = ("once", "always", "reject")


# -- answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A validated answer to one ask."""

    kind: str
    reply: str | None = None  # permission: once | always | reject
    message: str | None = None  # permission: feedback with a reject (or approval)
    answers: list[list[str]] | None = None  # question: labels chosen per question
    reject: bool = False  # question: dismissed

    def resolution(self) -> dict[str, Any]:
        if self.kind == PERMISSION:
            found: dict[str, Any] = {"reply": self.reply}
            if self.message:
                found["message"] = self.message
            return found
        if self.reject:
            return {"rejected": True}
        return {"answers": self.answers}

    @property
    def declines(self) -> bool:
        """True when the answer stops OpenCode's turn (a reject without feedback)."""
        if self.kind == PERMISSION:
            return self.reply == "reject" and not self.message
        return self.reject


def permission_answer(reply: str, message: str | None = None) -> Answer:
    normalized = reply.strip().lower()
    if normalized not in PERMISSION_REPLIES:
        raise InvalidParams(
            f"A permission reply must be one of {', '.join(PERMISSION_REPLIES)}, not {reply!r}."
        )
    return Answer(PERMISSION, reply=normalized, message=message or None)


def question_answer(answers: Any) -> Answer:
    if not isinstance(answers, list) or not answers:
        raise InvalidParams(
            "answers must be a non-empty list with one list of labels per question."
        )
    cleaned: list[list[str]] = []
    for index, labels in enumerate(answers):
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InvalidParams(f"answers[{index}] must be a list of option labels (strings).")
        cleaned.append([label for label in labels if label.strip()])
    return Answer(QUESTION, answers=cleaned)


def answer_from_message(message: Message, ask: Ask) -> Answer:
    """Read the answer to `ask` from a follow-up A2A message, or say what is wrong."""
    for part in message.parts:
        if part.WhichOneof("content") == "data":
            data = json_format.MessageToDict(part.data)
            if isinstance(data, dict):
                return _answer_from_data(data, ask)
    text = " ".join(p.text.strip() for p in message.parts if p.WhichOneof("content") == "text")
    if ask.kind == QUESTION and text:
        return _answer_from_label(text, ask)
    if ask.kind == PERMISSION and text.lower() in PERMISSION_REPLIES:
        return permission_answer(text)
    raise InvalidParams(answer_hint(ask), request_id=ask.request_id)


def _answer_from_data(data: dict[str, Any], ask: Ask) -> Answer:
    if ask.kind == PERMISSION:
        if "reply" not in data or not isinstance(data["reply"], str):
            raise InvalidParams(answer_hint(ask), request_id=ask.request_id)
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise InvalidParams("The permission reply's message must be a string.")
        return permission_answer(data["reply"], message)
    if data.get("reject") is True or data.get("reply") == "reject":
        return Answer(QUESTION, reject=True)
    if "answers" in data:
        return question_answer(data["answers"])
    raise InvalidParams(answer_hint(ask), request_id=ask.request_id)


def _answer_from_label(text: str, ask: Ask) -> Answer:
    questions = ask.details.get("questions") or []
    if len(questions) != 1:
        raise InvalidParams(
            "This ask has several questions; answer with a data part "
            '{"answers": [["label"], ...]} (one list per question).',
            request_id=ask.request_id,
        )
    labels = [str(o.get("label")) for o in questions[0].get("options") or []]
    for label in labels:
        if label.lower() == text.lower():
            return Answer(QUESTION, answers=[[label]])
    raise InvalidParams(
        f"{text!r} is not one of the options ({', '.join(labels)}). {answer_hint(ask)}",
        request_id=ask.request_id,
    )


def answer_hint(ask: Ask) -> str:
    if ask.kind == PERMISSION:
        return (
            'This task waits for a permission answer: send a data part {"reply": "once" | '
            '"always" | "reject", "message": "optional feedback"}.'
        )
    return (
        'This task waits for an answer to a question: send a data part {"answers": '
        '[["label", ...], ...]} or {"reject": true}, or a text part equal to an option label.'
    )


# -- how an ask looks on A2A -----------------------------------------------------------


def ask_details(kind: str, props: dict[str, Any]) -> dict[str, Any]:
    """The structured ask (`metadata.shared.interrupt.details`)."""
    if kind == PERMISSION:
        details: dict[str, Any] = {
            "permission": props.get("permission"),
            "patterns": props.get("patterns") or [],
            "always": props.get("always") or [],
        }
        meta = as_dict(props.get("metadata"))
        for key in ("command", "filepath", "diff", "description"):
            if meta.get(key):
                details[key] = meta[key]
        return details
    questions = []
    for question in props.get("questions") or []:
        questions.append(
            {
                "question": question.get("question"),
                "header": question.get("header"),
                "options": [
                    {"label": o.get("label"), "description": o.get("description")}
                    for o in question.get("options") or []
                ],
                "multiple": bool(question.get("multiple")),
            }
        )
    return {"questions": questions}


def ask_text(kind: str, details: dict[str, Any]) -> str:
    """The readable agent message of an input-required status."""
    if kind == PERMISSION:
        permission = details.get("permission")
        target = details.get("command") or details.get("filepath")
        target = target or ", ".join(details.get("patterns") or [])
        text = f"OpenCode asks permission to use {permission}: {target}"
        if details.get("diff"):
            text += f"\n\n{details['diff']}"
        return text + '\n\nAnswer with {"reply": "once" | "always" | "reject"}.'
    lines = ["OpenCode asks:"]
    for question in details.get("questions") or []:
        options = ", ".join(
            f"{o['label']} ({o['description']})" if o.get("description") else str(o["label"])
            for o in question.get("options") or []
        )
        lines.append(f"- {question.get('question')} Options: {options}.")
    return "\n".join(lines)


# -- the service -------------------------------------------------------------------------


class InterruptService:
    """Registers asks, answers them once, lists them, and lets them expire."""

    def __init__(
        self,
        store: InterruptStore,
        client: OpenCodeClient,
        *,
        ttl: float = 10800.0,
        tombstone_ttl: float = 600.0,
    ) -> None:
        self.store = store
        self.client = client
        self.ttl = ttl
        self.tombstone_ttl = tombstone_ttl

    async def register(self, ask: Ask) -> None:
        await self.store.add(ask)

    def new_ask(
        self,
        kind: str,
        props: dict[str, Any],
        *,
        owner: str,
        task_id: str,
        context_id: str,
        directory: str,
    ) -> Ask:
        now = time.time()
        return Ask(
            request_id=str(props.get("id")),
            kind=kind,
            owner=owner,
            task_id=task_id,
            context_id=context_id,
            session_id=str(props.get("sessionID")),
            directory=directory,
            details=ask_details(kind, props),
            created_at=now,
            expires_at=now + self.ttl,
        )

    async def find(self, request_id: str, owner: str) -> Ask:
        """The ask, checked for existence, ownership and expiry."""
        ask = await self.store.get(request_id)
        if ask is None or ask.owner != owner:
            # Another caller's ask is reported exactly like an unknown one.
            raise InterruptNotFound("Interrupt request not found", request_id=request_id)
        if ask.status == EXPIRED or (ask.status == PENDING and ask.expired()):
            raise InterruptExpired(
                "Interrupt request expired: it was not answered within "
                "A2A_INTERRUPT_REQUEST_TTL_SECONDS",
                request_id=request_id,
            )
        if ask.status in (RESOLVED, RESOLVING):
            raise InterruptAlreadyResolved(
                "Interrupt request was already answered", request_id=request_id
            )
        return ask

    async def pending_for_task(self, task_id: str) -> list[Ask]:
        return [a for a in await self.store.pending(task_id=task_id) if a.status == PENDING]

    async def pending_count(self) -> int:
        """Asks still waiting for an answer (for the pending-asks metric)."""
        now = time.time()
        return sum(
            1 for a in await self.store.pending() if a.status == PENDING and not a.expired(now)
        )

    async def list_pending(self, owner: str, kind: str) -> list[Ask]:
        now = time.time()
        asks = await self.store.pending(owner=owner, kind=kind)
        return [a for a in asks if a.status == PENDING and not a.expired(now)]

    async def resolve(self, owner: str, request_id: str, answer: Answer) -> Ask:
        """Forward one answer to OpenCode, exactly once."""
        ask = await self.find(request_id, owner)
        if ask.kind != answer.kind:
            raise InterruptTypeMismatch(
                f"Interrupt {request_id} is a {ask.kind}, not a {answer.kind}",
                request_id=request_id,
                expected_interrupt_type=answer.kind,
                actual_interrupt_type=ask.kind,
            )
        if not await self.store.transition(request_id, PENDING, RESOLVING):
            raise InterruptAlreadyResolved(
                "Interrupt request was already answered", request_id=request_id
            )
        try:
            await self._forward(ask, answer)
        except UpstreamHTTPError as exc:
            if exc.status == 404:
                await self.store.transition(request_id, RESOLVING, RESOLVED, {"gone": True})
                raise InterruptNotFound(
                    "Interrupt request not found: OpenCode no longer waits for it",
                    request_id=request_id,
                ) from None
            await self.store.transition(request_id, RESOLVING, PENDING)
            raise
        except BaseException:
            await self.store.transition(request_id, RESOLVING, PENDING)
            raise
        await self.store.transition(request_id, RESOLVING, RESOLVED, answer.resolution())
        ask.status, ask.resolution = RESOLVED, answer.resolution()
        return ask

    async def _forward(self, ask: Ask, answer: Answer) -> None:
        if answer.kind == PERMISSION:
            body: dict[str, Any] = {"reply": answer.reply}
            if answer.message:
                body["message"] = answer.message
            await self.client.request(
                "POST",
                f"/permission/{ask.request_id}/reply",
                directory=ask.directory,
                json_body=body,
            )
        elif answer.reject:
            await self.client.request(
                "POST", f"/question/{ask.request_id}/reject", directory=ask.directory
            )
        else:
            await self.client.request(
                "POST",
                f"/question/{ask.request_id}/reply",
                directory=ask.directory,
                json_body={"answers": answer.answers},
            )

    async def observed_resolution(self, request_id: str, resolution: dict[str, Any]) -> bool:
        """OpenCode reports an ask answered (by us or elsewhere); True if it was pending."""
        if await self.store.transition(request_id, PENDING, RESOLVED, resolution):
            return True
        ask = await self.store.get(request_id)
        return ask is not None and ask.status in (RESOLVED, RESOLVING)

    async def withdraw(self, ask: Ask, reason: str) -> None:
        """Stop waiting for an ask (cancel, expiry): reject it upstream and close it."""
        if not await self.store.transition(ask.request_id, PENDING, RESOLVING):
            return
        answer = (
            Answer(PERMISSION, reply="reject")
            if ask.kind == PERMISSION
            else Answer(QUESTION, reject=True)
        )
        try:
            await self._forward(ask, answer)
        except Exception as exc:  # OpenCode may have dropped it already
            log.info("withdrawing ask %s upstream failed: %s", ask.request_id, exc)
        status = EXPIRED if reason == "expired" else RESOLVED
        await self.store.transition(ask.request_id, RESOLVING, status, {"withdrawn": reason})

    async def expire_due(self) -> list[Ask]:
        """Withdraw every pending ask past its TTL; forget those past the tombstone."""
        now = time.time()
        due = [a for a in await self.store.pending() if a.status == PENDING and a.expired(now)]
        for ask in due:
            await self.withdraw(ask, "expired")
        await self.store.purge(now - self.tombstone_ttl)
        return due


def ask_item(ask: Ask) -> dict[str, Any]:
    """An entry of `opencode.permissions.list` / `opencode.questions.list`."""
    return {
        "request_id": ask.request_id,
        "interrupt_type": ask.kind,
        "session_id": ask.session_id,
        "task_id": ask.task_id,
        "context_id": ask.context_id,
        "details": ask.details,
        "created_at": ask.created_at,
        "expires_at": ask.expires_at,
    }
