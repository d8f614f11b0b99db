"""Extension methods for asks: answer them by method, and list the pending ones."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..execution.interrupts import (
    PERMISSION,
    QUESTION,
    Answer,
    InterruptService,
    ask_item,
    permission_answer,
    question_answer,
)
from .registry import CallContext, Extension, Method, NoParams, Params

INTERACTIVE_INTERRUPT = Extension(
    uri="urn:opencode-a2a:extension:interactive-interrupt:v1",
    description=(
        "OpenCode's permission and question asks turn the task input-required; answer "
        "them in-band (a follow-up message on the same task) or with these methods."
    ),
    params={
        "supported_interrupt_events": ["permission.asked", "question.asked"],
        "request_id_field": "metadata.shared.interrupt.request_id",
        "interrupt_metadata_field": "metadata.shared.interrupt",
        "permission_reply_values": ["once", "always", "reject"],
        "in_band_answer": {
            "permission": {"data_part": {"reply": "once|always|reject", "message": "optional"}},
            "question": {
                "data_part": {"answers": [["label"]]},
                "reject_data_part": {"reject": True},
                "text_part": "equal to an option label (single-question asks)",
            },
            "choose_ask": "add request_id to the data part when several asks are pending",
        },
        "declined_turn_state": "canceled (metadata.opencode.declined)",
        "errors": [
            "INTERRUPT_REQUEST_NOT_FOUND",
            "INTERRUPT_REQUEST_EXPIRED",
            "INTERRUPT_ALREADY_RESOLVED",
            "INTERRUPT_TYPE_MISMATCH",
            "UPSTREAM_UNREACHABLE",
            "UPSTREAM_HTTP_ERROR",
        ],
    },
)

INTERRUPT_RECOVERY = Extension(
    uri="urn:opencode-a2a:extension:interrupt-recovery:v1",
    description="List the caller's pending asks, e.g. after a disconnect.",
    params={
        "result_fields": [
            "request_id",
            "interrupt_type",
            "session_id",
            "task_id",
            "context_id",
            "details",
            "created_at",
            "expires_at",
        ]
    },
)


class PermissionReplyParams(Params):
    request_id: str = Field(min_length=1)
    reply: Literal["once", "always", "reject"]
    message: str | None = None


class QuestionReplyParams(Params):
    request_id: str = Field(min_length=1)
    answers: list[list[str]] = Field(min_length=1)


class QuestionRejectParams(Params):
    request_id: str = Field(min_length=1)


def interrupt_methods(service: InterruptService) -> list[Method]:
    async def resolve(ctx: CallContext, request_id: str, answer: Answer) -> dict[str, Any]:
        ask = await service.resolve(ctx.principal, request_id, answer)
        return {"ok": True, "request_id": ask.request_id, "task_id": ask.task_id}

    async def permission_reply(params: PermissionReplyParams, ctx: CallContext) -> Any:
        answer = permission_answer(params.reply, params.message)
        return await resolve(ctx, params.request_id, answer)

    async def question_reply(params: QuestionReplyParams, ctx: CallContext) -> Any:
        return await resolve(ctx, params.request_id, question_answer(params.answers))

    async def question_reject(params: QuestionRejectParams, ctx: CallContext) -> Any:
        return await resolve(ctx, params.request_id, Answer(QUESTION, reject=True))

    async def list_permissions(_: NoParams, ctx: CallContext) -> Any:
        return {
            "items": [ask_item(a) for a in await service.list_pending(ctx.principal, PERMISSION)]
        }

    async def list_questions(_: NoParams, ctx: CallContext) -> Any:
        return {"items": [ask_item(a) for a in await service.list_pending(ctx.principal, QUESTION)]}

    return [
        Method(
            "a2a.interrupt.permission.reply",
            "Answer a permission ask: `request_id`, `reply` (once, always, reject), "
            "optional `message`.",
            PermissionReplyParams,
            permission_reply,
            INTERACTIVE_INTERRUPT,
        ),
        Method(
            "a2a.interrupt.question.reply",
            "Answer a question ask: `request_id`, `answers` (one list of labels per question).",
            QuestionReplyParams,
            question_reply,
            INTERACTIVE_INTERRUPT,
        ),
        Method(
            "a2a.interrupt.question.reject",
            "Dismiss a question ask: `request_id`.",
            QuestionRejectParams,
            question_reject,
            INTERACTIVE_INTERRUPT,
        ),
        Method(
            "opencode.permissions.list",
            "The caller's pending permission asks.",
            NoParams,
            list_permissions,
            INTERRUPT_RECOVERY,
        ),
        Method(
            "opencode.questions.list",
            "The caller's pending question asks.",
            NoParams,
            list_questions,
            INTERRUPT_RECOVERY,
        ),
    ]
