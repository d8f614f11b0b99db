"""Every streamed event has an SSE id; a resubscribe with Last-Event-ID gets what it missed."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from .test_http_surface import V1

pytestmark = pytest.mark.e2e


def message(text: str) -> dict:
    return {
        "message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}
    }


async def sse_frames(
    response: httpx.Response, limit: int | None = None
) -> list[tuple[str | None, dict]]:
    frames: list[tuple[str | None, dict]] = []
    event_id: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            frames.append((event_id, json.loads(line[5:])))
            event_id = None
            if limit is not None and len(frames) >= limit:
                break
    return frames


def text_of(frames: list[tuple[str | None, dict]]) -> str:
    text = ""
    for _, frame in frames:
        update = frame.get("artifactUpdate") or frame.get("result", {}).get("artifactUpdate")
        if not update or update["artifact"].get("name") != "response":
            continue
        chunk = "".join(p.get("text", "") for p in update["artifact"]["parts"])
        text = text + chunk if update.get("append") else chunk
    return text


async def test_streamed_events_carry_increasing_ids(http: httpx.AsyncClient) -> None:
    async with http.stream(
        "POST", "/message:stream", json=message("ids please"), headers=V1
    ) as response:
        frames = await sse_frames(response)
    ids = [int(i) for i, _ in frames if i is not None]
    assert len(ids) == len(frames) - 1  # all but the initial Task snapshot
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendStreamingMessage",
        "params": message("rpc ids"),
    }
    async with http.stream("POST", "/", json=body, headers=V1) as response:
        frames = await sse_frames(response)
    assert all(i is not None for i, _ in frames[1:])


@pytest.mark.parametrize("transport", ["rest", "jsonrpc"])
async def test_resubscribe_with_last_event_id_replays_what_was_missed(
    http: httpx.AsyncClient, transport: str
) -> None:
    words = 40
    async with http.stream(
        "POST", "/message:stream", json=message(f"[[slow:{words}:0.08]]"), headers=V1
    ) as response:
        first = await sse_frames(response, limit=6)
    task_id = first[0][1]["task"]["id"]
    last_id = [i for i, _ in first if i is not None][-1]

    headers = {**V1, "Last-Event-ID": last_id}
    if transport == "rest":
        request = http.stream("GET", f"/tasks/{task_id}:subscribe", headers=headers)
    else:
        body = {"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask", "params": {"id": task_id}}
        request = http.stream("POST", "/", json=body, headers=headers)
    async with request as response:
        rest = await sse_frames(response)
    later_ids = [int(i) for i, _ in rest if i is not None]
    assert later_ids and min(later_ids) == int(last_id) + 1, "the missed events come first"
    assert later_ids == sorted(later_ids) and len(set(later_ids)) == len(later_ids)
    # Without the final snapshot, the deltas of both streams together are the whole text.
    deltas = [f for f in first + rest if "final_snapshot" not in json.dumps(f[1])]
    expected = " ".join(f"word{i}" for i in range(words))
    assert text_of(deltas) == expected
