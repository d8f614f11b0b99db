"""The registry of this deployment: every extension method, built from the services."""

from __future__ import annotations

from ..execution.interrupts import InterruptService
from .interrupts import interrupt_methods
from .registry import Registry
from .sessions import SessionMethods


def build_registry(*, interrupts: InterruptService, sessions: SessionMethods) -> Registry:
    return Registry([*sessions.methods(), *interrupt_methods(interrupts)])


def docs_table() -> str:
    """The guide's method table (`make docs` writes it into docs/guide.md)."""
    from .sessions import SessionMethods as _Sessions

    sessions = _Sessions(None, None, None, shell_enabled=False)  # type: ignore[arg-type]
    return build_registry(interrupts=None, sessions=sessions).docs_table()  # type: ignore[arg-type]


def write_docs_table(guide: str = "docs/guide.md") -> None:
    from pathlib import Path

    path = Path(guide)
    text = path.read_text()
    head, rest = text.split("<!-- methods:start -->", 1)
    _, tail = rest.split("<!-- methods:end -->", 1)
    path.write_text(f"{head}<!-- methods:start -->\n{docs_table()}\n<!-- methods:end -->{tail}")


if __name__ == "__main__":
    write_docs_table()
