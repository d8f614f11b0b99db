"""The workspace-root rule: a turn may only run in a directory inside the root."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidRequest


def resolve_directory(requested: object, root: Path, *, allow_override: bool) -> str:
    """The directory to send upstream for a request's `metadata.opencode.directory`.

    Relative paths resolve against the root; symlinks and `..` are resolved before the
    containment check. Without an override the root itself is used.
    """
    if requested is None:
        return str(root)
    if not isinstance(requested, str) or not requested.strip():
        raise InvalidRequest("metadata.opencode.directory must be a non-empty string.")
    if "\x00" in requested:
        raise InvalidRequest("metadata.opencode.directory contains a NUL character.")
    candidate = Path(requested).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = Path(os.path.realpath(candidate))
    if not allow_override:
        if resolved == root:
            return str(root)
        raise InvalidRequest(
            "metadata.opencode.directory is not accepted: directory overrides are disabled "
            "(A2A_ALLOW_DIRECTORY_OVERRIDE=false)."
        )
    if resolved != root and root not in resolved.parents:
        raise InvalidRequest(
            f"metadata.opencode.directory {requested!r} is outside the workspace root "
            "(OPENCODE_WORKSPACE_ROOT)."
        )
    if not resolved.is_dir():
        raise InvalidRequest(f"metadata.opencode.directory {requested!r} is not a directory.")
    return str(resolved)


class DirectoryPolicy:
    """The workspace-root rule, bound to this deployment's settings."""

    def __init__(self, root: Path, *, allow_override: bool) -> None:
        self.root = root
        self.allow_override = allow_override

    def resolve(self, requested: object) -> str:
        """Like `resolve_directory`; raises InvalidRequest naming what is wrong."""
        return resolve_directory(requested, self.root, allow_override=self.allow_override)

    def contains(self, directory: str) -> bool:
        """True if `directory` (e.g. an existing session's) lies inside the root."""
        resolved = Path(os.path.realpath(directory))
        return resolved == self.root or self.root in resolved.parents
