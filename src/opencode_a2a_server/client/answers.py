"""Turn what a person types at an ask prompt into the in-band answer the server expects.

Permission asks take `{"reply": "once"|"always"|"reject", "message"?}`; question asks take
`{"answers": [[label, ...], ...]}` (one list per question) or `{"reject": true}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PERMISSION_PROMPT = "[o]nce / [a]lways / [r]eject (optional message): "
REPLIES = {"o": "once", "once": "once", "a": "always", "always": "always"}
REPLIES.update({"r": "reject", "reject": "reject"})
REJECT_WORDS = frozenset({"r", "reject"})
_NUMBERS = re.compile(r"^\d+(\s*[, ]\s*\d+)*$")


class AnswerError(ValueError):
    """What was typed does not answer the ask; the message says what to type."""


@dataclass(frozen=True)
class Option:
    label: str
    description: str = ""


@dataclass(frozen=True)
class Question:
    question: str
    header: str
    options: tuple[Option, ...]
    multiple: bool


def parse_permission_answer(typed: str) -> dict[str, str]:
    """`o`, `a` or `r` (or the words), optionally followed by a message for the agent."""
    text = typed.strip()
    if not text:
        raise AnswerError("type o (once), a (always) or r (reject)")
    word, _, message = text.partition(" ")
    reply = REPLIES.get(word.lower())
    if reply is None:
        raise AnswerError(f"{word!r} is not an answer: type o (once), a (always) or r (reject)")
    answer = {"reply": reply}
    if message.strip():
        answer["message"] = message.strip()
    return answer


def questions_of(details: dict[str, Any]) -> list[Question]:
    """The questions of a question ask's `details`, tolerating missing fields."""
    found = []
    for raw in details.get("questions") or []:
        if not isinstance(raw, dict):
            continue
        options = tuple(
            Option(str(o.get("label", "")), str(o.get("description", "") or ""))
            for o in raw.get("options") or []
            if isinstance(o, dict) and o.get("label")
        )
        found.append(
            Question(
                question=str(raw.get("question", "")),
                header=str(raw.get("header", "") or ""),
                options=options,
                multiple=bool(raw.get("multiple", False)),
            )
        )
    return found


def parse_question_answer(typed: str, question: Question) -> list[str] | None:
    """The labels chosen for one question, or None when the person rejects the ask.

    Accepts an option label (any case), option numbers (`2`, or `1,3` when several may be
    chosen), free text when the question has no options, or `r`/`reject`.
    """
    text = typed.strip()
    if not text:
        raise AnswerError(_question_hint(question))
    by_label = {o.label.lower(): o.label for o in question.options}
    if text.lower() in by_label:
        return [by_label[text.lower()]]
    if text.lower() in REJECT_WORDS:
        return None
    if not question.options:
        return [text]
    if _NUMBERS.match(text):
        return _pick_numbers(text, question)
    raise AnswerError(f"{text!r} is not one of the options: {_question_hint(question)}")


def _pick_numbers(text: str, question: Question) -> list[str]:
    numbers = [int(n) for n in re.split(r"[\s,]+", text) if n]
    if len(numbers) > 1 and not question.multiple:
        raise AnswerError("pick one option only")
    labels = []
    for number in numbers:
        if not 1 <= number <= len(question.options):
            raise AnswerError(f"{number} is not an option: pick 1 to {len(question.options)}")
        label = question.options[number - 1].label
        if label not in labels:
            labels.append(label)
    return labels


def _question_hint(question: Question) -> str:
    if not question.options:
        return "type your answer, or r to reject"
    several = " (several: 1,3)" if question.multiple else ""
    return f"pick a number 1-{len(question.options)}{several}, type a label, or r to reject"


def question_prompt(question: Question) -> str:
    """The prompt line shown under a question's options."""
    return _question_hint(question)[0].upper() + _question_hint(question)[1:] + ": "
