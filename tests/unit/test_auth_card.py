"""The Agent Card declares exactly the authentication schemes that are on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf import json_format

from opencode_a2a_server.card import build_agent_card
from opencode_a2a_server.config import load_settings
from opencode_a2a_server.extensions.registry import Registry

TOKEN = "card-token-0123456789"
FILE_TOKEN = "file-token-0123456789"
JWT = {
    "A2A_JWT_ISSUER": "https://id.example.com/",
    "A2A_JWT_AUDIENCE": "opencode-a2a",
    "A2A_JWT_JWKS_URL": "https://id.example.com/jwks.json",
}


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith(("A2A_", "OPENCODE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def card_json(monkeypatch, **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    card = build_agent_card(load_settings(), Registry([]))
    return json_format.MessageToDict(card)


def credentials(tmp_path: Path) -> str:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps([{"principal": "alice", "token": FILE_TOKEN}]))
    path.chmod(0o600)
    return str(path)


def test_bearer_token_only(monkeypatch):
    card = card_json(monkeypatch, A2A_BEARER_TOKEN=TOKEN)
    assert list(card["securitySchemes"]) == ["bearerAuth"]
    scheme = card["securitySchemes"]["bearerAuth"]["httpAuthSecurityScheme"]
    assert scheme["scheme"] == "bearer" and "bearerFormat" not in scheme
    assert card["securityRequirements"] == [{"schemes": {"bearerAuth": {}}}]


def test_credentials_file_is_the_same_bearer_scheme(monkeypatch, tmp_path):
    card = card_json(monkeypatch, A2A_CREDENTIALS_FILE=credentials(tmp_path))
    assert list(card["securitySchemes"]) == ["bearerAuth"]
    both = card_json(monkeypatch, A2A_BEARER_TOKEN=TOKEN)
    assert list(both["securitySchemes"]) == ["bearerAuth"]


def test_jwt_only(monkeypatch):
    card = card_json(monkeypatch, **JWT)
    assert list(card["securitySchemes"]) == ["jwtAuth"]
    scheme = card["securitySchemes"]["jwtAuth"]["httpAuthSecurityScheme"]
    assert scheme["scheme"] == "bearer" and scheme["bearerFormat"] == "JWT"
    assert "https://id.example.com/" in scheme["description"]
    assert "opencode-a2a" in scheme["description"] and "`sub`" in scheme["description"]
    assert card["securityRequirements"] == [{"schemes": {"jwtAuth": {}}}]


def test_static_and_jwt_are_alternatives(monkeypatch, tmp_path):
    card = card_json(
        monkeypatch,
        A2A_BEARER_TOKEN=TOKEN,
        A2A_CREDENTIALS_FILE=credentials(tmp_path),
        A2A_JWT_PRINCIPAL_CLAIM="email",
        **JWT,
    )
    assert sorted(card["securitySchemes"]) == ["bearerAuth", "jwtAuth"]
    assert card["securityRequirements"] == [
        {"schemes": {"bearerAuth": {}}},
        {"schemes": {"jwtAuth": {}}},
    ]
    assert "`email`" in card["securitySchemes"]["jwtAuth"]["httpAuthSecurityScheme"]["description"]
    text = json.dumps(card)
    for secret in (TOKEN, FILE_TOKEN, "jwks.json", "creds.json"):
        assert secret not in text
