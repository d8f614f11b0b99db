"""The JSON-RPC endpoint: extension methods here, everything else to the a2a-sdk."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import (
    InvalidParams,
    InvalidRequest,
    MethodDisabled,
    MethodError,
    MethodNotSupported,
    UpstreamError,
    method_error_from_upstream,
)
from ..observability.requests import note_method
from .registry import CallContext, Registry

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class JsonRpcRouter:
    """Serves extension methods from the registry and passes A2A methods to the SDK."""

    def __init__(self, registry: Registry, sdk_endpoint: Endpoint) -> None:
        self.registry = registry
        self.sdk_endpoint = sdk_endpoint

    async def handle(self, request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _parse_error()
        if not isinstance(payload, dict) or not isinstance(payload.get("method"), str):
            return await self.sdk_endpoint(request)  # the SDK answers -32600
        request_id = payload.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, str | int)
        ):
            return _invalid_request("id must be a string, an integer or null")
        name = payload["method"]
        if self.registry.is_a2a_method(name):
            note_method(request.scope, name)
            return await self.sdk_endpoint(request)
        note_method(request.scope, name if self.registry.get(name) else "unknown")
        notification = "id" not in payload
        try:
            result = await self._call(name, payload.get("params"), request)
        except MethodError as exc:
            return self._error(payload, exc, notification)
        except InvalidRequest as exc:
            return self._error(payload, InvalidParams(exc.message, method=name), notification)
        except UpstreamError as exc:
            return self._error(payload, method_error_from_upstream(exc, method=name), notification)
        except Exception:
            log.exception("extension method %s failed", name)
            error = MethodError("Internal error", method=name)
            return self._error(payload, error, notification)
        if notification:
            return Response(status_code=204)
        return JSONResponse({"jsonrpc": "2.0", "id": payload["id"], "result": result})

    async def _call(self, name: str, raw_params: Any, request: Request) -> Any:
        method = self.registry.get(name)
        if method is None:
            raise MethodNotSupported(
                f"Unsupported method: {name}",
                method=name,
                supported_methods=self.registry.supported_methods(),
            )
        if not method.enabled:
            raise MethodDisabled(
                f"Method {name} is disabled on this deployment; set {method.toggle}=true "
                "to enable it.",
                method=name,
                toggle=method.toggle,
            )
        if raw_params is None:
            raw_params = {}
        if not isinstance(raw_params, dict):
            raise InvalidParams("params must be an object", method=name)
        try:
            params = method.params.model_validate(raw_params)
        except ValidationError as exc:
            raise invalid_params(exc, name) from None
        user = request.scope.get("user")
        principal = getattr(user, "display_name", "") if user is not None else ""
        return await method.handler(params, CallContext(principal=principal))

    @staticmethod
    def _error(payload: dict[str, Any], error: MethodError, notification: bool) -> Response:
        if notification:
            return Response(status_code=204)
        body = {"jsonrpc": "2.0", "id": payload.get("id"), "error": error.to_jsonrpc()}
        return JSONResponse(body)


def _parse_error() -> JSONResponse:
    error = {"code": -32700, "message": "Parse error: the body is not valid JSON"}
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error})


def _invalid_request(reason: str) -> JSONResponse:
    error = {"code": -32600, "message": f"Invalid request: {reason}"}
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error})


def invalid_params(exc: ValidationError, method: str) -> InvalidParams:
    """One readable -32602 naming every bad field."""
    problems = []
    fields = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "params"
        fields.append(where)
        problems.append(f"{where}: {error['msg']}")
    return InvalidParams("Invalid params: " + "; ".join(problems), method=method, fields=fields)
