"""What a person types at an ask prompt, turned into the in-band answer."""

from __future__ import annotations

import pytest

from opencode_a2a_server.client.answers import (
    AnswerError,
    Option,
    Question,
    parse_permission_answer,
    parse_question_answer,
    question_prompt,
    questions_of,
)

COLORS = Question("Which color?", "Color", (Option("Red", "warm"), Option("Blue")), False)
TOPPINGS = Question("Toppings?", "", (Option("Ham"), Option("Olives"), Option("Corn")), True)


@pytest.mark.parametrize(
    ("typed", "answer"),
    [
        ("o", {"reply": "once"}),
        ("  once ", {"reply": "once"}),
        ("A", {"reply": "always"}),
        ("always", {"reply": "always"}),
        ("r", {"reply": "reject"}),
        ("r not now, please", {"reply": "reject", "message": "not now, please"}),
        (
            "reject   use git status instead ",
            {"reply": "reject", "message": "use git status instead"},
        ),
    ],
)
def test_permission_answers(typed: str, answer: dict[str, str]) -> None:
    assert parse_permission_answer(typed) == answer


@pytest.mark.parametrize("typed", ["", "   ", "yes", "x", "maybe later"])
def test_permission_non_answers_say_what_to_type(typed: str) -> None:
    with pytest.raises(AnswerError, match=r"o \(once\), a \(always\) or r \(reject\)"):
        parse_permission_answer(typed)


@pytest.mark.parametrize(
    ("typed", "labels"),
    [("2", ["Blue"]), (" 1 ", ["Red"]), ("blue", ["Blue"]), ("RED", ["Red"])],
)
def test_question_picks(typed: str, labels: list[str]) -> None:
    assert parse_question_answer(typed, COLORS) == labels


@pytest.mark.parametrize("typed", ["r", "reject", "R"])
def test_question_reject(typed: str) -> None:
    assert parse_question_answer(typed, COLORS) is None


def test_a_label_wins_over_the_reject_shortcut() -> None:
    question = Question("Pick", "", (Option("R"), Option("S")), False)
    assert parse_question_answer("r", question) == ["R"]


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("3", "3 is not an option: pick 1 to 2"),
        ("0", "0 is not an option"),
        ("1,2", "pick one option only"),
        ("green", "'green' is not one of the options"),
        ("", "pick a number 1-2, type a label, or r to reject"),
    ],
)
def test_question_non_answers(typed: str, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_question_answer(typed, COLORS)


def test_multiple_choice_takes_several_numbers() -> None:
    assert parse_question_answer("1,3", TOPPINGS) == ["Ham", "Corn"]
    assert parse_question_answer("3 1 3", TOPPINGS) == ["Corn", "Ham"]
    assert question_prompt(TOPPINGS) == (
        "Pick a number 1-3 (several: 1,3), type a label, or r to reject: "
    )


def test_free_text_when_there_are_no_options() -> None:
    question = Question("Your name?", "", (), False)
    assert parse_question_answer("Ada", question) == ["Ada"]
    assert question_prompt(question) == "Type your answer, or r to reject: "


def test_questions_of_tolerates_missing_fields() -> None:
    details = {
        "questions": [
            {"question": "Which color?", "options": [{"label": "Red"}, {"description": "x"}]},
            "junk",
        ]
    }
    assert questions_of(details) == [Question("Which color?", "", (Option("Red"),), False)]
    assert questions_of({}) == []
