"""WriteGate: bookkeeping writes wait while a new turn is on its way to OpenCode.

A new turn's first milliseconds are on the client's clock: the request is parsed, the
session created and the prompt sent, one after the other on the one event loop. The
writes that go with it (the task's first states, the context's session binding, the
turn's lease) are needed for later reads and for recovery, not for the prompt, and
their SQLAlchemy work on the loop used to run between session creation and the prompt.
Writers wait at the gate until no turn is before its prompt, and never longer than
`max_wait`, so under a steady stream of new turns the writes are late, not starved.
"""

from __future__ import annotations

import asyncio
import contextlib


class GateHold:
    """One turn holding the gate; `release()` may be called any number of times."""

    __slots__ = ("_gate", "_held")

    def __init__(self, gate: WriteGate) -> None:
        self._gate = gate
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate._release()


class WriteGate:
    def __init__(self, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        self._holders = 0
        self._open = asyncio.Event()
        self._open.set()

    @property
    def held(self) -> bool:
        return self._holders > 0

    def hold(self) -> GateHold:
        """Close the gate until the returned hold is released."""
        self._holders += 1
        self._open.clear()
        return GateHold(self)

    def _release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._open.set()

    async def wait(self) -> None:
        """Return once no turn holds the gate, or after `max_wait` seconds."""
        if self._holders == 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), self.max_wait)
