"""Ids this process made up for requests that named none.

Nothing can be stored yet under such an id, so the task store and the executor can
skip the database lookups a client-given id needs.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from a2a.server.id_generator import IDGenerator, IDGeneratorContext


class FreshIds(IDGenerator):
    """Makes UUIDs (the a2a-sdk's id generator) and remembers the most recent ones."""

    def __init__(self, remember: int = 10_000) -> None:
        self._made: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def generate(self, context: IDGeneratorContext) -> str:
        made = str(uuid.uuid4())
        self._made[made] = None
        while len(self._made) > self._remember:
            self._made.popitem(last=False)
        return made

    def is_fresh(self, made: str) -> bool:
        """Made here and not yet used (see `used`)."""
        return made in self._made

    def used(self, made: str) -> bool:
        """Mark `made` as used; True if it was fresh until now."""
        return self._made.pop(made, False) is None
