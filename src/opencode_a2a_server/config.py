"""Settings: every environment variable the service reads, with its default.

README's variable table is generated from nothing but this module; keep them in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_FILE = ".data/opencode-a2a.db"


class Settings(BaseSettings):
    """Configuration of one adapter process, read from the environment."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Inbound A2A side. Authentication first: the bearer token's check reads the others.
    a2a_credentials_file: Path | None = None
    a2a_jwt_issuer: str | None = None
    a2a_jwt_audience: str | None = None
    a2a_jwt_jwks_url: AnyHttpUrl | None = Field(None, validate_default=True)
    a2a_jwt_principal_claim: str = Field("sub", min_length=1)
    a2a_bearer_token: SecretStr | None = Field(
        None, description="Token clients must send as Bearer.", validate_default=True
    )
    a2a_rate_limit_per_minute: int = Field(0, ge=0)
    a2a_max_concurrent_turns_per_principal: int = Field(0, ge=0)
    a2a_host: str = "127.0.0.1"
    a2a_port: int = Field(8000, ge=0, le=65535)
    a2a_public_url: AnyHttpUrl | None = None
    a2a_grpc_port: int | None = Field(None, ge=1, le=65535)
    a2a_grpc_public_url: AnyHttpUrl | None = None
    a2a_log_level: str = "INFO"
    a2a_log_payloads: bool = False
    a2a_log_body_limit: int = Field(4096, ge=0)
    a2a_log_format: Literal["text", "json"] = "text"
    a2a_metrics_port: int | None = Field(None, ge=1, le=65535)
    a2a_max_request_body_bytes: int = Field(1024 * 1024, ge=1024)
    a2a_allow_directory_override: bool = True
    a2a_enable_session_shell: bool = False
    a2a_enable_workspace_mutations: bool = False
    a2a_database_url: str = ""
    a2a_changes_max_file_bytes: int = Field(256 * 1024, ge=0)
    a2a_changes_max_total_bytes: int = Field(2 * 1024 * 1024, ge=0)
    a2a_interrupt_request_ttl_seconds: float = Field(10800.0, gt=0)
    a2a_interrupt_tombstone_ttl_seconds: float = Field(600.0, ge=0)
    a2a_replica_id: str = ""
    a2a_shutdown_grace_seconds: float = Field(30.0, ge=0)
    a2a_push_notifications: bool = False
    a2a_push_allowed_hosts: str = ""
    a2a_push_signing_key: SecretStr | None = None

    # Upstream OpenCode side.
    opencode_base_url: AnyHttpUrl | None = None
    opencode_workspace_root: Path | None = None
    opencode_provider_id: str | None = None
    opencode_model_id: str | None = None
    opencode_server_username: str = "opencode"
    opencode_server_password: SecretStr | None = None
    opencode_timeout: float = Field(120.0, gt=0)
    opencode_timeout_stream: float | None = Field(None, gt=0)
    opencode_bin: str | None = None
    opencode_data_dir: Path | None = None

    @field_validator("a2a_credentials_file")
    @classmethod
    def _readable_credentials(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        from .security.credentials import load_credentials_file

        path = value.expanduser().resolve()
        load_credentials_file(path)  # ValueError says what is wrong, never quoting a token
        return path

    @field_validator("a2a_jwt_jwks_url")
    @classmethod
    def _complete_jwt(cls, value: AnyHttpUrl | None, info: ValidationInfo) -> AnyHttpUrl | None:
        given = {
            "A2A_JWT_ISSUER": info.data.get("a2a_jwt_issuer"),
            "A2A_JWT_AUDIENCE": info.data.get("a2a_jwt_audience"),
            "A2A_JWT_JWKS_URL": value,
        }
        if not any(given.values()):
            return value
        missing = [name for name, item in given.items() if not item]
        if missing:
            raise PydanticCustomError(
                "config",
                "JWT validation needs A2A_JWT_ISSUER, A2A_JWT_AUDIENCE and A2A_JWT_JWKS_URL "
                "together; missing: " + ", ".join(missing),
            )
        assert value is not None
        if value.scheme != "https" and value.host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ValueError("must be an https URL (http only for localhost)")
        return value

    @field_validator("a2a_bearer_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            if not value.get_secret_value().strip():
                raise ValueError("must not be empty")
            cls._token_not_in_file(value, info.data.get("a2a_credentials_file"))
            return value
        if "a2a_credentials_file" not in info.data or "a2a_jwt_jwks_url" not in info.data:
            return None  # that setting is invalid, and its own error says so
        if info.data["a2a_credentials_file"] is not None or info.data["a2a_jwt_jwks_url"]:
            return None
        raise PydanticCustomError(
            "config",
            "A2A_BEARER_TOKEN is required but not set (or configure callers with "
            "A2A_CREDENTIALS_FILE, or JWTs with A2A_JWT_ISSUER, A2A_JWT_AUDIENCE and "
            "A2A_JWT_JWKS_URL)",
        )

    @staticmethod
    def _token_not_in_file(token: SecretStr, path: Path | None) -> None:
        if path is None:
            return
        from .security.credentials import (
            DEFAULT_PRINCIPAL,
            TokenTable,
            load_credentials_file,
        )

        table = TokenTable(load_credentials_file(path))
        principal = table.match(token.get_secret_value())
        if principal is not None and principal != DEFAULT_PRINCIPAL:
            raise ValueError(
                f"is also the token of principal {principal!r} in A2A_CREDENTIALS_FILE; "
                "give each principal its own token"
            )

    @field_validator("a2a_log_format", mode="before")
    @classmethod
    def _format_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("a2a_grpc_port")
    @classmethod
    def _grpc_port_free(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value == info.data.get("a2a_port"):
            raise ValueError("must differ from A2A_PORT (gRPC has its own listener)")
        return value

    @field_validator("a2a_grpc_public_url")
    @classmethod
    def _grpc_url_needs_port(
        cls, value: AnyHttpUrl | None, info: ValidationInfo
    ) -> AnyHttpUrl | None:
        if value is not None and info.data.get("a2a_grpc_port", 0) is None:
            raise ValueError("is set but A2A_GRPC_PORT is not (set both to serve gRPC)")
        return value

    @field_validator("a2a_log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("a2a_database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("opencode_workspace_root")
    @classmethod
    def _existing_directory(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        resolved = value.expanduser().resolve()
        if not resolved.is_dir():
            raise ValueError(f"{value} is not an existing directory")
        return resolved

    @property
    def jwt_enabled(self) -> bool:
        """JWT bearer tokens are accepted (issuer, audience and key set are configured)."""
        return self.a2a_jwt_jwks_url is not None

    @property
    def workspace_root(self) -> Path:
        """The directory turns run in when the client names none."""
        return self.opencode_workspace_root or Path.cwd().resolve()

    @property
    def database_url(self) -> str:
        """The task database; a SQLite file under the working directory by default."""
        if self.a2a_database_url:
            return self.a2a_database_url
        path = Path(DEFAULT_DATABASE_FILE).resolve()
        return f"sqlite+aiosqlite:///{path}"

    @property
    def push_allowed_hosts(self) -> frozenset[str]:
        """Hosts (or host:port) webhooks may use although they are not public."""
        return frozenset(
            h.strip().lower() for h in self.a2a_push_allowed_hosts.split(",") if h.strip()
        )

    @property
    def replica_id(self) -> str:
        """This process's name in turn leases: stable across restarts on one host."""
        if self.a2a_replica_id:
            return self.a2a_replica_id
        import socket

        return f"{socket.gethostname()}:{self.a2a_port}"

    @property
    def public_url(self) -> str:
        """Base URL clients reach this service at, without a trailing slash."""
        if self.a2a_public_url is not None:
            return str(self.a2a_public_url).rstrip("/")
        host = self.a2a_host if self.a2a_host not in {"0.0.0.0", "::", ""} else "127.0.0.1"
        return f"http://{host}:{self.a2a_port}"

    @property
    def grpc_public_url(self) -> str | None:
        """Where clients reach the gRPC listener (None when A2A_GRPC_PORT is unset).

        A2A_GRPC_PUBLIC_URL, else the host of the public URL with the gRPC port; always
        `http://` by default, because the listener itself speaks plaintext gRPC.
        """
        if self.a2a_grpc_port is None:
            return None
        if self.a2a_grpc_public_url is not None:
            return str(self.a2a_grpc_public_url).rstrip("/")
        host = urlsplit(self.public_url).hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.a2a_grpc_port}"

    @property
    def default_model(self) -> dict[str, str] | None:
        """The model every turn uses unless the request picks one."""
        if self.opencode_provider_id and self.opencode_model_id:
            return {"providerID": self.opencode_provider_id, "modelID": self.opencode_model_id}
        return None

    @property
    def stream_timeout(self) -> float | None:
        """Longest silence tolerated on the upstream event stream (None: no limit)."""
        return self.opencode_timeout_stream


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the environment variable."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = field.upper()
        if error["type"] == "missing":
            lines.append(f"{name} is required but not set")
        elif error["type"] == "config":
            lines.append(str(error["msg"]))  # names its variables itself
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name} is invalid: {message}")
    return "; ".join(lines)
