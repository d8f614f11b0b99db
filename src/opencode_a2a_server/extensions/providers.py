"""Extension methods for discovery: providers, models, agents and slash commands.

Providers and models come from `GET /config/providers`: the providers OpenCode has loaded
for the directory (from config, an API key in the environment, or built in), with their
models and OpenCode's default model per provider. `GET /provider` is not used: it adds
the whole bundled catalog (about 226 providers, some 10 MB) and its `connected` list is
the same set of providers `/config/providers` returns.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..errors import InvalidParams, InvalidRequest, UpstreamPayloadError
from ..execution.directories import DirectoryPolicy
from ..upstream.client import OpenCodeClient
from .registry import CallContext, Extension, Method, Params

PROVIDER_DISCOVERY = Extension(
    uri="urn:opencode-a2a:extension:provider-discovery:v1",
    description=(
        "Discover what OpenCode offers for a directory: its providers and models, agents "
        "and slash commands."
    ),
    params={
        "provider_fields": [
            "provider_id",
            "name",
            "source",
            "connected",
            "model_count",
            "default_model_id",
        ],
        "model_fields": [
            "provider_id",
            "model_id",
            "name",
            "default",
            "connected",
            "status",
            "context_window",
            "max_output_tokens",
            "supports_reasoning",
            "supports_tool_call",
            "supports_attachments",
        ],
        "agent_fields": ["name", "description", "mode", "native", "hidden"],
        "command_fields": [
            "name",
            "description",
            "source",
            "template",
            "agent",
            "model",
            "subtask",
            "hints",
        ],
        "errors": [
            "INVALID_PARAMS",
            "UPSTREAM_UNREACHABLE",
            "UPSTREAM_HTTP_ERROR",
            "UPSTREAM_PAYLOAD_ERROR",
        ],
    },
)


class DirectoryParams(Params):
    directory: str | None = Field(None, min_length=1)


class ModelsParams(DirectoryParams):
    provider_id: str | None = Field(None, min_length=1)


def resolve_directory(directories: DirectoryPolicy, value: str | None) -> str:
    """The directory to send upstream; the refusal names the `directory` parameter."""
    try:
        return directories.resolve(value)
    except InvalidRequest as exc:
        raise InvalidRequest(
            exc.message.replace("metadata.opencode.directory", "directory")
        ) from None


# -- normalization of upstream payloads ----------------------------------------------


def _positive_int(value: Any) -> int | None:
    """A token limit, or None where OpenCode reports 0 (unknown) or nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return int(value)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _compact(item: dict[str, Any]) -> dict[str, Any]:
    """Drop the optional fields that have no value."""
    return {key: value for key, value in item.items() if value is not None}


class ProviderCatalog:
    """`GET /config/providers`, checked once and read by both methods."""

    def __init__(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("providers"), list):
            raise UpstreamPayloadError(
                "OpenCode returned an unexpected payload for /config/providers"
            )
        self.providers: list[dict[str, Any]] = [
            p for p in payload["providers"] if isinstance(p, dict) and _str(p.get("id"))
        ]
        defaults = payload.get("default")
        self.default_by_provider: dict[str, str] = {
            str(k): v for k, v in (defaults or {}).items() if isinstance(v, str)
        }
        # Every provider /config/providers returns is loaded, i.e. what /provider calls
        # `connected`.
        self.connected: list[str] = [p["id"] for p in self.providers]

    def provider_item(self, provider: dict[str, Any]) -> dict[str, Any]:
        provider_id = provider["id"]
        models = provider.get("models")
        return _compact(
            {
                "provider_id": provider_id,
                "name": _str(provider.get("name")) or provider_id,
                "source": _str(provider.get("source")),
                "connected": provider_id in self.connected,
                "model_count": len(models) if isinstance(models, dict) else 0,
                "default_model_id": self.default_by_provider.get(provider_id),
            }
        )

    def model_items(self, provider: dict[str, Any]) -> list[dict[str, Any]]:
        provider_id = provider["id"]
        models = provider.get("models")
        if not isinstance(models, dict):
            return []
        items = []
        for model_id, model in models.items():
            if not isinstance(model, dict):
                continue
            raw_limit, raw_caps = model.get("limit"), model.get("capabilities")
            limit: dict[str, Any] = raw_limit if isinstance(raw_limit, dict) else {}
            caps: dict[str, Any] = raw_caps if isinstance(raw_caps, dict) else {}
            items.append(
                _compact(
                    {
                        "provider_id": provider_id,
                        "model_id": model_id,
                        "name": _str(model.get("name")) or model_id,
                        "default": self.default_by_provider.get(provider_id) == model_id,
                        "connected": provider_id in self.connected,
                        "status": _str(model.get("status")),
                        "context_window": _positive_int(limit.get("context")),
                        "max_output_tokens": _positive_int(limit.get("output")),
                        "supports_reasoning": _bool(caps.get("reasoning")),
                        "supports_tool_call": _bool(caps.get("toolcall")),
                        "supports_attachments": _bool(caps.get("attachment")),
                    }
                )
            )
        return items

    def envelope(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "items": items,
            "default_by_provider": dict(self.default_by_provider),
            "connected": list(self.connected),
        }


def agent_item(agent: dict[str, Any]) -> dict[str, Any]:
    return _compact(
        {
            "name": agent["name"],
            "description": _str(agent.get("description")),
            "mode": _str(agent.get("mode")) or "all",
            "native": _bool(agent.get("native")),
            "hidden": agent.get("hidden") is True,
        }
    )


def command_item(command: dict[str, Any]) -> dict[str, Any]:
    hints = command.get("hints")
    template = command.get("template")
    return _compact(
        {
            "name": command["name"],
            "description": _str(command.get("description")),
            "source": _str(command.get("source")),
            "template": template if isinstance(template, str) else None,
            "agent": _str(command.get("agent")),
            "model": _str(command.get("model")),
            "subtask": _bool(command.get("subtask")),
            "hints": [h for h in hints if isinstance(h, str)] if isinstance(hints, list) else None,
        }
    )


def _named_list(payload: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(payload, list):
        raise UpstreamPayloadError(f"OpenCode returned an unexpected payload for {what}")
    return [x for x in payload if isinstance(x, dict) and _str(x.get("name"))]


# -- methods ---------------------------------------------------------------------------


def provider_methods(client: OpenCodeClient, directories: DirectoryPolicy) -> list[Method]:
    async def catalog(directory: str | None) -> ProviderCatalog:
        resolved = resolve_directory(directories, directory)
        return ProviderCatalog(await client.request("GET", "/config/providers", directory=resolved))

    async def list_providers(params: DirectoryParams, _: CallContext) -> Any:
        found = await catalog(params.directory)
        return found.envelope([found.provider_item(p) for p in found.providers])

    async def list_models(params: ModelsParams, _: CallContext) -> Any:
        found = await catalog(params.directory)
        providers = found.providers
        if params.provider_id is not None:
            providers = [p for p in providers if p["id"] == params.provider_id]
            if not providers:
                known = ", ".join(found.connected) or "none"
                raise InvalidParams(
                    f"Unknown provider_id {params.provider_id!r}; known providers: {known}.",
                    method="opencode.models.list",
                    fields=["provider_id"],
                    known_providers=found.connected,
                )
        return found.envelope([m for p in providers for m in found.model_items(p)])

    async def list_agents(params: DirectoryParams, _: CallContext) -> Any:
        resolved = resolve_directory(directories, params.directory)
        agents = _named_list(await client.request("GET", "/agent", directory=resolved), "/agent")
        return {"items": [agent_item(a) for a in agents]}

    async def list_commands(params: DirectoryParams, _: CallContext) -> Any:
        resolved = resolve_directory(directories, params.directory)
        payload = await client.request("GET", "/command", directory=resolved)
        return {"items": [command_item(c) for c in _named_list(payload, "/command")]}

    return [
        Method(
            "opencode.providers.list",
            "The providers OpenCode has loaded for `directory` (config, environment key or "
            "built in; the bundled catalog is left out) with model counts and defaults.",
            DirectoryParams,
            list_providers,
            PROVIDER_DISCOVERY,
        ),
        Method(
            "opencode.models.list",
            "The models of those providers with limits and capabilities; optional "
            "`provider_id` filter (an unknown one is refused), optional `directory`.",
            ModelsParams,
            list_models,
            PROVIDER_DISCOVERY,
        ),
        Method(
            "opencode.agents.list",
            "The agents for `directory`: name, description, mode, native, hidden "
            "(hidden ones included).",
            DirectoryParams,
            list_agents,
            PROVIDER_DISCOVERY,
        ),
        Method(
            "opencode.commands.list",
            "The slash commands for `directory` (built in, config, skills) with their templates.",
            DirectoryParams,
            list_commands,
            PROVIDER_DISCOVERY,
        ),
    ]
