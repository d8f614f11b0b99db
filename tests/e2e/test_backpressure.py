"""A client that stops reading its stream neither holds up its turn, nor other clients,
nor makes the adapter's memory grow with what it has not read."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState

from opencode_a2a_server.testing.stack import AdapterProcess, free_port
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .a2a import A2AHarness, artifact_text
from .conftest import adapter_env

pytestmark = pytest.mark.e2e

LONG_WORDS = 5000  # one event each: more than a subscriber queue holds (1,024 events)


def rss_mb(process: AdapterProcess) -> float:
    assert process.proc is not None
    status = Path(f"/proc/{process.proc.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def first_task_id(lines: object) -> str:
    async for line in lines:  # type: ignore[attr-defined]
        if line.startswith("data:"):
            event = json.loads(line[5:])
            result = event.get("result", event)
            for key in ("task", "statusUpdate", "artifactUpdate"):
                if key in result:
                    found = result[key]
                    return str(found.get("id") or found.get("taskId"))
    raise AssertionError("the stream ended before its first event")


async def test_a_stalled_reader_holds_up_nothing_and_memory_stays_bounded(
    tmp_path: Path, workspace: Path, opencode: ManagedOpenCode
) -> None:
    env = adapter_env(opencode, workspace, tmp_path / "a.db")
    env["A2A_PORT"] = str(free_port())
    env["A2A_LOG_PAYLOADS"] = "false"
    env["A2A_LOG_LEVEL"] = "INFO"
    adapter = AdapterProcess(env, log_path=tmp_path / "adapter.log", cwd=tmp_path).start()
    harness = A2AHarness(adapter.url, adapter.token)
    headers = {"Authorization": f"Bearer {adapter.token}", "A2A-Version": "1.0"}
    body = {
        "message": {
            "messageId": "m-stalled",
            "role": "ROLE_USER",
            "parts": [{"text": f"[[slow:{LONG_WORDS}:0.002]]"}],
        }
    }
    try:
        # Warm up, so start-up allocations are not counted as growth.
        for i in range(3):
            await harness.send(f"warm {i}", streaming=False)
        baseline = rss_mb(adapter)

        async with (
            httpx.AsyncClient(base_url=adapter.url, headers=headers, timeout=120) as http,
            http.stream("POST", "/message:stream", json=body) as stalled,
        ):
            assert stalled.status_code == 200
            lines = stalled.aiter_lines()
            task_id = await first_task_id(lines)
            # From here on the client reads nothing while the long answer streams.

            # Other clients are served meanwhile, start to end.
            for i in range(3):
                started = time.monotonic()
                (reply,) = await harness.send(f"meanwhile {i}", streaming=False)
                task = reply.task
                assert task.status.state == TaskState.TASK_STATE_COMPLETED
                assert artifact_text(task) == f"Hello from fake LLM. You said: meanwhile {i}"
                assert time.monotonic() - started < 30

            # The stalled client's turn runs to its end without it.
            peak = baseline
            deadline = time.monotonic() + 180
            while True:
                peak = max(peak, rss_mb(adapter))
                task = await harness.get_task(task_id)
                if task.status.state == TaskState.TASK_STATE_COMPLETED:
                    break
                assert task.status.state == TaskState.TASK_STATE_WORKING
                assert time.monotonic() < deadline, "the turn waited for its reader"
                await asyncio.sleep(0.2)
            expected = " ".join(f"word{i}" for i in range(LONG_WORDS))
            assert artifact_text(task) == expected
            assert peak - baseline < 64, f"RSS grew {peak - baseline:.0f} MB"

            # Reading again: the stream ends (complete, or cut short for falling too
            # far behind), it does not hang.
            async def drain() -> list[str]:
                return [line async for line in lines if line.startswith("data:")]

            rest = await asyncio.wait_for(drain(), 60)
            assert rest, "the stream still had events for its reader"

        # Whatever the stream delivered, the task holds the whole answer.
        final = await harness.get_task(task_id)
        assert artifact_text(final) == expected
        assert "Traceback" not in adapter.tail(2000)
    finally:
        await harness.aclose()
        adapter.stop()
