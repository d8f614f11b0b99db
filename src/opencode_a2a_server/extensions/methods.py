"""The registry of this deployment: every extension method, built from the services."""

from __future__ import annotations

from ..execution.directories import DirectoryPolicy
from ..execution.interrupts import InterruptService
from ..upstream.client import OpenCodeClient
from .interrupts import interrupt_methods
from .providers import provider_methods
from .registry import Registry
from .sessions import SessionMethods
from .workspace import workspace_methods


def build_registry(
    *,
    interrupts: InterruptService,
    sessions: SessionMethods,
    client: OpenCodeClient,
    directories: DirectoryPolicy,
    workspace_mutations: bool = False,
) -> Registry:
    return Registry(
        [
            *sessions.methods(),
            *interrupt_methods(interrupts),
            *provider_methods(client, directories),
            *workspace_methods(client, directories, mutations_enabled=workspace_mutations),
        ]
    )


def docs_table() -> str:
    """The guide's method table (`make docs` writes it into docs/guide.md)."""
    from .sessions import SessionMethods as _Sessions

    sessions = _Sessions(None, None, None, shell_enabled=False)  # type: ignore[arg-type]
    return build_registry(
        interrupts=None,  # type: ignore[arg-type]
        sessions=sessions,
        client=None,  # type: ignore[arg-type]
        directories=None,  # type: ignore[arg-type]
    ).docs_table()


def write_docs_table(guide: str = "docs/guide.md") -> None:
    from pathlib import Path

    path = Path(guide)
    text = path.read_text()
    head, rest = text.split("<!-- methods:start -->", 1)
    _, tail = rest.split("<!-- methods:end -->", 1)
    path.write_text(f"{head}<!-- methods:start -->\n{docs_table()}\n<!-- methods:end -->{tail}")


if __name__ == "__main__":
    write_docs_table()
