"""Bearer-token authentication: HS256 with a shared secret (local), RS256/ES256 from a JWKS (Entra ID).

Algorithm allow-list: HS256 only when AUTH_JWT_SECRET is set, RS256/ES256 only with a key of the
matching type from the JWKS; `none` never, and a JWKS key is never used as an HMAC secret.
`exp` is required; `exp`, `nbf`, `iss`, `aud` are checked with a small leeway. The user id is
the `oid` claim (Entra ID's stable object id), else `sub`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from streaming_gateway.errors import Unauthorized, Unavailable
from streaming_gateway.settings import Settings

log = logging.getLogger(__name__)

ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True)
class Principal:
    user_id: str
    claims: dict[str, Any] = field(default_factory=dict)


class JwksCache:
    """Keys from AUTH_JWKS_URL, cached; an unknown `kid` triggers a refresh (at most one per
    min_refresh_s, so a flood of forged kids cannot hammer the identity provider)."""

    def __init__(
        self, url: str, session: aiohttp.ClientSession, *, ttl_s: float, min_refresh_s: float
    ) -> None:
        self._url = url
        self._session = session
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_s
        self._keys: dict[str, tuple[str, jwt.PyJWK]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> tuple[str, jwt.PyJWK] | None:
        fresh = time.monotonic() - self._fetched_at < self._ttl_s
        if kid in self._keys and fresh:
            return self._keys[kid]
        async with self._lock:
            since = time.monotonic() - self._fetched_at
            if (kid not in self._keys or since >= self._ttl_s) and since >= self._min_refresh_s:
                await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        try:
            async with self._session.get(self._url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self._url, exc)
            if not self._keys:
                raise Unavailable(
                    "the identity provider's keys cannot be fetched", code="jwks_unavailable"
                ) from exc
            return  # keep serving the keys we have
        keys: dict[str, tuple[str, jwt.PyJWK]] = {}
        for data in document.get("keys", []) if isinstance(document, dict) else []:
            kid, kty = data.get("kid"), data.get("kty")
            alg = "RS256" if kty == "RSA" else "ES256" if kty == "EC" and data.get("crv") == "P-256" else None
            if not kid or alg is None or data.get("alg", alg) != alg or data.get("use", "sig") != "sig":
                continue  # symmetric or unsupported keys are never used
            try:
                keys[kid] = (alg, jwt.PyJWK(data, alg))
            except jwt.PyJWTError as exc:
                log.warning("JWKS key %s skipped: %s", kid, exc)
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("JWKS refreshed: %d signing keys", len(keys))


class Authenticator:
    def __init__(self, settings: Settings, jwks: JwksCache | None) -> None:
        self._secret = settings.auth_jwt_secret
        self._jwks = jwks
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._leeway = settings.auth_leeway_s

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token", reason="missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token too long", reason="malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", reason="malformed") from None
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            key: Any = self._secret
        elif alg in ASYMMETRIC and self._jwks is not None:
            kid = header.get("kid")
            found = await self._jwks.key(kid) if isinstance(kid, str) else None
            if found is None:
                raise Unauthorized("token signed with an unknown key", reason="unknown_key")
            key_alg, jwk = found
            if key_alg != alg:
                raise Unauthorized("token algorithm does not match its key", reason="algorithm")
            key = jwk.key
        else:
            raise Unauthorized(f"token algorithm {alg!r} is not allowed", reason="algorithm")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", reason="expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token not valid yet", reason="not_yet_valid") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as exc:
            raise Unauthorized(f"token claims rejected: {exc}", reason="claims") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid", reason="signature") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", reason="invalid") from None
        user_id = claims.get("oid") or claims.get("sub")
        if not isinstance(user_id, str) or not user_id or len(user_id) > 256:
            raise Unauthorized("token names no user (oid or sub)", reason="claims")
        return Principal(user_id, claims)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None
