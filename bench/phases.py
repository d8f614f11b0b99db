"""Where a turn's time goes, seen from OpenCode's side, direct vs through the adapter.

    uv run python -m bench.phases [--turns 30] [--words 0]

Starts the same stack as bench.run and keeps one extra `/event` subscription that
watches every session (the adapter's too) and notes when OpenCode announced each step
of a turn: the session created, the user message stored, the assistant message
started, the first and last text delta, the session idle. Turns alternate between the
direct client and the adapter (A2A 1.0 JSON-RPC streaming); the medians of each step,
in ms from the client's first byte, show which step the adapter lengthens. Each prompt
carries a marker (`#jsonrpc7`) so the watcher can tell the turns apart by title; a
trivial answer then echoes the marker, so "text complete" is shown for long answers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from opencode_a2a_server.testing.stack import start_opencode

from .clients import A2AClient, DirectClient, trivial_prompt, words_prompt
from .procs import ModelProcess, adapter_env, start_adapter

MODEL = {"providerID": "fake", "modelID": "fake-1"}
STEPS = ("session.created", "msg.user", "msg.assistant", "delta", "last_delta", "idle")
WARM_UP = 3


class Watcher(DirectClient):
    """The direct client, whose event subscription also notes every session's steps."""

    watch_all = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.titles: dict[str, str] = {}
        self.seen: dict[str, dict[str, float]] = {}

    def _dispatch(self, raw: dict[str, Any]) -> None:
        now = time.perf_counter()
        event = raw.get("payload", raw)
        props = event.get("properties") or {}
        kind = event.get("type")
        session = props.get("sessionID")
        if kind == "session.created":
            self.titles[session] = str((props.get("info") or {}).get("title"))
        title = self.titles.get(session)
        if title is not None:
            steps = self.seen.setdefault(title, {})
            if kind == "message.updated":
                kind = f"msg.{(props.get('info') or {}).get('role')}"
            elif kind == "message.part.delta":
                steps["last_delta"] = now
                kind = "delta"
            elif kind == "session.idle":
                steps["idle"] = now
            steps.setdefault(str(kind), now)
        super()._dispatch(raw)


async def run(turns: int, words: int) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="opencode-a2a-phases-"))
    workspace = tmp / "workspace"
    workspace.mkdir()
    model = ModelProcess(tmp / "model.log").start()
    opencode = await start_opencode(tmp / "opencode", workspace, model.url)
    adapter = None
    env = adapter_env(
        opencode,
        workspace=workspace,
        db=tmp / "adapter.db",
        token="phases-token-0123456789abcdef",
    )
    watcher = Watcher(
        opencode.base_url, (opencode.username, opencode.password), str(workspace), MODEL
    )
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "jsonrpc": []}
    try:
        adapter = await asyncio.to_thread(start_adapter, env, tmp)
        a2a = A2AClient(adapter.url, adapter.token, "jsonrpc")
        await watcher.start()
        for i in range(turns + WARM_UP):
            for name in ("direct", "jsonrpc") if i % 2 else ("jsonrpc", "direct"):
                prompt, expected = words_prompt(words) if words else trivial_prompt(i)
                prompt = f"{prompt} #{name}{i}"
                t0 = time.perf_counter()
                client = watcher if name == "direct" else a2a
                result = await client.turn(prompt, expected)
                steps = watcher.seen.pop(prompt[:80], {})
                if i >= WARM_UP and steps:
                    row = {k: (v - t0) * 1000 for k, v in steps.items()}
                    if result.text_s is not None:
                        row["client: text complete"] = result.text_s * 1000
                    row["client: turn over"] = (result.end_s or 0) * 1000
                    rows[name].append(row)
                await asyncio.sleep(0.3)
        await a2a.aclose()
    finally:
        await watcher.aclose()
        if adapter is not None:
            adapter.stop()
        await opencode.stop()
        model.stop()
    keys = [*STEPS, "client: text complete", "client: turn over"]
    return {
        name: {
            k: round(statistics.median(r[k] for r in found if k in r), 1)
            for k in keys
            if any(k in r for r in found)
        }
        for name, found in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.phases")
    parser.add_argument("--turns", type=int, default=30, help="turns per path")
    parser.add_argument("--words", type=int, default=0, help="0: trivial turns; N: N words")
    args = parser.parse_args()
    table = asyncio.run(run(args.turns, args.words))
    print(f"{'ms from the first byte (median)':32} {'direct':>8} {'adapter':>8} {'+':>6}")
    for step in table["direct"]:
        direct, ours = table["direct"][step], table["jsonrpc"].get(step)
        extra = "" if ours is None else f"{ours - direct:+6.1f}"
        print(f"{step:32} {direct:8.1f} {ours if ours is not None else '-':>8} {extra}")


if __name__ == "__main__":
    main()
