"""JWT authentication: HS256 locally; RS256/ES256 from a JWKS served over local HTTP; the checks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.fixtures.gateway import SECRET, Gateway, StartGateway, make_token
from tests.fixtures.identity import (
    AUDIENCE,
    ISSUER,
    KeyServer,
    claims,
    hand_signed,
    serving,
    start_jwks_gateway,
)


@pytest.fixture
async def idp() -> AsyncIterator[tuple[KeyServer, str]]:
    """The identity provider's JWKS endpoint, with no keys yet: each test publishes its own."""
    provider = KeyServer()
    async with serving(provider) as url:
        yield provider, url


@pytest.fixture
async def jwks_gateway(start_gateway: StartGateway, idp: tuple[KeyServer, str], gateway_env) -> Gateway:
    return await start_jwks_gateway(start_gateway, gateway_env, idp[1], AUTH_JWKS_MIN_REFRESH_SECONDS="0")


async def status_with(gateway: Gateway, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gateway.session.get(gateway.url("/v1/conversations"), headers=headers) as response:
        if response.status == 401:
            body = await response.json()
            assert body["error"]["type"] == "authentication_error"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        return response.status


async def test_hs256_token_accepted_and_bad_ones_refused(gateway: Gateway) -> None:
    """A valid HS256 token passes; missing, garbled, wrongly signed, expired, not-yet-valid, `none`
    and subject-less tokens get 401, each counted by reason."""
    now = int(time.time())
    assert await status_with(gateway, make_token("alice")) == 200
    assert await status_with(gateway, None) == 401
    assert await status_with(gateway, "garbage") == 401
    assert await status_with(gateway, make_token(secret="another-secret-another-secret-xx")) == 401
    assert await status_with(gateway, make_token(ttl=-120)) == 401  # beyond the 30 s leeway
    assert await status_with(gateway, make_token(ttl=-5)) == 200  # within the leeway
    assert await status_with(gateway, make_token(nbf=now + 300)) == 401
    unsigned = jwt.encode({"sub": "alice", "exp": now + 600}, "", algorithm="none")  # "": no key
    assert await status_with(gateway, unsigned) == 401
    no_subject = jwt.encode({"exp": now + 600}, SECRET, algorithm="HS256")
    assert await status_with(gateway, no_subject) == 401
    no_exp = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert await status_with(gateway, no_exp) == 401
    for reason in ("missing", "malformed", "signature", "expired", "not_yet_valid", "algorithm", "claims"):
        assert gateway.metric("gateway_auth_failures_total", {"reason": reason}) >= 1, reason


async def test_issuer_and_audience_checked_when_configured(start_gateway: StartGateway) -> None:
    """With AUTH_ISSUER and AUTH_AUDIENCE set, tokens must carry both."""
    gateway = await start_gateway(AUTH_ISSUER=ISSUER, AUTH_AUDIENCE=AUDIENCE)
    assert await status_with(gateway, make_token(iss=ISSUER, aud=AUDIENCE)) == 200
    assert await status_with(gateway, make_token(iss="https://evil.test", aud=AUDIENCE)) == 401
    assert await status_with(gateway, make_token(iss=ISSUER, aud="api://other")) == 401
    assert await status_with(gateway, make_token()) == 401


async def test_rs256_and_es256_from_jwks(jwks_gateway: Gateway, idp) -> None:
    """Tokens signed with RSA and EC keys published in the JWKS are accepted."""
    provider, _ = idp
    provider.add_rsa("rsa-1")
    provider.add_ec("ec-1")
    assert await status_with(jwks_gateway, provider.token("rsa-1", "RS256")) == 200
    assert await status_with(jwks_gateway, provider.token("ec-1", "ES256")) == 200
    expired = claims(exp=int(time.time()) - 300)
    assert await status_with(jwks_gateway, provider.token("rsa-1", "RS256", expired)) == 401
    assert await status_with(jwks_gateway, provider.token("rsa-1", "RS256", claims(aud="api://other"))) == 401


async def test_unknown_kid_refreshes_the_keys(jwks_gateway: Gateway, idp) -> None:
    """After a key rotation the first token with the new kid triggers a refresh and is accepted;
    a kid the provider does not publish stays refused."""
    provider, _ = idp
    provider.add_rsa("old")
    assert await status_with(jwks_gateway, provider.token("old", "RS256")) == 200
    fetches = provider.fetches
    assert await status_with(jwks_gateway, provider.token("old", "RS256")) == 200
    assert provider.fetches == fetches  # cached
    provider.add_ec("rotated")
    assert await status_with(jwks_gateway, provider.token("rotated", "ES256")) == 200
    assert provider.fetches == fetches + 1
    stranger = KeyServer()
    stranger.add_rsa("unknown")
    assert await status_with(jwks_gateway, stranger.token("unknown", "RS256")) == 401
    forged = KeyServer()
    forged.add_rsa("old")  # same kid, different key
    assert await status_with(jwks_gateway, forged.token("old", "RS256")) == 401


async def test_algorithm_confusion_is_refused(jwks_gateway: Gateway, idp) -> None:
    """HS256 signed with the public key, an RSA kid with ES256, and `none` never pass."""
    provider, _ = idp
    rsa_key = provider.add_rsa("rsa-1")
    provider.add_ec("ec-1")
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    payload = {"sub": "alice", "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}
    hs_with_public = hand_signed({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, payload, public_pem)
    assert await status_with(jwks_gateway, hs_with_public) == 401
    ec_signed_as_rsa_kid = provider.token("ec-1", "ES256").split(".")
    header = {"alg": "ES256", "kid": "rsa-1", "typ": "JWT"}
    mixed = ".".join(
        [jwt.utils.base64url_encode(json.dumps(header).encode()).decode(), *ec_signed_as_rsa_kid[1:]]
    )
    assert await status_with(jwks_gateway, mixed) == 401
    assert (
        await status_with(jwks_gateway, jwt.encode(payload, "", algorithm="none", headers={"kid": "rsa-1"}))
        == 401
    )


async def test_oid_claim_is_the_user_id(gateway: Gateway) -> None:
    """Entra ID's `oid` wins over `sub`: the same oid sees the same conversations whatever the sub."""
    headers = {"Authorization": f"Bearer {make_token('sub-1', oid='object-42')}"}
    async with gateway.session.post(gateway.url("/v1/conversations"), headers=headers, json={}) as response:
        cid = (await response.json())["id"]
    headers = {"Authorization": f"Bearer {make_token('sub-2', oid='object-42')}"}
    async with gateway.session.get(gateway.url(f"/v1/conversations/{cid}"), headers=headers) as response:
        assert response.status == 200
    async with gateway.request("GET", f"/v1/conversations/{cid}", user="object-42") as response:
        assert response.status == 200
    async with gateway.request("GET", f"/v1/conversations/{cid}", user="sub-1") as response:
        assert response.status == 404


async def test_public_endpoints_need_no_token(gateway: Gateway) -> None:
    """Health, readiness, metrics and the API description answer without a token."""
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        async with gateway.session.get(gateway.url(path)) as response:
            assert response.status == 200, path
