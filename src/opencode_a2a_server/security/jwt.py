"""JWT bearer tokens, validated against the issuer's published keys (JWKS).

Only asymmetric signatures are accepted (RS*, PS*, ES*, EdDSA): never `none`, never an
HMAC algorithm, and a key is used only with an algorithm of its own type (and its own
`alg`, when the JWKS gives one). Issuer, audience and expiry are always checked.
The key set is cached for `ttl` seconds and fetched again early when a token names an
unknown key id (at most once per `min_refresh_interval`, so made-up key ids cannot make
this service hammer the issuer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt as pyjwt
from jwt import PyJWK

from .credentials import check_principal

log = logging.getLogger(__name__)

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512"})
OKP_ALGORITHMS = frozenset({"EdDSA"})
ACCEPTED_ALGORITHMS = RSA_ALGORITHMS | EC_ALGORITHMS | OKP_ALGORITHMS
_ALGORITHMS_BY_KTY = {"RSA": RSA_ALGORITHMS, "EC": EC_ALGORITHMS, "OKP": OKP_ALGORITHMS}

DEFAULT_TTL = 300.0
MIN_REFRESH_INTERVAL = 10.0
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1024 * 1024
LEEWAY_SECONDS = 30.0
MAX_TOKEN_LENGTH = 16 * 1024


class JwtRejected(Exception):
    """The token is not acceptable; `reason` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksUnavailable(Exception):
    """The issuer's key set could not be fetched and none is cached."""


class JwksCache:
    """The issuer's signing keys, fetched over HTTP and kept for `ttl` seconds."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float = DEFAULT_TTL,
        min_refresh_interval: float = MIN_REFRESH_INTERVAL,
        timeout: float = FETCH_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self._transport = transport
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None, algorithm: str) -> PyJWK:
        """The key a token with this `kid` and `alg` must be signed with."""
        stale = self._fetched_at is None or time.monotonic() - self._fetched_at > self.ttl
        if stale and self._may_attempt():
            await self._refresh()
        if not self._keys:
            raise JwksUnavailable("no key set fetched yet")
        jwk = self._find(kid)
        if jwk is None and self._may_attempt():
            await self._refresh()  # the issuer may have rotated its keys
            jwk = self._find(kid)
        if jwk is None:
            raise JwtRejected("the token is signed with a key the issuer does not publish")
        return _usable_key(jwk, algorithm)

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        if len(self._keys) == 1:  # a token without kid is fine when there is one key
            return next(iter(self._keys.values()))
        return None

    def _may_attempt(self) -> bool:
        last = self._attempted_at
        return last is None or time.monotonic() - last >= self.min_refresh_interval

    async def _refresh(self) -> None:
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return  # another request refreshed while this one waited for the lock
            self._generation += 1
            self._attempted_at = time.monotonic()
            try:
                self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
            except (httpx.HTTPError, ValueError) as exc:
                # Keep the keys we have: an issuer outage must not lock everyone out.
                log.warning("fetching the JWT key set from %s failed: %s", self.url, exc)

    async def _fetch(self) -> dict[str | None, dict[str, Any]]:
        self.fetches += 1
        async with (
            httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=False, transport=self._transport
            ) as client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("key set larger than 1 MiB")
        document = json.loads(bytes(body))
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWK set (no keys list)")
        keys: dict[str | None, dict[str, Any]] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") not in _ALGORITHMS_BY_KTY:
                continue  # symmetric ("oct") and unknown key types are never used
            if jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            keys[kid if isinstance(kid, str) else None] = jwk
        if not keys:
            raise ValueError("the key set has no usable signing key")
        return keys


def _usable_key(jwk: dict[str, Any], algorithm: str) -> PyJWK:
    if algorithm not in _ALGORITHMS_BY_KTY[str(jwk["kty"])]:
        raise JwtRejected("the token's algorithm does not match its key")
    declared = jwk.get("alg")
    if declared is not None and declared != algorithm:
        raise JwtRejected("the token's algorithm does not match its key")
    try:
        return PyJWK(jwk, algorithm)
    except pyjwt.PyJWTError:
        raise JwtRejected("the token's key cannot be used") from None


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    audience: str
    jwks_url: str
    principal_claim: str = "sub"
    leeway: float = LEEWAY_SECONDS


class JwtValidator:
    """Checks a JWT and names the principal it stands for."""

    def __init__(self, settings: JwtSettings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.jwks = jwks or JwksCache(settings.jwks_url)

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and len(token) <= MAX_TOKEN_LENGTH

    async def principal(self, token: str) -> str:
        """The principal of a valid token; JwtRejected or JwksUnavailable otherwise."""
        if not self.looks_like_jwt(token):
            raise JwtRejected("the token is not a JWT")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise JwtRejected("the token is not a valid JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in ACCEPTED_ALGORITHMS:
            raise JwtRejected("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        key = await self.jwks.key(kid if isinstance(kid, str) else None, algorithm)
        claims = self._decode(token, key, algorithm)
        value = claims.get(self.settings.principal_claim)
        try:
            return check_principal(value)
        except ValueError:
            raise JwtRejected(
                f"the token's {self.settings.principal_claim} claim is not a usable principal name"
            ) from None

    def _decode(self, token: str, key: PyJWK, algorithm: str) -> dict[str, Any]:
        s = self.settings
        try:
            return pyjwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": ["exp", "iss", "aud", s.principal_claim]},
            )
        except pyjwt.ExpiredSignatureError:
            raise JwtRejected("the token has expired") from None
        except pyjwt.ImmatureSignatureError:
            raise JwtRejected("the token is not valid yet (nbf)") from None
        except pyjwt.InvalidAudienceError:
            raise JwtRejected("the token is for another audience") from None
        except pyjwt.InvalidIssuerError:
            raise JwtRejected("the token is from another issuer") from None
        except pyjwt.exceptions.InvalidSubjectError:
            raise JwtRejected("the token's sub claim is not a string") from None
        except pyjwt.MissingRequiredClaimError as exc:
            raise JwtRejected(f"the token lacks the {exc.claim} claim") from None
        except pyjwt.InvalidSignatureError:
            raise JwtRejected("the token's signature is invalid") from None
        except pyjwt.PyJWTError:
            raise JwtRejected("the token is not valid") from None
