"""The built wheel installs into a fresh virtualenv and its CLI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> list[str]:
    found = shutil.which("uv") or str(ROOT / ".tools/uv/bin/uv")
    return [found]


def test_wheel_installs_and_serve_help_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [*_uv(), "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheels = list(dist.glob("opencode_a2a_server-*.whl"))
    assert len(wheels) == 1
    venv = tmp_path / "venv"
    subprocess.run(
        [*_uv(), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True
    )
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run(
        [*_uv(), "pip", "install", str(wheels[0])], check=True, capture_output=True, env=env
    )
    cli = venv / "bin" / "opencode-a2a-server"
    result = subprocess.run(
        [str(cli), "serve", "--help"], capture_output=True, text=True, check=True
    )
    assert "A2A_BEARER_TOKEN" in result.stdout
    assert "OPENCODE_BASE_URL" in result.stdout
    # The scripted model ships with the package (tests, demo and benchmarks use it).
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import opencode_a2a_server.testing.scripted_model"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
