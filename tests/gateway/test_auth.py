"""JWT authentication: HS256 locally; RS256/ES256 from a JWKS served over local HTTP; the checks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fixtures.gateway import SECRET, Gateway, StartGateway, make_token


class IdentityProvider:
    """A JWKS endpoint with keys generated here; keys can be rotated while it runs."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0

    def add_rsa(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    def add_ec(self, kid: str) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        return key

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            else:
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, alg: str, user: str = "alice", **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": user, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, **claims}
        return jwt.encode(body, self.keys[kid], algorithm=alg, headers={"kid": kid})

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.jwks())


ISSUER = "https://login.example.test/tenant/v2.0"
AUDIENCE = "api://agent-gateway"


@pytest.fixture
async def idp() -> AsyncIterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()
    app = web.Application()
    app.router.add_get("/keys", provider.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield provider, str(server.make_url("/keys"))
    await server.close()


@pytest.fixture
async def jwks_gateway(
    start_gateway: StartGateway, idp: tuple[IdentityProvider, str], gateway_env
) -> Gateway:
    gateway_env.pop("AUTH_JWT_SECRET")
    return await start_gateway(
        AUTH_JWKS_URL=idp[1], AUTH_ISSUER=ISSUER, AUTH_AUDIENCE=AUDIENCE, AUTH_JWKS_MIN_REFRESH_SECONDS="0"
    )


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
    unsigned = jwt.encode({"sub": "alice", "exp": now + 600}, None, algorithm="none")
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
    assert (
        await status_with(jwks_gateway, provider.token("rsa-1", "RS256", exp=int(time.time()) - 300)) == 401
    )
    assert await status_with(jwks_gateway, provider.token("rsa-1", "RS256", aud="api://other")) == 401


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
    stranger = IdentityProvider()
    stranger.add_rsa("unknown")
    assert await status_with(jwks_gateway, stranger.token("unknown", "RS256")) == 401
    forged = IdentityProvider()
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
    claims = {"sub": "alice", "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}
    hs_with_public = _hmac_token(claims, public_pem, "rsa-1")
    assert await status_with(jwks_gateway, hs_with_public) == 401
    ec_signed_as_rsa_kid = provider.token("ec-1", "ES256").split(".")
    header = {"alg": "ES256", "kid": "rsa-1", "typ": "JWT"}
    mixed = ".".join(
        [jwt.utils.base64url_encode(json.dumps(header).encode()).decode(), *ec_signed_as_rsa_kid[1:]]
    )
    assert await status_with(jwks_gateway, mixed) == 401
    assert (
        await status_with(jwks_gateway, jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"}))
        == 401
    )


def _hmac_token(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """An HS256 token keyed with `key`, built by hand (PyJWT rightly refuses PEM keys as HMAC secrets)."""
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return jwt.utils.base64url_encode(data).decode()

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'}).encode())}."
        f"{b64(json.dumps(claims).encode())}"
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


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
