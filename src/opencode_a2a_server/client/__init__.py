"""A2A client tooling: `opencode-a2a-server call` (render a task's stream, answer asks)."""

from .answers import AnswerError, parse_permission_answer, parse_question_answer
from .render import Renderer

__all__ = ["AnswerError", "Renderer", "parse_permission_answer", "parse_question_answer"]
