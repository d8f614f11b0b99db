"""gRPC is listed in the Agent Card only when A2A_GRPC_PORT is set, at a URL with a scheme."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
from a2a.types.a2a_pb2 import Message, SendMessageRequest
from google.protobuf import json_format

from opencode_a2a_server.card import build_agent_card
from opencode_a2a_server.config import SettingsError, load_settings
from opencode_a2a_server.errors import StartupError
from opencode_a2a_server.extensions.registry import Registry

TOKEN = "card-token-0123456789"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith(("A2A_", "OPENCODE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("A2A_BEARER_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)


def interfaces(monkeypatch, **env: str) -> list[dict]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    card = json_format.MessageToDict(build_agent_card(load_settings(), Registry([])))
    return list(card["supportedInterfaces"])


def grpc_of(found: list[dict]) -> list[tuple[str, str]]:
    return [(i["url"], i["protocolVersion"]) for i in found if i["protocolBinding"] == "GRPC"]


def test_no_grpc_interface_unless_enabled(monkeypatch):
    found = interfaces(monkeypatch)
    assert grpc_of(found) == []
    assert {(i["protocolBinding"], i["protocolVersion"]) for i in found} == {
        ("JSONRPC", "1.0"),
        ("HTTP+JSON", "1.0"),
        ("JSONRPC", "0.3"),
        ("HTTP+JSON", "0.3"),
    }


def test_grpc_interfaces_for_both_versions_when_enabled(monkeypatch):
    found = interfaces(monkeypatch, A2A_GRPC_PORT="50051", A2A_PORT="9000")
    assert grpc_of(found) == [("http://127.0.0.1:50051", "1.0"), ("http://127.0.0.1:50051", "0.3")]
    # The HTTP interfaces are unchanged and come first.
    assert [i["protocolBinding"] for i in found[:4]] == ["JSONRPC", "HTTP+JSON"] * 2
    assert found[0]["url"] == "http://127.0.0.1:9000/"


def test_grpc_url_follows_the_public_host(monkeypatch):
    found = interfaces(
        monkeypatch, A2A_GRPC_PORT="50051", A2A_PUBLIC_URL="https://agent.example.com/a2a"
    )
    assert {url for url, _ in grpc_of(found)} == {"http://agent.example.com:50051"}


def test_grpc_public_url_overrides(monkeypatch):
    found = interfaces(
        monkeypatch,
        A2A_GRPC_PORT="50051",
        A2A_GRPC_PUBLIC_URL="https://grpc.example.com:8443/",
    )
    assert {url for url, _ in grpc_of(found)} == {"https://grpc.example.com:8443"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"A2A_GRPC_PORT": "8000"}, "A2A_GRPC_PORT is invalid: must differ from A2A_PORT"),
        ({"A2A_GRPC_PORT": "0"}, "A2A_GRPC_PORT is invalid"),
        ({"A2A_GRPC_PORT": "70000"}, "A2A_GRPC_PORT is invalid"),
        (
            {"A2A_GRPC_PORT": "50051", "A2A_GRPC_PUBLIC_URL": "grpc.example.com:443"},
            "A2A_GRPC_PUBLIC_URL is invalid",
        ),
        (
            {"A2A_GRPC_PUBLIC_URL": "https://grpc.example.com:8443/"},
            "A2A_GRPC_PUBLIC_URL is invalid: is set but A2A_GRPC_PORT is not",
        ),
    ],
)
def test_bad_grpc_settings_name_the_variable(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_missing_extra_is_a_clear_startup_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if grpcio were not installed
    monkeypatch.delitem(sys.modules, "opencode_a2a_server.grpc_server", raising=False)
    with pytest.raises(StartupError, match=r"A2A_GRPC_PORT is set .* install the `grpc` extra"):
        importlib.import_module("opencode_a2a_server.grpc_server")


def test_bearer_metadata_and_turn_detection():
    from opencode_a2a_server import grpc_server

    assert grpc_server._bearer((("authorization", "Bearer abc "),)) == b"abc"
    assert grpc_server._bearer((("Authorization", "bearer abc"),)) == b"abc"
    assert grpc_server._bearer((("authorization", "Basic abc"),)) == b""
    assert grpc_server._bearer((("x-other", "Bearer abc"),)) == b""
    assert grpc_server._bearer(None) == b""
    assert grpc_server._starts_turn(SendMessageRequest(message=Message(message_id="m")))
    assert not grpc_server._starts_turn(
        SendMessageRequest(message=Message(message_id="m", task_id="t"))
    )
    assert grpc_server._address("::", 50051) == "[::]:50051"
    assert grpc_server._address("127.0.0.1", 50051) == "127.0.0.1:50051"
