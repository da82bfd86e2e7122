"""Identity (API.md, NFR-013): JWTs checked against an algorithm allow-list, `exp` required.

Keys: HS256 with `PARLEY_JWT_SECRET`, or RS256/ES256 from `PARLEY_JWKS_URL`. The token's own
header is never trusted for keys (`jku`, `x5u`, `jwk` are ignored: joserfc never follows them,
and only our key set is passed in). Tokens come from `Authorization: Bearer` or the
`parley_token` cookie, never from a URL.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from app.errors import Unauthorized
from app.settings import Settings
from app.text import storable

log = logging.getLogger(__name__)

COOKIE_NAME = "parley_token"
HMAC_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")
JWKS_CACHE_S = 300.0
DEV_TOKEN_TTL_S = 24 * 3600
MAX_TOKEN_CHARS = 8192
# Tokens already verified, so a client's every request does not check the signature and claims
# again (~50 µs each, issue 13). The key is the whole token, signature included: only the very
# same bytes hit. An entry is used until the token expires and for at most VERIFIED_TTL_S
# (a key withdrawn from the JWKS stops working within that, as a JWKS refresh does within
# JWKS_CACHE_S); the oldest entries go first past VERIFIED_MAX.
VERIFIED_MAX = 10_000
VERIFIED_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    name: str
    roles: frozenset[str]
    expires_at: float  # epoch seconds, from `exp`

    @property
    def public(self) -> dict[str, str]:
        """The `user` object of event envelopes."""
        return {"id": self.user_id, "name": self.name}

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def dev_secret(data_dir: Path) -> str:
    """The embedded default's signing secret: generated once and kept, so a restart keeps
    everyone signed in (NFR-010: a restart must not cost a refresh)."""
    path = data_dir / "dev-jwt-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        secret = settings.jwt_secret
        if secret is None and settings.jwks_url is None:
            secret = dev_secret(settings.data_dir)
        self._hmac_key = OctKey.import_key(secret) if secret else None
        self._jwks: KeySet | None = None
        self._jwks_fetched_at = 0.0
        claims: dict[str, Any] = {"exp": {"essential": True}, "sub": {"essential": True}}
        if settings.jwt_issuer:
            claims["iss"] = {"essential": True, "value": settings.jwt_issuer}
        if settings.jwt_audience:
            claims["aud"] = {"essential": True, "value": settings.jwt_audience}
        self._claims = jwt.JWTClaimsRegistry(leeway=5, **claims)
        self._verified: dict[str, tuple[Identity, float]] = {}  # token -> (identity, use until)

    @property
    def can_issue(self) -> bool:
        return self._hmac_key is not None

    def issue(self, user_id: str, name: str, *, ttl_s: int = DEV_TOKEN_TTL_S, roles: list[str] | None = None) -> str:
        """Sign a token with the HMAC secret (dev login, tests, benchmarks)."""
        if self._hmac_key is None:
            raise RuntimeError("no HMAC secret configured")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "name": name, "iat": now, "exp": now + ttl_s}
        if roles:
            claims["roles"] = roles
        if self._settings.jwt_issuer:
            claims["iss"] = self._settings.jwt_issuer
        if self._settings.jwt_audience:
            claims["aud"] = self._settings.jwt_audience
        return jwt.encode({"alg": "HS256"}, claims, self._hmac_key)

    async def _key_set(self) -> KeySet | None:
        url = self._settings.jwks_url
        if url is None:
            return None
        if self._jwks is None or time.monotonic() - self._jwks_fetched_at > JWKS_CACHE_S:
            import httpx  # only with JWKS: not part of every process's start-up

            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(url)
                    response.raise_for_status()
                    self._jwks = KeySet.import_key_set(response.json())
                    self._jwks_fetched_at = time.monotonic()
            except (httpx.HTTPError, ValueError, JoseError) as error:
                log.warning("could not fetch JWKS from %s: %s", url, error)
                if self._jwks is None:
                    raise Unauthorized("token keys unavailable", code="invalid_token") from None
        return self._jwks

    async def verify(self, token: str) -> Identity:
        now = time.monotonic()
        cached = self._verified.get(token)
        if cached is not None:
            identity, until = cached
            if now < until and not identity.expired():
                return identity
            del self._verified[token]
        identity = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (identity, now + VERIFIED_TTL_S)
        return identity

    async def _verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid token", code="invalid_token")
        decoded = None
        try:
            header_alg = _header_alg(token)
        except (ValueError, RecursionError):  # RecursionError: a header of deeply nested JSON
            raise Unauthorized("malformed token", code="invalid_token") from None
        try:
            if header_alg in HMAC_ALGORITHMS and self._hmac_key is not None:
                decoded = jwt.decode(token, self._hmac_key, algorithms=list(HMAC_ALGORITHMS))
            elif header_alg in JWKS_ALGORITHMS:
                key_set = await self._key_set()
                if key_set is not None:
                    decoded = jwt.decode(token, key_set, algorithms=list(JWKS_ALGORITHMS))
            if decoded is None:
                raise Unauthorized(f"algorithm {header_alg!r} is not accepted", code="invalid_token")
            self._claims.validate(decoded.claims)
        except JoseError as error:
            code = "token_expired" if error.error == "expired_token" else "invalid_token"
            raise Unauthorized(f"token rejected: {error.error}", code=code) from None
        except ValueError:
            raise Unauthorized("malformed token", code="invalid_token") from None
        return identity_from_claims(decoded.claims)


def _header_alg(token: str) -> object:
    """The `alg` the token's header claims, only to pick the key: `jwt.decode` then checks it
    against the allow-list and verifies the signature. Peeking costs a few µs, where a full
    `jws.extract_compact` parsed (and a reconnect storm paid for) the whole token twice."""
    header, dot, _ = token.partition(".")
    if not dot:
        raise ValueError("not a compact JWS")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("header is not an object")
    return decoded.get("alg")


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    sub, name, exp = claims.get("sub"), claims.get("name"), claims.get("exp")
    if not isinstance(sub, str) or not sub or len(sub) > 200 or not storable(sub):
        raise Unauthorized("token has no usable `sub`", code="invalid_token")
    if not isinstance(exp, int | float):
        raise Unauthorized("token has no usable `exp`", code="invalid_token")
    if not isinstance(name, str) or not name.strip() or not storable(name):
        name = sub
    roles = claims.get("roles") or []
    if not isinstance(roles, list):
        roles = []
    return Identity(sub, name.strip()[:200], frozenset(r for r in roles if isinstance(r, str)), float(exp))


def bearer_token(headers: Mapping[str, str] | Any) -> str | None:
    """The token of an `Authorization: Bearer` header, if there is one."""
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return str(value.strip())
    return None


def token_from(headers: Mapping[str, str] | Any, cookies: Mapping[str, str]) -> str | None:
    return bearer_token(headers) or cookies.get(COOKIE_NAME) or None
