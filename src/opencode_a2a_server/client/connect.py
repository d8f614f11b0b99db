"""Reach an A2A agent: token from the environment, card discovery, interface choice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.client.errors import AgentCardResolutionError
from a2a.types.a2a_pb2 import AgentCard, AgentInterface
from packaging.version import InvalidVersion, Version

TOKEN_VARIABLES = ("A2A_TOKEN", "A2A_BEARER_TOKEN")
CARD_PATH = "/.well-known/agent-card.json"
TRANSPORTS = {"jsonrpc": "JSONRPC", "http-json": "HTTP+JSON"}
PROTOCOLS = ("1.0", "0.3")
CONNECT_TIMEOUT = 10.0


class ConnectError(Exception):
    """The agent cannot be reached or used as asked; the message says what to fix."""


@dataclass(frozen=True)
class Endpoint:
    """The agent card and the one interface this client talks to."""

    card: AgentCard
    interface: AgentInterface

    @property
    def describe(self) -> str:
        i = self.interface
        return f"{i.protocol_binding} {i.protocol_version} at {i.url}"


def token_from_env(env: Mapping[str, str]) -> str | None:
    """`A2A_TOKEN`, else `A2A_BEARER_TOKEN` (the server's own variable), else None."""
    for name in TOKEN_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def base_url(url: str) -> str:
    """The agent's base URL; a URL of the card itself is accepted too."""
    url = url.strip().rstrip("/")
    if url.endswith(CARD_PATH):
        url = url[: -len(CARD_PATH)]
    if not url.startswith(("http://", "https://")):
        raise ConnectError(f"{url!r} is not an http:// or https:// URL")
    return url


def http_client(token: str | None) -> httpx.AsyncClient:
    """One HTTP client for the card and every call; no read limit (turns can be long)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT)
    return httpx.AsyncClient(headers=headers, timeout=timeout)


async def fetch_card(http: httpx.AsyncClient, url: str) -> AgentCard:
    try:
        return await A2ACardResolver(http, url).get_agent_card()
    except AgentCardResolutionError as exc:
        raise ConnectError(f"cannot read the agent card at {url}{CARD_PATH}: {exc}") from exc


def requires_auth(card: AgentCard) -> bool:
    """Whether the card declares any security requirement."""
    return any(len(requirement.schemes) for requirement in card.security_requirements)


def _version_key(version: str) -> tuple[int, int]:
    try:
        parsed = Version(version)
    except InvalidVersion:
        return (-1, -1)
    return (parsed.major, parsed.minor)


def _same_version(offered: str, wanted: str) -> bool:
    return _version_key(offered) == _version_key(wanted) != (-1, -1)


def _offered(card: AgentCard) -> str:
    return ", ".join(
        f"{i.protocol_binding} {i.protocol_version or '?'}" for i in card.supported_interfaces
    )


def choose_interface(
    card: AgentCard, protocol: str | None = None, transport: str | None = None
) -> AgentInterface:
    """Pick the interface: `protocol` else the best version offered (1.0 first, then
    newer, then older); `transport` else the card's first interface of that version."""
    candidates = [i for i in card.supported_interfaces if i.protocol_binding in TRANSPORTS.values()]
    if transport:
        binding = TRANSPORTS[transport]
        candidates = [i for i in candidates if i.protocol_binding == binding]
    if protocol:
        candidates = [i for i in candidates if _same_version(i.protocol_version, protocol)]
    if not candidates:
        wanted = " ".join(x for x in (transport, protocol) if x) or "JSON-RPC or HTTP+JSON"
        raise ConnectError(
            f"the agent card offers no {wanted} interface (it offers: {_offered(card)})"
        )
    best = max(candidates, key=lambda i: _preference(i.protocol_version))
    return next(i for i in candidates if i.protocol_version == best.protocol_version)


def _preference(version: str) -> tuple[int, int, int]:
    key = _version_key(version)
    return (1 if key == (1, 0) else 0, *key)


def make_client(http: httpx.AsyncClient, endpoint: Endpoint) -> Client:
    """An SDK client bound to exactly the chosen interface."""
    card = AgentCard()
    card.CopyFrom(endpoint.card)
    del card.supported_interfaces[:]
    card.supported_interfaces.append(endpoint.interface)
    config = ClientConfig(
        streaming=True,
        httpx_client=http,
        supported_protocol_bindings=[endpoint.interface.protocol_binding],
    )
    return ClientFactory(config).create(card)


async def discover(
    http: httpx.AsyncClient, url: str, protocol: str | None, transport: str | None
) -> Endpoint:
    card = await fetch_card(http, url)
    return Endpoint(card, choose_interface(card, protocol, transport))


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK error, if the error came from one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx.HTTPStatusError):
            return current.response.status_code
        status = getattr(current, "status_code", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None
