"""Static bearer tokens, each bound to a principal name.

A token is never kept in memory in the clear once loaded: only its SHA-256 digest,
and a presented token is compared digest to digest with `hmac.compare_digest`, against
every entry (no early exit), so the time taken says nothing about the tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PRINCIPAL = "default"
MAX_PRINCIPAL_LENGTH = 255
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# Control, format and line/paragraph separator characters: they could forge log lines
# or collide with the separators the stores use.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_ENTRY_KEYS = frozenset({"principal", "token", "token_sha256"})


def check_principal(name: object) -> str:
    """`name` if it may name a principal, else ValueError saying why."""
    if not isinstance(name, str) or not name:
        raise ValueError("principal must be a non-empty string")
    if len(name) > MAX_PRINCIPAL_LENGTH:
        raise ValueError(f"principal must be at most {MAX_PRINCIPAL_LENGTH} characters")
    if name != name.strip():
        raise ValueError("principal must not start or end with whitespace")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in name):
        raise ValueError("principal must not contain control characters")
    return name


def token_digest(token: str | bytes) -> bytes:
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


@dataclass(frozen=True)
class Credential:
    """One accepted token (as its SHA-256 digest) and the principal it stands for."""

    principal: str
    digest: bytes

    def __repr__(self) -> str:  # never show even the digest
        return f"Credential(principal={self.principal!r})"


class TokenTable:
    """The static tokens this service accepts, looked up in constant time."""

    def __init__(self, credentials: Iterable[Credential] = ()) -> None:
        self._entries: list[Credential] = []
        for credential in credentials:
            self.add(credential)

    def add(self, credential: Credential) -> None:
        for existing in self._entries:
            if hmac.compare_digest(existing.digest, credential.digest):
                if existing.principal != credential.principal:
                    raise ValueError(
                        f"one token is given to two principals ({existing.principal!r} "
                        f"and {credential.principal!r})"
                    )
                return
        self._entries.append(credential)

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def principals(self) -> list[str]:
        return sorted({entry.principal for entry in self._entries})

    def match(self, token: str | bytes) -> str | None:
        """The principal a presented token stands for, or None."""
        presented = token_digest(token)
        found: str | None = None
        for entry in self._entries:  # every entry, so the time does not depend on which
            if hmac.compare_digest(entry.digest, presented):
                found = entry.principal
        return found


def bearer_credential(token: str, principal: str = DEFAULT_PRINCIPAL) -> Credential:
    return Credential(principal, token_digest(token))


def load_credentials_file(path: Path) -> list[Credential]:
    """Read A2A_CREDENTIALS_FILE (JSON or TOML); ValueError names the bad entry.

    Accepted shapes: a JSON list of entries, or an object / TOML document with a
    `credentials` list (TOML: `[[credentials]]` tables). Each entry is
    `{principal, token}` or `{principal, token_sha256}`. Error messages never quote a
    token.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__})") from None
    document = _parse(path, text)
    entries = document.get("credentials") if isinstance(document, dict) else document
    if isinstance(document, dict) and set(document) - {"credentials"}:
        unknown = ", ".join(sorted(set(document) - {"credentials"}))
        raise ValueError(f"{path}: unknown top-level key(s) {unknown}")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path} must hold a non-empty list of credentials")
    credentials = [_entry(path, index, entry) for index, entry in enumerate(entries, 1)]
    TokenTable(credentials)  # refuses one token given to two principals
    return credentials


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML ({_position(exc)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if path.suffix.lower() == ".json":
            raise ValueError(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise ValueError(f"{path} is neither valid JSON nor valid TOML") from None


def _position(exc: tomllib.TOMLDecodeError) -> str:
    # The message of a TOML error may quote the offending text; keep only where it is.
    match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
    return f"line {match.group(1)}, column {match.group(2)}" if match else "syntax error"


def _entry(path: Path, index: int, entry: Any) -> Credential:
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object with principal and token or token_sha256")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    try:
        principal = check_principal(entry.get("principal"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    token, hashed = entry.get("token"), entry.get("token_sha256")
    if (token is None) == (hashed is None):
        raise ValueError(f"{where} ({principal}) needs exactly one of token and token_sha256")
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"{where} ({principal}): token must be a non-empty string")
        if token != token.strip() or any(ch.isspace() for ch in token):
            raise ValueError(f"{where} ({principal}): token must not contain whitespace")
        return Credential(principal, token_digest(token))
    if not isinstance(hashed, str) or not _SHA256_HEX.match(hashed):
        raise ValueError(f"{where} ({principal}): token_sha256 must be 64 hexadecimal digits")
    return Credential(principal, bytes.fromhex(hashed))
