"""`make demo`: the whole stack offline on the scripted model, and one streamed exchange.

Starts the scripted model, a real `opencode serve` and the adapter (through its CLI),
then streams one A2A 1.0 exchange over JSON-RPC and prints it as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskArtifactUpdateEvent,
    TaskState,
)
from google.protobuf import json_format

from .scripted_model import ScriptedModelServer
from .stack import AdapterProcess, start_opencode

PROMPT = "[[reason]] [[bash:echo hello from the workspace]] Show me what you can do."


def _say(text: str, *, dim: bool = False) -> None:
    if dim and sys.stdout.isatty():
        text = f"\x1b[2m{text}\x1b[0m"
    sys.stdout.write(text)
    sys.stdout.flush()


async def _exchange(url: str, token: str) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        print(f"Agent card: {card.name} {card.version}, interfaces:")
        for interface in card.supported_interfaces:
            print(f"  {interface.protocol_binding:9} {interface.protocol_version}  {interface.url}")
        client = ClientFactory(ClientConfig(httpx_client=http)).create(card)
        message = Message(
            role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=PROMPT)]
        )
        print(f"\n> {PROMPT}\n")
        final = TaskState.TASK_STATE_UNSPECIFIED
        block = None
        async for event in client.send_message(SendMessageRequest(message=message)):
            if event.HasField("artifact_update"):
                block = _show_artifact(event.artifact_update, block)
            elif event.HasField("status_update"):
                final = event.status_update.status.state
                meta = json_format.MessageToDict(event.status_update.metadata)
                print(f"\n[status] {TaskState.Name(final)}")
                if "usage" in meta.get("shared", {}):
                    print(f"[usage]  {json.dumps(meta['shared']['usage'])}")
        await client.close()
    return 0 if final == TaskState.TASK_STATE_COMPLETED else 1


def _show_artifact(update: TaskArtifactUpdateEvent, block: str | None) -> str | None:
    meta = json_format.MessageToDict(update.artifact.metadata).get("shared", {}).get("stream", {})
    kind = meta.get("block_type")
    if meta.get("source") == "final_snapshot":
        return block
    if kind == "tool_call":
        data = json_format.MessageToDict(update.artifact.parts[0].data)
        output = str(data.get("output", "")).strip()
        print(f"\n[tool]   {data.get('tool')} {data.get('status')} {output}".rstrip())
        return kind
    if kind != block:
        _say("\n[thinking] " if kind == "reasoning" else "\n[answer] ", dim=kind == "reasoning")
    _say("".join(p.text for p in update.artifact.parts), dim=kind == "reasoning")
    return kind


async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="opencode-a2a-demo-") as tmp:
        root = Path(tmp)
        workspace = root / "workspace"
        workspace.mkdir()
        print("Starting the scripted model, OpenCode and the adapter (offline)...")
        with ScriptedModelServer() as model:
            opencode = await start_opencode(root / "opencode", workspace, model.url)
            env = {
                "OPENCODE_BASE_URL": opencode.base_url,
                "OPENCODE_SERVER_USERNAME": opencode.username,
                "OPENCODE_SERVER_PASSWORD": opencode.password,
                "OPENCODE_WORKSPACE_ROOT": str(workspace),
                "A2A_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'demo.db'}",
                "A2A_BEARER_TOKEN": uuid.uuid4().hex,
            }
            adapter = AdapterProcess(env, log_path=root / "adapter.log", cwd=root)
            try:
                adapter.start()
                print(f"Adapter listening at {adapter.url}\n")
                return await _exchange(adapter.url, adapter.token)
            finally:
                adapter.stop()
                await opencode.stop()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
