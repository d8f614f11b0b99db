"""The Agent Card: what this service is, where it listens, and what it supports.

Only capabilities that work are declared here; tests check each of them end to end.
"""

from __future__ import annotations

from typing import Any

from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
)

from . import __version__
from .config import Settings
from .execution.mapping import to_struct
from .extensions.registry import Registry

BEARER_SCHEME = "bearerAuth"
JWT_SCHEME = "jwtAuth"
PROTOCOL_VERSIONS = ("1.0", "0.3")

SESSION_BINDING_URI = "urn:opencode-a2a:extension:session-binding:v1"
MODEL_SELECTION_URI = "urn:opencode-a2a:extension:model-selection:v1"
STREAM_HINTS_URI = "urn:opencode-a2a:extension:stream-hints:v1"


def build_agent_card(settings: Settings, registry: Registry) -> AgentCard:
    """Build the public card from settings (interfaces use A2A_PUBLIC_URL; the gRPC
    ones, listed only when A2A_GRPC_PORT is set, use `Settings.grpc_public_url`)."""
    base = settings.public_url
    interfaces = []
    for version in PROTOCOL_VERSIONS:
        interfaces.append(
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version=version)
        )
        interfaces.append(
            AgentInterface(url=base, protocol_binding="HTTP+JSON", protocol_version=version)
        )
    grpc_url = settings.grpc_public_url  # only when A2A_GRPC_PORT is set
    if grpc_url is not None:
        interfaces.extend(
            AgentInterface(url=grpc_url, protocol_binding="GRPC", protocol_version=version)
            for version in PROTOCOL_VERSIONS
        )
    schemes = security_schemes(settings)
    return AgentCard(
        name="OpenCode",
        description=(
            "OpenCode coding agent served over A2A: it reads, writes and runs code in its "
            "workspace, streams its reasoning, answer and tool calls, and keeps one "
            "OpenCode session per conversation (contextId)."
        ),
        version=__version__,
        provider=AgentProvider(organization="opencode-a2a-server", url=base),
        supported_interfaces=interfaces,
        capabilities=AgentCapabilities(
            streaming=True,
            push_notifications=settings.a2a_push_notifications,
            extended_agent_card=False,
            extensions=[*_extensions(), *registry.card_extensions()],
        ),
        security_schemes=schemes,
        security_requirements=[_requirement(name) for name in schemes],
        default_input_modes=["text/plain", "application/octet-stream"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(
                id="opencode.chat",
                name="Coding agent chat",
                description=(
                    "Give OpenCode a coding task in text (plus optional files); it works "
                    "in the workspace and answers, streaming as it goes."
                ),
                tags=["coding", "opencode", "agent"],
                examples=["Add a unit test for the parser and run it."],
                input_modes=["text/plain", "application/octet-stream"],
                output_modes=["text/plain", "application/json"],
            )
        ],
    )


def security_schemes(settings: Settings) -> dict[str, SecurityScheme]:
    """Exactly the schemes that are on; any one of them is enough.

    Static tokens (A2A_BEARER_TOKEN, A2A_CREDENTIALS_FILE) are one HTTP bearer scheme;
    JWTs are a second one with bearerFormat JWT. Nothing secret is described.
    """
    schemes: dict[str, SecurityScheme] = {}
    if settings.a2a_bearer_token is not None or settings.a2a_credentials_file is not None:
        schemes[BEARER_SCHEME] = SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer",
                description=(
                    "Send the token you were given as `Authorization: Bearer <token>`; "
                    "each token stands for one caller."
                ),
            )
        )
    if settings.jwt_enabled:
        schemes[JWT_SCHEME] = SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer",
                bearer_format="JWT",
                description=(
                    f"Send a JWT issued by {settings.a2a_jwt_issuer} for audience "
                    f"{settings.a2a_jwt_audience} as `Authorization: Bearer <jwt>`; its "
                    f"`{settings.a2a_jwt_principal_claim}` claim names the caller."
                ),
            )
        )
    return schemes


def _requirement(scheme: str) -> SecurityRequirement:
    requirement = SecurityRequirement()
    requirement.schemes[scheme].SetInParent()
    return requirement


def _extensions() -> list[AgentExtension]:
    return [
        _extension(
            SESSION_BINDING_URI,
            "Continue an existing OpenCode session or pick the working directory.",
            {
                "metadata_field": "metadata.shared.session.id",
                "directory_field": "metadata.opencode.directory",
                "behavior": "reuse the session bound to (caller, contextId), else create one",
            },
        ),
        _extension(
            MODEL_SELECTION_URI,
            "Choose the model for one request.",
            {
                "metadata_field": "metadata.shared.model",
                "fields": ["providerID", "modelID"],
                "behavior": "request model, else the configured default, else OpenCode's default",
            },
        ),
        _extension(
            STREAM_HINTS_URI,
            "Streamed artifact chunks say which block they belong to.",
            {
                "stream_metadata_field": "artifact.metadata.shared.stream",
                "block_types": ["text", "reasoning", "tool_call"],
                "tool_call_fields": [
                    "call_id",
                    "tool",
                    "status",
                    "title",
                    "input",
                    "output",
                    "error",
                ],
                "usage_metadata_field": "metadata.shared.usage",
                "session_metadata_field": "metadata.shared.session",
                "final_snapshot": "the last text chunk has append=false and replaces the block",
            },
        ),
    ]


def _extension(uri: str, description: str, params: dict[str, Any]) -> AgentExtension:
    return AgentExtension(
        uri=uri, description=description, required=False, params=to_struct(params)
    )
