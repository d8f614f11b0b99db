#!/usr/bin/env python3
"""Regenerate deploy/env.example from README's "Configuration" table.

Run it after adding a row to the table: python3 deploy/update-env-example.py
tests/unit/test_deploy_files.py checks that both list the same variables.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (.*?) \| (.*?) \|$", re.M)
HEADER = """\
# opencode-a2a-server settings: one VARIABLE=value per line, for a systemd EnvironmentFile
# (/etc/opencode-a2a-server/env), `docker run --env-file` or `env_file:` in compose.
# Every variable the service reads is listed with its default (README's "Configuration"
# table is the reference; deploy/update-env-example.py regenerates this file from it);
# uncomment a line to change it. Check the result with
#   opencode-a2a-server doctor
#
# The systemd unit beside this file already sets OPENCODE_WORKSPACE_ROOT,
# A2A_DATABASE_URL, OPENCODE_DATA_DIR and OPENCODE_BIN for its layout, and the Dockerfile
# sets them for the container; values in this file override those.
#
# This file holds secrets; keep it readable by root and the service group only:
#   install -m 0640 -o root -g opencode-a2a deploy/env.example /etc/opencode-a2a-server/env
"""
SECTIONS = {
    "A2A_": "# == A2A side: what clients see " + "=" * 56,
    "OPENCODE_": "# == OpenCode side " + "=" * 69,
}


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 86, initial_indent="# ", subsequent_indent="# ")


def _entry(name: str, default: str, meaning: str) -> list[str]:
    text = meaning.replace("`", "")
    literal = re.fullmatch(r"`([^`]*)`", default.strip())
    if name == "A2A_BEARER_TOKEN":
        lines = _comment(f"{text} Required; make one with:")
        lines.append("#   python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    elif literal and not re.search(r"[A-Z0-9]{3,}_|<", literal.group(1)):
        return [*_comment(text), f"#{name}={literal.group(1)}"]
    else:
        lines = _comment(f"{text} Default: {default.strip().replace('`', '')}")
    return [*lines, f"#{name}="]


def render(readme: str) -> str:
    out = [HEADER]
    started: set[str] = set()
    for name, default, meaning in ROW.findall(readme):
        section = next((p for p in SECTIONS if name.startswith(p)), None)
        if section and section not in started:
            started.add(section)
            out += [SECTIONS[section], ""]
        out += [*_entry(name, default, meaning), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    target = ROOT / "deploy" / "env.example"
    target.write_text(render((ROOT / "README.md").read_text()))
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
