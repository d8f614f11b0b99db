"""Static checks of deploy/: the env example, the systemd unit, the Dockerfile and compose."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def readme_variables() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^\| `([A-Z0-9_]+)` \|", text, flags=re.M)


def example_variables() -> list[str]:
    text = (DEPLOY / "env.example").read_text()
    return re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, flags=re.M)


def makefile_opencode_version() -> str:
    found = re.search(r"^OPENCODE_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found is not None
    return found.group(1)


def test_env_example_lists_exactly_the_readme_variables() -> None:
    listed = example_variables()
    assert len(listed) == len(set(listed)), "a variable is listed twice"
    assert set(listed) == set(readme_variables()), (
        "deploy/env.example is out of step with README's table: "
        "run python3 deploy/update-env-example.py"
    )


def test_env_example_sets_nothing_by_default() -> None:
    """Every line is a comment or blank: the file documents defaults, it changes none."""
    for line in (DEPLOY / "env.example").read_text().splitlines():
        assert not line.strip() or line.startswith("#"), line


def test_systemd_unit_runs_serve_from_the_venv_with_the_env_file() -> None:
    unit = (DEPLOY / "opencode-a2a-server.service").read_text()
    lines = set(unit.splitlines())
    assert "EnvironmentFile=/etc/opencode-a2a-server/env" in lines
    assert "ExecStart=/opt/opencode-a2a-server/.venv/bin/opencode-a2a-server serve" in lines
    for setting in (
        "User=opencode-a2a",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ):
        assert setting in lines, setting
    assert any(line.startswith("WorkingDirectory=/") for line in lines)
    writable = next(line for line in lines if line.startswith("ReadWritePaths="))
    workspace = next(
        line for line in lines if line.startswith("Environment=OPENCODE_WORKSPACE_ROOT=")
    )
    assert workspace.split("=", 2)[2] in writable.split("=", 1)[1].split()
    # MemoryDenyWriteExecute would break Node's JIT.
    assert not any(line.startswith("MemoryDenyWriteExecute=") for line in lines)


def test_opencode_version_is_pinned_like_the_makefile() -> None:
    version = makefile_opencode_version()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"ARG OPENCODE_VERSION={version}" in dockerfile
    assert f"opencode-ai@{version}" in (DEPLOY / "opencode-a2a-server.service").read_text()


def test_dockerfile_shape() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "FROM node:20-bookworm-slim AS node" in dockerfile
    assert re.search(r"^FROM python:3\.11-slim\S* AS runtime$", dockerfile, re.M)
    assert "COPY --from=node /usr/local/bin/node /usr/local/bin/node" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
    assert re.search(r"^USER (?!root)\S+$", dockerfile, re.M)
    assert "EXPOSE 8000" in dockerfile
    assert "A2A_HOST=0.0.0.0" in dockerfile
    # Everything the Dockerfile copies from the context gets past its ignore file.
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for source in ("pyproject.toml", "uv.lock", "README.md", "src/"):
        assert f"!{source}" in ignored


def test_compose_has_a_volume_for_the_workspace_and_the_data() -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "dockerfile: deploy/Dockerfile" in compose
    assert "- workspace:/workspace" in compose
    assert "- data:/srv/opencode-a2a-server/.data" in compose
    assert "# postgres:" in compose  # the optional database stays commented out
