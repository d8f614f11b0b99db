"""One registry of extension JSON-RPC methods.

It drives dispatch, parameter validation, the Agent Card's extension declarations,
the method table in docs/guide.md and the unsupported-method error, so those four
can never disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from a2a.types.a2a_pb2 import AgentExtension
from pydantic import BaseModel, ConfigDict

from ..execution.mapping import to_struct


class Params(BaseModel):
    """Base of every method's parameters: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    """A method that takes no parameters."""


@dataclass(frozen=True)
class CallContext:
    """Who is calling: the principal every ownership check uses."""

    principal: str


Handler = Callable[[Any, CallContext], Awaitable[Any]]


@dataclass(frozen=True)
class Extension:
    """An A2A extension declared on the Agent Card."""

    uri: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One extension JSON-RPC method."""

    name: str
    summary: str
    params: type[Params]
    handler: Handler
    extension: Extension
    enabled: bool = True
    toggle: str | None = None  # the setting that enables a disabled method


# The A2A methods the SDK serves on the same endpoint (both protocol versions).
A2A_METHODS = (
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "message/send",
    "message/stream",
    "tasks/get",
    "tasks/cancel",
    "tasks/resubscribe",
)
# Push-config methods: offered only with A2A_PUSH_NOTIFICATIONS=true.
A2A_PUSH_METHODS = (
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/set",
    "tasks/pushNotificationConfig/get",
    "tasks/pushNotificationConfig/list",
    "tasks/pushNotificationConfig/delete",
)
# Known to the SDK, but not offered here (the card says so); the SDK answers them.
A2A_UNOFFERED_METHODS = (
    *A2A_PUSH_METHODS,
    "GetExtendedAgentCard",
    "agent/getAuthenticatedExtendedCard",
)


class Registry:
    """The extension methods of this deployment."""

    def __init__(self, methods: list[Method]) -> None:
        names = [m.name for m in methods]
        if len(names) != len(set(names)):
            raise ValueError("duplicate extension method names")
        clash = set(names) & set(A2A_METHODS + A2A_UNOFFERED_METHODS)
        if clash:
            raise ValueError(f"extension methods shadow A2A methods: {sorted(clash)}")
        self._methods = {m.name: m for m in methods}
        self.push_enabled = False

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    @property
    def methods(self) -> list[Method]:
        return list(self._methods.values())

    def supported_methods(self) -> list[str]:
        """Every JSON-RPC method that works on this deployment."""
        push = A2A_PUSH_METHODS if self.push_enabled else ()
        return [*A2A_METHODS, *push, *(m.name for m in self.methods if m.enabled)]

    def is_a2a_method(self, name: str) -> bool:
        return name in A2A_METHODS or name in A2A_UNOFFERED_METHODS

    def extensions(self) -> list[Extension]:
        seen: dict[str, Extension] = {}
        for method in self.methods:
            seen.setdefault(method.extension.uri, method.extension)
        return list(seen.values())

    def card_extensions(self) -> list[AgentExtension]:
        """Agent Card declarations: each extension with its methods and their state."""
        declared = []
        for extension in self.extensions():
            members = [m for m in self.methods if m.extension.uri == extension.uri]
            params = dict(extension.params)
            params["methods"] = [m.name for m in members if m.enabled]
            disabled = {
                m.name: {"reason": "disabled by configuration", "toggle": m.toggle}
                for m in members
                if not m.enabled
            }
            if disabled:
                params["disabled_methods"] = disabled
            declared.append(
                AgentExtension(
                    uri=extension.uri,
                    description=extension.description,
                    required=False,
                    params=to_struct(params),
                )
            )
        return declared

    def docs_table(self) -> str:
        """The Markdown method table of docs/guide.md."""
        rows = ["| Method | Extension | What it does |", "|---|---|---|"]
        for method in self.methods:
            suffix = f" (only with `{method.toggle}=true`)" if method.toggle else ""
            short = method.extension.uri.rsplit(":", 2)[-2]
            rows.append(f"| `{method.name}` | {short} | {method.summary}{suffix} |")
        return "\n".join(rows)
