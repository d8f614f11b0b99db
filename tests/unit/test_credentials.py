"""Principals and their tokens: the credentials file, the token table, the settings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from opencode_a2a_server.config import SettingsError, load_settings
from opencode_a2a_server.security.credentials import (
    Credential,
    TokenTable,
    bearer_credential,
    check_principal,
    load_credentials_file,
    token_digest,
)

ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- principal names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "default", "team/ops", "Zoë", "a" * 255, "user@x.org"])
def test_valid_principals(name):
    assert check_principal(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "non-empty"),
        (None, "non-empty"),
        (7, "non-empty"),
        ("a" * 256, "at most 255"),
        (" alice", "whitespace"),
        ("alice\n", "whitespace"),
        ("ali\nce", "control characters"),
        ("ali\x1fce", "control characters"),
        ("ali\x00ce", "control characters"),
        ("ali\u202ece", "control characters"),  # right-to-left override
        ("ali\u2028ce", "control characters"),  # line separator
        ("ali\x7fce", "control characters"),
    ],
)
def test_invalid_principals(name, why):
    with pytest.raises(ValueError, match=why):
        check_principal(name)


# -- the token table -------------------------------------------------------------------------


def test_table_matches_tokens_and_hashes():
    table = TokenTable(
        [bearer_credential(ALICE, "alice"), Credential("bob", bytes.fromhex(sha(BOB)))]
    )
    assert table.match(ALICE) == "alice"
    assert table.match(ALICE.encode()) == "alice"
    assert table.match(BOB) == "bob"
    assert table.match("nope") is None
    assert table.match("") is None
    assert table.match(ALICE + "x") is None
    assert table.principals() == ["alice", "bob"]


def test_one_principal_may_have_several_tokens():
    table = TokenTable([bearer_credential(ALICE, "alice"), bearer_credential(BOB, "alice")])
    assert table.match(ALICE) == table.match(BOB) == "alice"
    assert len(table) == 2


def test_one_token_for_two_principals_is_refused():
    with pytest.raises(ValueError, match="two principals"):
        TokenTable([bearer_credential(ALICE, "alice"), bearer_credential(ALICE, "bob")])


def test_credentials_never_show_their_digest():
    credential = bearer_credential(ALICE, "alice")
    assert ALICE not in repr(credential)
    assert token_digest(ALICE).hex() not in repr(credential)


# -- the credentials file --------------------------------------------------------------------


def test_json_list(tmp_path):
    path = write(
        tmp_path,
        "creds.json",
        json.dumps(
            [{"principal": "alice", "token": ALICE}, {"principal": "bob", "token_sha256": sha(BOB)}]
        ),
    )
    table = TokenTable(load_credentials_file(path))
    assert (table.match(ALICE), table.match(BOB)) == ("alice", "bob")


def test_json_object_with_credentials_key(tmp_path):
    path = write(
        tmp_path, "creds.json", json.dumps({"credentials": [{"principal": "a", "token": ALICE}]})
    )
    assert TokenTable(load_credentials_file(path)).match(ALICE) == "a"


def test_toml(tmp_path):
    text = f"""
[[credentials]]
principal = "alice"
token = "{ALICE}"

[[credentials]]
principal = "bob"
token_sha256 = "{sha(BOB).upper()}"
"""
    table = TokenTable(load_credentials_file(write(tmp_path, "creds.toml", text)))
    assert (table.match(ALICE), table.match(BOB)) == ("alice", "bob")


def test_toml_without_suffix_is_recognised(tmp_path):
    text = f'[[credentials]]\nprincipal = "alice"\ntoken = "{ALICE}"\n'
    assert TokenTable(load_credentials_file(write(tmp_path, "creds", text))).match(ALICE)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "non-empty list"),
        ("{}", "non-empty list"),
        ('{"credentials": [], "extra": 1}', "unknown top-level"),
        ('["alice"]', "entry 1 must be an object"),
        ('[{"principal": "alice"}]', "exactly one of token and token_sha256"),
        (
            f'[{{"principal": "alice", "token": "{ALICE}", "token_sha256": "{sha(ALICE)}"}}]',
            "exactly one",
        ),
        (f'[{{"principal": "alice", "tokn": "{ALICE}"}}]', "unknown key"),
        (f'[{{"principal": "", "token": "{ALICE}"}}]', "entry 1: principal must be"),
        (f'[{{"principal": "a\\nb", "token": "{ALICE}"}}]', "control characters"),
        ('[{"principal": "alice", "token": ""}]', "non-empty string"),
        ('[{"principal": "alice", "token": "has space-0123456789"}]', "whitespace"),
        ('[{"principal": "alice", "token_sha256": "abc"}]', "64 hexadecimal"),
        (
            f'[{{"principal": "a", "token": "{ALICE}"}}, {{"principal": "b", "token": "{ALICE}"}}]',
            "two principals",
        ),
    ],
)
def test_bad_files_name_the_problem_without_the_token(tmp_path, content, message):
    path = write(tmp_path, "creds.json", content)
    with pytest.raises(ValueError, match=message) as info:
        load_credentials_file(path)
    assert ALICE not in str(info.value)
    assert sha(ALICE) not in str(info.value)


def test_syntax_errors_do_not_quote_the_file(tmp_path):
    for name, text in [
        ("creds.json", f'[{{"principal": "a", "token": "{ALICE}"'),
        ("creds.toml", f'[[credentials]]\nprincipal = "a"\ntoken = "{ALICE}\n'),
        ("creds", f"principal: a token: {ALICE}"),
    ]:
        with pytest.raises(ValueError) as info:
            load_credentials_file(write(tmp_path, name, text))
        assert ALICE not in str(info.value), name


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_credentials_file(tmp_path / "nope.json")


# -- settings -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith(("A2A_", "OPENCODE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_a_credentials_file_alone_is_enough(monkeypatch, tmp_path):
    path = write(tmp_path, "c.json", json.dumps([{"principal": "alice", "token": ALICE}]))
    monkeypatch.setenv("A2A_CREDENTIALS_FILE", str(path))
    settings = load_settings()
    assert settings.a2a_bearer_token is None
    assert settings.a2a_credentials_file == path.resolve()


def test_jwt_alone_is_enough(monkeypatch):
    monkeypatch.setenv("A2A_JWT_ISSUER", "https://id.example.com/")
    monkeypatch.setenv("A2A_JWT_AUDIENCE", "opencode")
    monkeypatch.setenv("A2A_JWT_JWKS_URL", "https://id.example.com/jwks.json")
    settings = load_settings()
    assert settings.jwt_enabled and settings.a2a_jwt_principal_claim == "sub"


def test_no_scheme_names_every_variable():
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("A2A_BEARER_TOKEN is required but not set")
    for name in ("A2A_CREDENTIALS_FILE", "A2A_JWT_ISSUER", "A2A_JWT_AUDIENCE", "A2A_JWT_JWKS_URL"):
        assert name in message


def test_incomplete_jwt_settings(monkeypatch):
    monkeypatch.setenv("A2A_BEARER_TOKEN", "t")
    monkeypatch.setenv("A2A_JWT_ISSUER", "https://id.example.com/")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        "JWT validation needs A2A_JWT_ISSUER, A2A_JWT_AUDIENCE and A2A_JWT_JWKS_URL together; "
        "missing: A2A_JWT_AUDIENCE, A2A_JWT_JWKS_URL"
    )


def test_incomplete_jwt_alone_does_not_also_claim_the_token_is_missing(monkeypatch):
    monkeypatch.setenv("A2A_JWT_AUDIENCE", "x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "A2A_BEARER_TOKEN" not in str(info.value)


def test_plain_http_jwks_only_on_loopback(monkeypatch):
    monkeypatch.setenv("A2A_JWT_ISSUER", "https://id.example.com/")
    monkeypatch.setenv("A2A_JWT_AUDIENCE", "opencode")
    monkeypatch.setenv("A2A_JWT_JWKS_URL", "http://id.example.com/jwks.json")
    with pytest.raises(SettingsError, match=r"^A2A_JWT_JWKS_URL is invalid: must be an https"):
        load_settings()
    monkeypatch.setenv("A2A_JWT_JWKS_URL", "http://127.0.0.1:9999/jwks.json")
    assert load_settings().jwt_enabled


def test_bad_credentials_file_names_the_variable(monkeypatch, tmp_path):
    path = write(tmp_path, "c.json", json.dumps([{"principal": "a\x07", "token": ALICE}]))
    monkeypatch.setenv("A2A_CREDENTIALS_FILE", str(path))
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("A2A_CREDENTIALS_FILE is invalid: ")
    assert "control characters" in message and ALICE not in message
    assert "A2A_BEARER_TOKEN" not in message


def test_bearer_token_of_another_principal_in_the_file_is_refused(monkeypatch, tmp_path):
    path = write(tmp_path, "c.json", json.dumps([{"principal": "alice", "token": ALICE}]))
    monkeypatch.setenv("A2A_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("A2A_BEARER_TOKEN", ALICE)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("A2A_BEARER_TOKEN is invalid: is also the token of")
    assert ALICE not in str(info.value)


def test_bearer_token_may_repeat_the_default_entry(monkeypatch, tmp_path):
    path = write(tmp_path, "c.json", json.dumps([{"principal": "default", "token": ALICE}]))
    monkeypatch.setenv("A2A_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("A2A_BEARER_TOKEN", ALICE)
    assert load_settings().a2a_bearer_token is not None


@pytest.mark.parametrize(
    "variable", ["A2A_RATE_LIMIT_PER_MINUTE", "A2A_MAX_CONCURRENT_TURNS_PER_PRINCIPAL"]
)
def test_limits_default_off_and_refuse_negatives(monkeypatch, variable):
    monkeypatch.setenv("A2A_BEARER_TOKEN", "t")
    assert getattr(load_settings(), variable.lower()) == 0
    monkeypatch.setenv(variable, "-1")
    with pytest.raises(SettingsError, match=f"^{variable} is invalid"):
        load_settings()
