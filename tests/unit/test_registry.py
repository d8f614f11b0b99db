"""The registry, the Agent Card and docs/guide.md list the same extension methods."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from opencode_a2a_server.card import build_agent_card
from opencode_a2a_server.config import Settings
from opencode_a2a_server.extensions.methods import build_registry
from opencode_a2a_server.extensions.registry import A2A_METHODS
from opencode_a2a_server.extensions.sessions import SessionMethods

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


def registry(shell: bool = False):
    sessions = SessionMethods(None, None, None, shell_enabled=shell)  # type: ignore[arg-type]
    return build_registry(
        interrupts=None,  # type: ignore[arg-type]
        sessions=sessions,
        client=None,  # type: ignore[arg-type]
        directories=None,  # type: ignore[arg-type]
    )


def test_guide_method_table_is_the_registry_table() -> None:
    text = GUIDE.read_text()
    block = text.split("<!-- methods:start -->", 1)[1].split("<!-- methods:end -->", 1)[0]
    assert block.strip() == registry().docs_table(), "run `make docs`"


def test_card_declares_every_registry_method() -> None:
    reg = registry()
    card = build_agent_card(Settings(a2a_bearer_token=SecretStr("x")), reg)
    declared = []
    for extension in card.capabilities.extensions:
        params = dict(extension.params)
        declared.extend(params.get("methods", []))
    assert sorted(declared) == sorted(m.name for m in reg.methods if m.enabled)


def test_supported_methods_are_a2a_plus_enabled_extensions() -> None:
    reg = registry()
    assert reg.supported_methods() == [*A2A_METHODS, *(m.name for m in reg.methods if m.enabled)]
    names = re.findall(r"^\| `([a-z0-9._]+)` \|", GUIDE.read_text(), flags=re.M)
    assert set(m.name for m in reg.methods) <= set(names)
