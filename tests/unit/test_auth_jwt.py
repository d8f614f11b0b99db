"""JWT bearer tokens: validation, the cached key set, and the middleware around them."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opencode_a2a_server.auth import Authenticator, BearerAuthMiddleware
from opencode_a2a_server.security.credentials import TokenTable, bearer_credential
from opencode_a2a_server.security.jwt import (
    JwksCache,
    JwksUnavailable,
    JwtRejected,
    JwtSettings,
    JwtValidator,
)

ISSUER = "https://id.example.com/"
AUDIENCE = "opencode-a2a"
JWKS_URL = "https://id.example.com/.well-known/jwks.json"
STATIC = "static-token-0123456789"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        data = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


class Issuer:
    """A JWKS endpoint behind httpx.MockTransport, counting fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.status = 200
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        assert str(request.url) == JWKS_URL
        if self.status != 200:
            return httpx.Response(self.status, text="down")
        return httpx.Response(200, json={"keys": self.keys})

    def cache(self, **kwargs: Any) -> JwksCache:
        return JwksCache(JWKS_URL, transport=httpx.MockTransport(self.handler), **kwargs)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any = RSA_KEY, kid: str | None = "rsa-1", alg: str = "RS256", **claim: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**claim), key, algorithm=alg, headers=headers)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def issuer() -> Issuer:
    return Issuer([public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")])


def validator(issuer: Issuer, claim: str = "sub", **cache: Any) -> JwtValidator:
    settings = JwtSettings(ISSUER, AUDIENCE, JWKS_URL, principal_claim=claim)
    return JwtValidator(settings, issuer.cache(**cache))


# -- valid tokens ------------------------------------------------------------------------


async def test_rsa_and_ec_tokens_name_their_principal(issuer):
    v = validator(issuer)
    assert await v.principal(sign()) == "alice"
    assert await v.principal(sign(EC_KEY, "ec-1", "ES256", sub="bob")) == "bob"
    assert issuer.fetches == 1, "the key set is cached"


async def test_ps256_with_an_rsa_key_without_alg(issuer):
    assert await validator(issuer).principal(sign(alg="PS256")) == "alice"


async def test_another_principal_claim(issuer):
    v = validator(issuer, claim="email")
    assert await v.principal(sign(email="carol@example.com")) == "carol@example.com"
    with pytest.raises(JwtRejected, match="lacks the email claim"):
        await v.principal(sign())


async def test_token_without_kid_when_the_set_has_one_key():
    single = Issuer([public_jwk(RSA_KEY, None)])
    assert await validator(single).principal(sign(kid=None)) == "alice"


async def test_small_clock_skew_is_tolerated(issuer):
    assert await validator(issuer).principal(sign(exp=int(time.time()) - 5)) == "alice"


# -- refused tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: sign(exp=int(time.time()) - 600), "expired"),
        (lambda: sign(nbf=int(time.time()) + 600), "not valid yet"),
        (lambda: sign(aud="someone-else"), "another audience"),
        (lambda: sign(iss="https://evil.example.com/"), "another issuer"),
        (lambda: sign(exp=None), "lacks the exp claim"),
        (lambda: sign(aud=None), "lacks the aud claim"),
        (lambda: sign(iss=None), "lacks the iss claim"),
        (lambda: sign(sub=None), "lacks the sub claim"),
        (lambda: sign(sub="ali\nce"), "not a usable principal"),
        (lambda: sign(sub=""), "not a usable principal"),
        (lambda: sign(sub=42), "sub claim is not a string"),
        (lambda: sign(RSA_KEY_2), "signature is invalid"),
        (lambda: sign(kid="ec-1"), "does not match its key"),
        (lambda: sign(EC_KEY, "rsa-1", "ES256"), "does not match its key"),
        (lambda: sign()[:-4] + "AAAA", "signature is invalid"),
    ],
    ids=[
        "expired",
        "nbf",
        "audience",
        "issuer",
        "no-exp",
        "no-aud",
        "no-iss",
        "no-sub",
        "control-char-sub",
        "empty-sub",
        "numeric-sub",
        "foreign-key",
        "rsa-alg-ec-key",
        "ec-alg-rsa-key",
        "tampered",
    ],
)
async def test_refused(issuer, token, reason):
    with pytest.raises(JwtRejected, match=reason):
        await validator(issuer).principal(token())


async def test_alg_none_is_refused(issuer):
    token = f"{b64({'alg': 'none', 'kid': 'rsa-1'})}.{b64(claims())}."
    with pytest.raises(JwtRejected, match="algorithm is not accepted"):
        await validator(issuer).principal(token)
    assert issuer.fetches == 0, "refused before any key lookup"


async def test_hmac_with_the_public_key_is_refused(issuer):
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"})
    payload = b64(claims())
    import hashlib
    import hmac

    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(JwtRejected, match="algorithm is not accepted"):
        await validator(issuer).principal(token)


async def test_declared_jwk_alg_must_match(issuer):
    pinned = Issuer([public_jwk(RSA_KEY, "rsa-1", alg="RS256")])
    with pytest.raises(JwtRejected, match="does not match its key"):
        await validator(pinned).principal(sign(alg="PS256"))


@pytest.mark.parametrize("token", ["abc", "a.b", "a.b.c", "....", "x" * 20000])
async def test_garbage_is_refused(issuer, token):
    with pytest.raises(JwtRejected):
        await validator(issuer).principal(token)


# -- the key set -------------------------------------------------------------------------------


async def test_unknown_kids_refresh_at_most_once_per_interval(issuer):
    v = validator(issuer, min_refresh_interval=0.3)
    assert await v.principal(sign()) == "alice"
    assert issuer.fetches == 1
    with pytest.raises(JwtRejected, match="does not publish"):
        await v.principal(sign(kid="made-up-1"))
    assert issuer.fetches == 1, "the set was just fetched"
    await asyncio.sleep(0.35)
    for kid in ("made-up-2", "made-up-3", "made-up-4"):
        with pytest.raises(JwtRejected, match="does not publish"):
            await v.principal(sign(kid=kid))
    assert issuer.fetches == 2, "one early refresh, not one per made-up kid"


async def test_rotated_key_is_found_by_refreshing(issuer):
    v = validator(issuer, min_refresh_interval=0)
    assert await v.principal(sign()) == "alice"
    issuer.keys = [public_jwk(RSA_KEY_2, "rsa-2")]
    assert await v.principal(sign(RSA_KEY_2, "rsa-2", sub="dave")) == "dave"
    assert issuer.fetches == 2


async def test_keys_are_refetched_after_the_ttl(issuer):
    v = validator(issuer, ttl=0, min_refresh_interval=0)
    await v.principal(sign())
    await v.principal(sign())
    assert issuer.fetches == 2


async def test_issuer_down_without_keys_is_unavailable(issuer):
    issuer.status = 500
    with pytest.raises(JwksUnavailable):
        await validator(issuer).principal(sign())


async def test_issuer_down_keeps_the_cached_keys(issuer):
    v = validator(issuer, ttl=0, min_refresh_interval=0)
    assert await v.principal(sign()) == "alice"
    issuer.status = 503
    assert await v.principal(sign()) == "alice"
    assert issuer.fetches == 2


async def test_symmetric_keys_in_the_set_are_ignored():
    only_oct = Issuer([{"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1"}])
    with pytest.raises(JwksUnavailable):
        await validator(only_oct).principal(sign())


async def test_encryption_keys_are_ignored():
    enc = Issuer([public_jwk(RSA_KEY, "rsa-1", use="enc"), public_jwk(EC_KEY, "ec-1")])
    with pytest.raises(JwtRejected, match="does not publish"):
        await validator(enc, min_refresh_interval=60).principal(sign())


# -- through the middleware ---------------------------------------------------------------------


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.user.display_name})


@pytest.fixture
async def client(issuer) -> AsyncIterator[httpx.AsyncClient]:
    tokens = TokenTable([bearer_credential(STATIC, "ops")])
    auth = Authenticator(tokens, validator(issuer, min_refresh_interval=60))
    app = BearerAuthMiddleware(Starlette(routes=[Route("/whoami", whoami)]), authenticator=auth)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://adapter") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_static_tokens_and_jwts_side_by_side(client, issuer):
    assert (await client.get("/whoami", headers=bearer(STATIC))).json() == {"user": "ops"}
    assert issuer.fetches == 0, "a static token needs no key set"
    answer = await client.get("/whoami", headers=bearer(sign(sub="erin")))
    assert answer.json() == {"user": "erin"}


async def test_refused_jwt_says_why(client):
    response = await client.get("/whoami", headers=bearer(sign(exp=int(time.time()) - 600)))
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized: the token has expired."}
    assert response.headers["www-authenticate"] == (
        'Bearer realm="opencode-a2a-server", error="invalid_token", '
        'error_description="the token has expired"'
    )


async def test_not_a_jwt_is_a_plain_401(client):
    response = await client.get("/whoami", headers=bearer("wrong"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="opencode-a2a-server"'


async def test_issuer_down_is_503_with_retry_after(client, issuer):
    issuer.status = 500
    response = await client.get("/whoami", headers=bearer(sign()))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert "A2A_JWT_JWKS_URL" in response.json()["error"]


async def test_jwt_only_deployment():
    issuer = Issuer([public_jwk(RSA_KEY, "rsa-1")])
    auth = Authenticator(TokenTable(), validator(issuer))
    app = BearerAuthMiddleware(Starlette(routes=[Route("/whoami", whoami)]), authenticator=auth)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://adapter"
    ) as c:
        assert (await c.get("/whoami", headers=bearer(sign()))).json() == {"user": "alice"}
        assert (await c.get("/whoami", headers=bearer(STATIC))).status_code == 401


def test_an_authenticator_needs_a_scheme():
    with pytest.raises(ValueError):
        Authenticator(TokenTable())
