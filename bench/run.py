"""Benchmark: OpenCode directly vs through the adapter (and, with --peer, the reference one).

    OPENCODE_BIN=.tools/opencode/node_modules/.bin/opencode \\
        uv run python -m bench.run [--peer] [--quick] [--json PATH]

One run starts the scripted model (its own process), one `opencode serve`, the adapter
(real CLI process) and, with --peer, `opencode-a2a` 1.4.0 from PyPI (in .tools/peer-venv),
all against the same OpenCode, and measures:

  a. a trivial turn on a new context, session creation included (median of --turns);
  b. one --words streamed answer: time until the client holds the complete text,
     and whether the text is exactly the expected one (median of --long-reps);
  c. --concurrency concurrent streaming turns of --batch-words words each: batch time
     (start to last turn over), and how many finished with the complete text;
  d. the adapter's peak RSS and CPU seconds during (c).

Paths are run interleaved (the order rotates every round) after a warm-up of each.
See bench/clients.py for exactly what each client does and how times are taken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opencode_a2a_server import __version__ as adapter_version
from opencode_a2a_server.testing.stack import start_opencode
from opencode_a2a_server.upstream.process import ManagedOpenCode

from .clients import A2AClient, DirectClient, TurnResult, trivial_prompt, words_prompt
from .procs import (
    PEER_EXTENSIONS,
    PEER_VERSION,
    REPO_ROOT,
    ModelProcess,
    PeerProcess,
    ResourceMonitor,
    adapter_env,
    cpu_seconds,
    install_peer,
    peer_env,
    rss_bytes,
    start_adapter,
)

TARGETS = {"a": 1.15, "b": 1.10, "c": 1.25, "d_mb": 200.0}
MODEL = {"providerID": "fake", "modelID": "fake-1"}
LABELS = {
    "direct": "direct",
    "jsonrpc": "adapter jsonrpc",
    "rest": "adapter rest",
    "peer": "peer jsonrpc",
}
ADAPTER_PATHS = ("jsonrpc", "rest")

TurnFn = Callable[[str, str], Awaitable[TurnResult]]


@dataclass
class Path_:
    """One way of running a turn, and the process whose resources (d) are measured."""

    name: str
    turn: TurnFn
    pid: int | None = None
    failed: str = ""
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--peer", action="store_true", help="also measure opencode-a2a 1.4.0")
    parser.add_argument("--turns", type=int, default=40, help="(a) trivial turns per path")
    parser.add_argument("--words", type=int, default=2000, help="(b) words in the long answer")
    parser.add_argument("--long-reps", type=int, default=30, help="(b) repetitions per path")
    parser.add_argument("--concurrency", type=int, default=50, help="(c) concurrent turns")
    parser.add_argument("--batch-words", type=int, default=200, help="(c) words per turn")
    parser.add_argument("--batch-reps", type=int, default=5, help="(c) batches per path")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up turns per path")
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument("--json", type=Path, help="write the raw numbers to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--cases", default="abc", help="which of the cases a, b, c to run")
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        help="what-if patch applied to the adapter (see bench/_traced_adapter.py); repeatable",
    )
    parser.add_argument(
        "--paths", default="direct,jsonrpc,rest", help="adapter paths: direct,jsonrpc,rest"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.words, args.long_reps = 5, 500, 2
        args.concurrency, args.batch_words, args.batch_reps, args.warmup = 10, 50, 1, 1
    return args


# --------------------------------------------------------------------------- machine


def machine_info(opencode_version: str | None) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "opencode": opencode_version,
        "adapter": adapter_version,
        "commit": commit,
    }


def cpu_ticks() -> list[int]:
    """The machine's CPU time counters (/proc/stat: user … steal), in clock ticks."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
        return [int(f) for f in fields]
    except (OSError, IndexError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """Share of the machine's CPU time the hypervisor gave to others (noise indicator)."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return round(delta[7] / total, 4) if total else None


# --------------------------------------------------------------------------- running


async def run_turn(path: Path_, case: str, prompt: str, expected: str) -> TurnResult:
    cpu0 = cpu_seconds(path.pid) if path.pid else None
    result = await path.turn(prompt, expected)
    record = result.as_dict()
    if cpu0 is not None and path.pid:
        record["server_cpu_ms"] = round((cpu_seconds(path.pid) - cpu0) * 1000, 1)
    path.results.setdefault(case, []).append(record)
    if not result.ok:
        log(f"{path.name} {case}: {result.state} {result.error}")
    return result


async def warm_up(paths: list[Path_], turns: int, words: int) -> None:
    """Trivial turns, then long answers: OpenCode's first long answers are slower."""
    for path in paths:
        ok = 0
        for i in range(turns):
            result = await path.turn(*trivial_prompt(1000 + i))
            ok += result.ok
        for count in (200, words, words):
            result = await path.turn(*words_prompt(count))
            ok += result.ok
        if ok == 0:
            path.failed = f"every warm-up turn failed ({result.state}: {result.error})"
            log(f"{path.name}: {path.failed}")


async def settle(pids: list[int], *, quiet: float = 0.1, limit: float = 30.0) -> float:
    """Wait until the servers use less than `quiet` of a core (0.5 s windows); return wait."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(0.5)
        if sum(cpu_seconds(pid) for pid in pids) - before < quiet * 0.5:
            break
    return time.perf_counter() - start


def rotated(paths: list[Path_], round_no: int) -> list[Path_]:
    live = [p for p in paths if not p.failed]
    if not live:
        return live
    k = round_no % len(live)
    order = live[k:] + live[:k]
    return order if round_no % 2 == 0 else order[::-1]


async def case_a(paths: list[Path_], turns: int) -> None:
    for i in range(turns):
        for path in rotated(paths, i):
            await run_turn(path, "a", *trivial_prompt(i))
            await asyncio.sleep(0.1)


async def case_b(paths: list[Path_], words: int, reps: int) -> None:
    prompt, expected = words_prompt(words)
    for i in range(reps):
        for path in rotated(paths, i):
            await run_turn(path, "b", prompt, expected)
            await asyncio.sleep(0.3)


async def case_c(
    paths: list[Path_], concurrency: int, words: int, reps: int, opencode_pid: int | None
) -> None:
    prompt, expected = words_prompt(words)
    servers = sorted({p.pid for p in paths if p.pid} | ({opencode_pid} if opencode_pid else set()))
    # The peer's batches go last: each keeps OpenCode busy for half a minute and leaves
    # it slower, which would tax whichever batch came next. Direct and adapter batches
    # are interleaved among themselves; the peer is measured on the OpenCode they left.
    ours = [p for p in paths if p.name != "peer"]
    peers = [p for p in paths if p.name == "peer"]
    schedule = [path for i in range(reps) for path in rotated(ours, i)]
    schedule += [path for _ in range(reps) for path in peers]
    for path in schedule:
        if path.failed:
            continue
        # Start from quiet servers: the trailing work of the last batch is not counted.
        await asyncio.sleep(1.0)
        await settle(servers)
        monitor = ResourceMonitor(path.pid) if path.pid else None
        upstream = ResourceMonitor(opencode_pid) if opencode_pid else None
        if monitor:
            monitor.__enter__()
        if upstream:
            upstream.__enter__()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(path.turn(prompt, expected) for _ in range(concurrency)))
        batch_s = time.perf_counter() - t0
        if upstream:
            upstream.__exit__()
        if monitor:
            monitor.__exit__()
        complete = sum(r.ok for r in results)
        record = {
            "batch_s": batch_s,
            "complete": complete,
            "concurrency": concurrency,
            "turn_end_p50_s": statistics.median(r.end_s or 0 for r in results),
            "turn_end_max_s": max(r.end_s or 0 for r in results),
            "errors": sorted({r.error for r in results if r.error})[:5],
            "resources": monitor.as_dict() if monitor else None,
            "opencode_resources": upstream.as_dict() if upstream else None,
        }
        path.results.setdefault("c", []).append(record)
        extra = ""
        if monitor:
            extra = f", peak RSS {monitor.peak / 2**20:.0f} MB, CPU {monitor.cpu:.2f} s"
        log(f"{path.name} c: {batch_s:.2f} s, {complete}/{concurrency} complete{extra}")


# --------------------------------------------------------------------------- summary


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def paired(
    records: list[dict[str, Any]], base: list[dict[str, Any]], key: str, ok: str
) -> float | None:
    """Median of the per-round ratios: round i of a path against round i of direct.

    Rounds run back to back, so this cancels drift of the machine or of OpenCode over
    the run; it is printed next to the ratio of the medians as a check on it.
    """
    ratios = [
        mine[key] / theirs[key]
        for mine, theirs in zip(records, base, strict=False)
        if mine[ok] and theirs[ok] and mine[key] and theirs[key]
    ]
    return round(statistics.median(ratios), 3) if ratios else None


def summarize(paths: list[Path_]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    direct = next((p.results for p in paths if p.name == "direct"), {})
    for path in paths:
        res = path.results
        a = res.get("a", [])
        b = res.get("b", [])
        c = res.get("c", [])
        entry: dict[str, Any] = {"failed": path.failed or None}
        if a:
            ends = [r["end_s"] for r in a if r["ok"]]
            entry["a"] = {
                "p50_ms": _ms(_median(ends)),
                "min_ms": _ms(min(ends) if ends else None),
                "max_ms": _ms(max(ends) if ends else None),
                "ok": sum(r["ok"] for r in a),
                "n": len(a),
                "server_cpu_ms_mean": _cpu_mean(a),
                "paired_ratio": paired(a, direct.get("a", []), "end_s", "ok"),
            }
        if b:
            texts = [r["text_s"] for r in b if r["complete"] and r["text_s"] is not None]
            ends = [r["end_s"] for r in b if r["ok"]]
            entry["b"] = {
                "text_p50_ms": _ms(_median(texts)),
                "end_p50_ms": _ms(_median(ends)),
                "complete": sum(r["complete"] for r in b),
                "n": len(b),
                "server_cpu_ms_mean": _cpu_mean(b),
                "paired_ratio": paired(b, direct.get("b", []), "text_s", "complete"),
            }
        if c:
            entry["c"] = {
                "opencode_cpu_s_p50": _median(
                    [r["opencode_resources"]["cpu_seconds"] for r in c if r["opencode_resources"]]
                ),
                "batch_p50_s": _median([r["batch_s"] for r in c]),
                "complete_min": min(r["complete"] for r in c),
                "concurrency": c[0]["concurrency"],
                "n": len(c),
            }
            resources = [r["resources"] for r in c if r["resources"]]
            if resources:
                entry["d"] = {
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in resources),
                    "cpu_s_p50": _median([r["cpu_seconds"] for r in resources]),
                }
        summary[path.name] = entry
    return summary


def _cpu_mean(records: list[dict[str, Any]]) -> float | None:
    """Mean CPU per turn: the clock ticks in 10 ms steps, so a median would only round."""
    values = [r["server_cpu_ms"] for r in records if "server_cpu_ms" in r]
    return round(statistics.fmean(values), 1) if values else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def _fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(summary: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The printed lines, and the verdicts."""
    direct = summary.get("direct", {})
    peer = summary.get("peer")
    adapters = [name for name in ADAPTER_PATHS if name in summary]
    lines: list[str] = []
    verdicts: dict[str, Any] = {}

    def peer_part(case: str, key: str, fmt: Callable[[float], str]) -> str:
        if peer is None:
            return ""
        if peer.get("failed") or case not in peer or peer[case].get(key) is None:
            reason = peer.get("failed") or "no successful turn"
            return f" | peer: {reason}"
        value = peer[case][key]
        ours = summary.get("jsonrpc", {}).get(case, {}).get(key)
        return (
            f" | peer {fmt(value)} ({_fmt_ratio(_ratio(value, direct.get(case, {}).get(key)))})"
            f" (adapter/peer {_fmt_ratio(_ratio(ours, value))})"
        )

    # a
    base = direct.get("a", {}).get("p50_ms")
    parts, ok = [f"direct p50 {base} ms"], True
    for name in adapters:
        value = summary[name].get("a", {}).get("p50_ms")
        r = _ratio(value, base)
        ok = ok and r is not None and r <= TARGETS["a"]
        cpu = summary[name].get("a", {}).get("server_cpu_ms_mean")
        pr = _fmt_ratio(summary[name].get("a", {}).get("paired_ratio"))
        parts.append(f"{LABELS[name]} {value} ms ({_fmt_ratio(r)}, paired {pr}, CPU {cpu} ms/turn)")
    verdicts["a"] = ok
    lines.append(
        "a. trivial turn (new context)   "
        + " | ".join(parts)
        + peer_part("a", "p50_ms", lambda v: f"{v} ms")
        + f"  target <={TARGETS['a']}x {_verdict(ok)}"
    )

    # b
    db = direct.get("b", {})
    base = db.get("text_p50_ms")
    parts = [f"direct {base} ms ({db.get('complete')}/{db.get('n')} complete)"]
    ok = True
    for name in adapters:
        sb = summary[name].get("b", {})
        value = sb.get("text_p50_ms")
        r = _ratio(value, base)
        complete = sb.get("complete") == sb.get("n")
        ok = ok and r is not None and r <= TARGETS["b"] and complete
        pr = _fmt_ratio(sb.get("paired_ratio"))
        done = f"{sb.get('complete')}/{sb.get('n')} complete"
        parts.append(
            f"{LABELS[name]} {value} ms ({_fmt_ratio(r)}, paired {pr}, {done},"
            f" CPU {sb.get('server_cpu_ms_mean')} ms/turn)"
        )
    verdicts["b"] = ok
    lines.append(
        "b. long answer, last text       "
        + " | ".join(parts)
        + peer_part("b", "text_p50_ms", lambda v: f"{v} ms")
        + f"  target <={TARGETS['b']}x and complete {_verdict(ok)}"
    )

    # c
    dc = direct.get("c", {})
    base = dc.get("batch_p50_s")
    n = dc.get("concurrency")
    parts = [f"direct {_s(base)} ({dc.get('complete_min')}/{n} complete)"]
    ok = True
    for name in adapters:
        sc = summary[name].get("c", {})
        value = sc.get("batch_p50_s")
        r = _ratio(value, base)
        all_done = sc.get("complete_min") == sc.get("concurrency")
        ok = ok and r is not None and r <= TARGETS["c"] and all_done
        parts.append(
            f"{LABELS[name]} {_s(value)} ({_fmt_ratio(r)}, {sc.get('complete_min')}/{n} complete)"
        )
    peer_c = ""
    if peer is not None:
        sc = peer.get("c")
        if peer.get("failed") or not sc:
            peer_c = f" | peer: {peer.get('failed') or 'not run'}"
        else:
            ours = summary.get("jsonrpc", {}).get("c", {}).get("batch_p50_s")
            peer_c = (
                f" | peer {_s(sc['batch_p50_s'])} ({_fmt_ratio(_ratio(sc['batch_p50_s'], base))},"
                f" {sc['complete_min']}/{n} complete)"
                f" (adapter/peer {_fmt_ratio(_ratio(ours, sc['batch_p50_s']))})"
            )
    verdicts["c"] = ok
    lines.append(
        f"c. {n} concurrent turns         "[:33]
        + " | ".join(parts)
        + peer_c
        + f"  target all complete, <={TARGETS['c']}x {_verdict(ok)}"
    )

    # d
    parts, ok = [], True
    oc_direct = direct.get("c", {}).get("opencode_cpu_s_p50")
    for name in adapters:
        sd = summary[name].get("d")
        if not sd:
            ok = False
            continue
        ok = ok and sd["peak_rss_mb"] <= TARGETS["d_mb"]
        oc = summary[name].get("c", {}).get("opencode_cpu_s_p50")
        parts.append(
            f"{LABELS[name]} peak RSS {sd['peak_rss_mb']:.0f} MB, CPU {sd['cpu_s_p50']:.2f} s"
            f" (+ OpenCode {_s(oc)}; direct batch: OpenCode {_s(oc_direct)})"
        )
    if peer is not None and peer.get("d"):
        sd = peer["d"]
        ours = summary.get("jsonrpc", {}).get("d", {})
        parts.append(
            f"peer peak RSS {sd['peak_rss_mb']:.0f} MB, CPU {sd['cpu_s_p50']:.2f} s"
            f" (adapter/peer RSS {_fmt_ratio(_ratio(ours.get('peak_rss_mb'), sd['peak_rss_mb']))},"
            f" CPU {_fmt_ratio(_ratio(ours.get('cpu_s_p50'), sd['cpu_s_p50']))})"
        )
    verdicts["d"] = ok
    lines.append(
        "d. adapter during (c)           "
        + " | ".join(parts)
        + f"  target peak RSS <={TARGETS['d_mb']:.0f} MB {_verdict(ok)}"
    )
    return lines, verdicts


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


# --------------------------------------------------------------------------- main


async def _opencode_version(opencode: ManagedOpenCode) -> str | None:
    async with httpx.AsyncClient(auth=(opencode.username, opencode.password)) as http:
        response = await http.get(f"{opencode.base_url}/global/health", timeout=10)
        return str(response.json().get("version"))


async def start_peer(
    root: Path, opencode: ManagedOpenCode, workspace: Path
) -> tuple[PeerProcess | None, str]:
    try:
        log(f"opencode-a2a {PEER_VERSION}: installing into .tools/peer-venv unless already there")
        binary = await asyncio.to_thread(install_peer, root / "peer-install.log")
        peer = PeerProcess(
            binary=binary,
            env=peer_env(
                base_url=opencode.base_url,
                username=opencode.username,
                password=opencode.password,
                workspace=workspace,
                db=root / "peer.db",
            ),
            root=root,
        )
        await asyncio.to_thread(peer.start)
        return peer, ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def bench(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="opencode-a2a-bench-"))
    workspace = tmp / "workspace"
    workspace.mkdir()
    log(f"working folder {tmp}")
    model = ModelProcess(tmp / "model.log").start()
    opencode = await start_opencode(tmp / "opencode", workspace, model.url)
    adapter = peer = None
    clients: list[Any] = []
    try:
        version = await _opencode_version(opencode)
        info = machine_info(version)
        log(f"OpenCode {version} at {opencode.base_url} (pid {opencode.pid})")
        env = adapter_env(
            opencode,
            workspace=workspace,
            db=tmp / "adapter.db",
            token="bench-token-0123456789abcdef",
        )
        if args.experiment:
            log(f"adapter with what-if patches: {', '.join(args.experiment)}")
        adapter = await asyncio.to_thread(start_adapter, env, tmp, args.experiment)
        assert adapter.proc is not None
        log(f"adapter at {adapter.url} (pid {adapter.proc.pid})")
        connections = args.concurrency + 20
        direct = DirectClient(
            opencode.base_url,
            (opencode.username, opencode.password),
            str(workspace.resolve()),
            MODEL,
            max_connections=connections,
        )
        await direct.start()
        clients.append(direct)
        paths = [Path_("direct", direct.turn)]
        for binding in ADAPTER_PATHS:
            client = A2AClient(adapter.url, adapter.token, binding, max_connections=connections)
            clients.append(client)
            paths.append(Path_(binding, client.turn, pid=adapter.proc.pid))
        peer_problem = ""
        if args.peer:
            peer, peer_problem = await start_peer(tmp, opencode, workspace)
            if peer is None:
                log(f"peer skipped: {peer_problem}")
            else:
                assert peer.proc is not None
                log(f"peer opencode-a2a {PEER_VERSION} at {peer.url} (pid {peer.proc.pid})")
                client = A2AClient(
                    peer.url,
                    peer.token,
                    "jsonrpc",
                    extensions=PEER_EXTENSIONS,
                    max_connections=connections,
                )
                clients.append(client)
                paths.append(Path_("peer", client.turn, pid=peer.proc.pid))
        idle_rss = rss_bytes(adapter.proc.pid)
        ticks = cpu_ticks()
        log("warming up")
        wanted = set(args.paths.split(",")) | {"peer"}
        paths = [p for p in paths if p.name in wanted]
        await warm_up(paths, args.warmup, args.words)
        if "a" in args.cases:
            log(f"a: {args.turns} trivial turns per path")
            await case_a(paths, args.turns)
        if "b" in args.cases:
            log(f"b: {args.long_reps} x {args.words}-word answers per path")
            await case_b(paths, args.words, args.long_reps)
        if "c" in args.cases:
            log(f"c: {args.batch_reps} x {args.concurrency} concurrent turns per path")
            await case_c(paths, args.concurrency, args.batch_words, args.batch_reps, opencode.pid)
        summary = summarize(paths)
        steal = steal_share(ticks, cpu_ticks())
        if args.peer and peer is None:
            summary["peer"] = {"failed": f"could not start: {peer_problem}"}
        lines, verdicts = report(summary)
        print()
        print(
            f"OpenCode {version}, adapter {adapter_version}"
            + (f", peer opencode-a2a {PEER_VERSION}" if args.peer else "")
            + f"; {info['nproc']} CPUs, {info['cpu']}; a: median of {args.turns},"
            f" b: {args.words} words median of {args.long_reps},"
            f" c: {args.concurrency} x {args.batch_words} words median of {args.batch_reps};"
            f" CPU steal {'n/a' if steal is None else f'{steal:.1%}'}"
        )
        for line in lines:
            print(line)
        if args.json:
            data = {
                "machine": info,
                "options": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                },
                "targets": TARGETS,
                "verdicts": verdicts,
                "adapter_idle_rss_mb": round(idle_rss / 2**20, 1),
                "cpu_steal_share": steal,
                "summary": summary,
                "raw": {p.name: p.results for p in paths},
                "lines": lines,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=2) + "\n")
            log(f"raw numbers written to {args.json}")
        return 0
    except Exception:
        traceback.print_exc()
        if adapter is not None:
            log("adapter log tail:\n" + adapter.tail())
        return 1
    finally:
        for client in clients:
            await client.aclose()
        if peer is not None:
            peer.stop()
        if adapter is not None:
            adapter.stop()
        await opencode.stop()
        model.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
