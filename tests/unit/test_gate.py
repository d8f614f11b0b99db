"""WriteGate: writers wait while any new turn is before its prompt, never past max_wait."""

from __future__ import annotations

import asyncio
import time

from opencode_a2a_server.store.gate import WriteGate


async def test_an_open_gate_does_not_wait() -> None:
    gate = WriteGate(max_wait=5.0)
    started = time.monotonic()
    await gate.wait()
    assert time.monotonic() - started < 0.5 and not gate.held


async def test_writers_wait_until_the_last_holder_releases() -> None:
    gate = WriteGate(max_wait=5.0)
    first, second = gate.hold(), gate.hold()
    writer = asyncio.create_task(gate.wait())
    await asyncio.sleep(0.02)
    first.release()
    first.release()  # idempotent: must not open the gate for the second holder
    await asyncio.sleep(0.02)
    assert not writer.done() and gate.held
    second.release()
    await asyncio.wait_for(writer, 1.0)
    assert not gate.held


async def test_a_writer_goes_ahead_after_max_wait() -> None:
    gate = WriteGate(max_wait=0.05)
    hold = gate.hold()
    await asyncio.wait_for(gate.wait(), 1.0)
    assert gate.held
    hold.release()
