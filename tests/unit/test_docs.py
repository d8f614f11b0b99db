"""README's variable table and the settings model list the same variables."""

from __future__ import annotations

import re
from pathlib import Path

from opencode_a2a_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", text, flags=re.M))


def test_readme_table_matches_settings() -> None:
    settings_vars = {name.upper() for name in Settings.model_fields}
    assert readme_variables() == settings_vars


def test_quick_start_has_exactly_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make serve", "make test"]
