"""Bearer-token authentication: HS256 with a shared secret (local), RS256/ES256 from a JWKS (Entra ID).

Algorithm allow-list: HS256 only when AUTH_JWT_SECRET is set, RS256/ES256 only with a key of the
matching type from the JWKS; `none` never, and a JWKS key is never used as an HMAC secret.
`exp` is required; `exp`, `nbf`, `iat`, `iss`, `aud` are checked with a small leeway. The user id
is the `oid` claim (Entra ID's stable object id), else `sub`.

A verified token is remembered (`VerifiedTokens`, AUTH_TOKEN_CACHE_SIZE): a client sends the same
token with every request until it expires, and verifying it again is most of what authentication
costs (its base64 and JSON, the signature, the claims: about 40 us for HS256 on this machine, more
for RS256). An entry is found only by the exact token string, is used only between the token's own
`nbf`/`iat` (less the leeway) and its `exp` (never the leeway past it: from `exp` on the token is
verified again, as without the cache), and one verified with a JWKS key only while those keys are
fresh and unchanged: a refetch that changes the key set drops every such entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
        #: The keys as published (kid -> JWK members), to tell a refetch that changed them.
        self._published: dict[str, dict[str, Any]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        #: Moves when a refetch changes the key set (a key added, removed or replaced).
        self.generation = 0

    @property
    def fresh(self) -> bool:
        """Whether the keys were fetched less than AUTH_JWKS_CACHE_SECONDS ago."""
        return time.monotonic() - self._fetched_at < self._ttl_s

    async def key(self, kid: str) -> tuple[str, jwt.PyJWK] | None:
        if kid in self._keys and self.fresh:
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
        published: dict[str, dict[str, Any]] = {}
        for data in document.get("keys", []) if isinstance(document, dict) else []:
            kid, kty = data.get("kid"), data.get("kty")
            alg = "RS256" if kty == "RSA" else "ES256" if kty == "EC" and data.get("crv") == "P-256" else None
            if not kid or alg is None or data.get("alg", alg) != alg or data.get("use", "sig") != "sig":
                continue  # symmetric or unsupported keys are never used
            try:
                keys[kid] = (alg, jwt.PyJWK(data, alg))
                published[kid] = data
            except jwt.PyJWTError as exc:
                log.warning("JWKS key %s skipped: %s", kid, exc)
        if published != self._published:
            self.generation += 1  # tokens verified with the old set are verified again
        self._keys, self._published = keys, published
        self._fetched_at = time.monotonic()
        log.info("JWKS refreshed: %d signing keys", len(keys))


class _Verified(NamedTuple):
    principal: Principal
    #: The token's `nbf` or `iat`, whichever is later (-inf without either).
    not_before: float
    #: The token's `exp`: the entry is not used from then on.
    expires: float
    #: The JWKS generation its key came from; None for the local secret.
    generation: int | None


class VerifiedTokens:
    """Principals of verified tokens by the exact token string, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, _Verified] = OrderedDict()
        self._generation: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> _Verified | None:
        entry = self._entries.get(token)
        if entry is not None:
            self._entries.move_to_end(token)
        return entry

    def put(self, token: str, entry: _Verified) -> None:
        if self._size <= 0:
            return
        if entry.generation is not None and entry.generation != self._generation:
            # The JWKS changed: whatever an old key verified is gone (found again only by verifying).
            self._entries.clear()
            self._generation = entry.generation
        self._entries[token] = entry
        self._entries.move_to_end(token)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, token: str) -> None:
        self._entries.pop(token, None)


class Authenticator:
    def __init__(self, settings: Settings, jwks: JwksCache | None) -> None:
        self._secret = settings.auth_jwt_secret
        self._jwks = jwks
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._leeway = settings.auth_leeway_s
        self._options: jwt.types.Options = {
            "require": ["exp"],
            "verify_aud": self._audience is not None,
            # The time claims are checked below, on the same clock as the verified tokens.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        self.verified = VerifiedTokens(settings.auth_token_cache_size)
        #: Seconds since the epoch, as `exp` counts them.
        self.clock: Callable[[], float] = time.time

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token", reason="missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token too long", reason="malformed")
        entry = self.verified.get(token)
        if entry is not None:
            now = self.clock()
            if (
                entry.not_before <= now + self._leeway
                and now < entry.expires
                and (entry.generation is None or self._jwks_unchanged(entry.generation))
            ):
                return entry.principal
            self.verified.drop(token)  # verified again below, as if never seen
        principal, generation = await self._verify(token)
        claims = principal.claims
        not_before = max(_number(claims, "nbf"), _number(claims, "iat"))
        self.verified.put(token, _Verified(principal, not_before, int(claims["exp"]), generation))
        return principal

    def _jwks_unchanged(self, generation: int) -> bool:
        return self._jwks is not None and self._jwks.generation == generation and self._jwks.fresh

    async def _verify(self, token: str) -> tuple[Principal, int | None]:
        """The token's principal, checked in full; with the JWKS generation of the key that verified it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", reason="malformed") from None
        alg = header.get("alg")
        generation: int | None = None
        if alg == "HS256" and self._secret:
            key: Any = self._secret
        elif alg in ASYMMETRIC and self._jwks is not None:
            kid = header.get("kid")
            found = await self._jwks.key(kid) if isinstance(kid, str) else None
            if found is None:
                raise Unauthorized("token signed with an unknown key", reason="unknown_key")
            generation = self._jwks.generation
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
                options=self._options,
            )
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as exc:
            raise Unauthorized(f"token claims rejected: {exc}", reason="claims") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid", reason="signature") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", reason="invalid") from None
        _check_times(claims, self.clock(), self._leeway)
        user_id = claims.get("oid") or claims.get("sub")
        if not isinstance(user_id, str) or not user_id or len(user_id) > 256:
            raise Unauthorized("token names no user (oid or sub)", reason="claims")
        return Principal(user_id, claims), generation


def _check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """`iat` and `nbf` not after now, `exp` not before now, each give or take the leeway (as PyJWT
    checks them, on the authenticator's clock)."""
    for name in ("iat", "nbf", "exp"):
        if name in claims:
            try:
                int(claims[name])
            except (ValueError, TypeError, OverflowError):
                raise Unauthorized(f"invalid token: {name} must be an integer", reason="invalid") from None
    if "iat" in claims and int(claims["iat"]) > now + leeway:
        raise Unauthorized("token not valid yet", reason="not_yet_valid")
    if "nbf" in claims and int(claims["nbf"]) > now + leeway:
        raise Unauthorized("token not valid yet", reason="not_yet_valid")
    if int(claims["exp"]) <= now - leeway:
        raise Unauthorized("token expired", reason="expired")


def _number(claims: dict[str, Any], name: str) -> float:
    return int(claims[name]) if name in claims else float("-inf")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None
