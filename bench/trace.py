"""Where the adapter spends its time: a timeline of its turns, and a CPU profile.

    uv run python -m bench.trace [--turns 20] [--words 2000] [--profile]

Starts the same stack as bench.run, but the adapter runs through bench._traced_adapter
(the real CLI with timing probes, optionally under cProfile). It runs trivial turns
and long answers, direct and through the adapter (JSON-RPC), and prints the median
time of each phase of an adapter turn next to the direct client's, then (with
--profile) the functions that used the most CPU in the adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from opencode_a2a_server.testing.stack import free_port, start_opencode

from .clients import A2AClient, DirectClient, trivial_prompt, words_prompt
from .procs import REPO_ROOT, ModelProcess, adapter_env, cpu_seconds

MODEL = {"providerID": "fake", "modelID": "fake-1"}


class TracedAdapter:
    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.env = {**os.environ, **env, "A2A_PORT": str(self.port)}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TracedAdapter:
        with (self.root / "adapter.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench._traced_adapter"],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        headers = {"Authorization": f"Bearer {self.env['A2A_BEARER_TOKEN']}"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", headers=headers, timeout=2).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("traced adapter did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def load_trace(path: Path) -> list[tuple[float, float, str, str]]:
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def phases(trace: list[Any], t0: float, t1: float) -> dict[str, float]:
    """Offsets (ms from the client's t0) and durations (ms) of one adapter turn."""
    inside = [e for e in trace if t0 <= e[0] <= t1]
    out: dict[str, float] = {}

    def first(name: str, detail: str | None = None) -> Any:
        for e in inside:
            if e[2] == name and (detail is None or e[3] == detail):
                return e
        return None

    def total(name: str, detail: str | None = None) -> float:
        return sum(e[1] for e in inside if e[2] == name and (detail is None or e[3] == detail))

    def at(key: str, e: Any, end: bool = False) -> None:
        if e is not None:
            out[key] = round(((e[0] + (e[1] if end else 0)) - t0) * 1000, 1)

    at("request arrives", first("asgi.request_start"))
    at("plan done", first("executor.plan"), end=True)
    at("task opened (submitted+working saved)", first("executor.open_task"), end=True)
    out["  bindings.get ms"] = round(total("bindings.get") * 1000, 1)
    out["  POST /session ms"] = round(total("upstream", "POST /session") * 1000, 1)
    out["  bindings.bind ms"] = round(total("bindings.bind") * 1000, 1)
    at("session ready", first("executor.turn_request"), end=True)
    at("prompt_async done", first("turn.prompt"), end=True)
    deltas = [e for e in inside if e[2] == "hub.dispatch" and e[3] == "message.part.delta"]
    if deltas:
        at("first delta from OpenCode", deltas[0])
        at("last delta from OpenCode", deltas[-1])
    at("session.idle from OpenCode", first("hub.dispatch", "session.idle"))
    out["  GET messages (reconcile) ms"] = round(total("turn.stored_turn") * 1000, 1)
    at("final snapshot published", first("stream.text_snapshot"), end=True)
    at("completed status published", first("stream.status", "3"), end=True)
    at("completed status written to socket", first("asgi.send_completed"))
    out["  task DB writes ms"] = round(total("db.task_save") * 1000, 1)
    out["  task DB writes n"] = sum(1 for e in inside if e[2] == "db.task_save")
    out["  store.save calls"] = sum(1 for e in inside if e[2] == "store.save")
    out["  store.save ms"] = round(total("store.save") * 1000, 1)
    out["  text_chunk ms"] = round(total("stream.text_chunk") * 1000, 1)
    out["  hub.dispatch ms"] = round(total("hub.dispatch") * 1000, 1)
    out["  hub events"] = sum(1 for e in inside if e[2] == "hub.dispatch")
    return out


class TimedDirect(DirectClient):
    """The direct client, with the time of its two requests."""

    async def timed_turn(self, prompt: str, expected: str) -> dict[str, float]:
        t0 = time.perf_counter()
        session_id = (await self._post("/session", {"title": prompt[:80]}))["id"]
        t_session = time.perf_counter()
        from .clients import _DirectTurn, _Tracker

        turn = self._turns[session_id] = _DirectTurn(_Tracker(expected, t0))
        body = {"parts": [{"type": "text", "text": prompt}], "model": self.model}
        await self._post(f"/session/{session_id}/prompt_async", body)
        t_prompt = time.perf_counter()
        await turn.done.wait()
        t_end = time.perf_counter()
        self._turns.pop(session_id, None)
        text_s = turn.tracker.result.text_s or 0
        return {
            "POST /session done": (t_session - t0) * 1000,
            "prompt_async done": (t_prompt - t0) * 1000,
            "text complete": text_s * 1000,
            "session.idle": (t_end - t0) * 1000,
        }


def median_table(rows: list[dict[str, float]]) -> dict[str, float]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return {
        k: round(statistics.median([r[k] for r in rows if k in r]), 1)
        for k in keys
        if any(k in r for r in rows)
    }


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="opencode-a2a-trace-"))
    workspace = tmp / "workspace"
    workspace.mkdir()
    model = ModelProcess(tmp / "model.log").start()
    try:
        opencode = await start_opencode(tmp / "opencode", workspace, model.url)
    except BaseException:
        model.stop()
        raise
    try:
        await _run(args, tmp, workspace, model, opencode)
    finally:
        await opencode.stop()
        model.stop()


async def _run(
    args: argparse.Namespace, tmp: Path, workspace: Path, model: Any, opencode: Any
) -> None:
    env = adapter_env(
        opencode,
        workspace=workspace,
        db=tmp / "adapter.db",
        token="trace-token-0123456789",
    )
    env["BENCH_TRACE_FILE"] = str(tmp / "trace.jsonl")
    if args.profile:
        env["BENCH_PROFILE_FILE"] = str(tmp / "adapter.prof")
    adapter = TracedAdapter(env, tmp)
    try:
        adapter.start()
    except BaseException:
        adapter.stop()
        raise
    direct = TimedDirect(
        opencode.base_url, (opencode.username, opencode.password), str(workspace), MODEL
    )
    await direct.start()
    a2a = A2AClient(adapter.url, env["A2A_BEARER_TOKEN"], "jsonrpc", max_connections=100)
    windows: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    direct_rows: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    client_ends: dict[str, list[float]] = {"a": [], "b": []}
    try:
        for i in range(3):
            await direct.turn(*trivial_prompt(900 + i))
            await a2a.turn(*trivial_prompt(900 + i))
        assert adapter.proc is not None
        cpu0 = cpu_seconds(adapter.proc.pid)
        cases = [("a", trivial_prompt(i)) for i in range(args.turns)]
        cases += [("b", words_prompt(args.words)) for _ in range(args.long_reps)]
        for case, (prompt, expected) in cases:
            direct_rows[case].append(await direct.timed_turn(prompt, expected))
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            result = await a2a.turn(prompt, expected)
            t1 = time.monotonic()
            windows[case].append((t0, t1))
            client_ends[case].append(result.end_s or 0)
            if result.text_s is not None:
                client_ends.setdefault(case + "_text", []).append(result.text_s)
            await asyncio.sleep(0.1)
        if args.concurrency:
            prompt, expected = words_prompt(args.batch_words)
            t0 = time.monotonic()
            await asyncio.gather(*(a2a.turn(prompt, expected) for _ in range(args.concurrency)))
            print(f"c: {args.concurrency} concurrent turns took {time.monotonic() - t0:.2f} s")
        cpu = cpu_seconds(adapter.proc.pid) - cpu0
        print(f"adapter CPU seconds over the traced turns: {cpu:.2f}")
    finally:
        await a2a.aclose()
        await direct.aclose()
        adapter.stop()
    trace = load_trace(tmp / "trace.jsonl")
    for case, title in (("a", "trivial turn"), ("b", f"{args.words}-word answer")):
        rows = [phases(trace, t0, t1) for t0, t1 in windows[case]]
        print(f"\n== {title}: adapter (JSON-RPC) phases, median of {len(rows)}, ms from t0")
        for key, value in median_table(rows).items():
            print(f"  {key:45} {value}")
        ends = client_ends[case]
        texts = client_ends.get(case + "_text", [])
        print(f"  {'client: text complete':45} {statistics.median(texts) * 1000:.1f}")
        print(f"  {'client: final status received':45} {statistics.median(ends) * 1000:.1f}")
        print(f"== {title}: direct, median of {len(direct_rows[case])}, ms from t0")
        for key, value in median_table(direct_rows[case]).items():
            print(f"  {key:45} {value}")
    if args.profile:
        print("\n== adapter CPU profile (top by own time)")
        stats = pstats.Stats(str(tmp / "adapter.prof"))
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--long-reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=0)
    parser.add_argument("--batch-words", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
