"""Forged and malformed bearer tokens: every one is refused with 401 and never reaches a handler.

Algorithm confusion, `none`, key-id tricks, keys named by the token itself (jku, x5u, jwk, x5c),
time claims, signature stripping and odd subjects, against a gateway keyed by a local secret and
one keyed by an identity provider's JWKS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fixtures.gateway import Gateway, StartGateway, make_token
from tests.fixtures.identity import (
    KeyServer,
    b64,
    claims,
    hand_signed,
    serving,
    start_jwks_gateway,
)
from tests.security.attackers import hs256, rs256_signed, unsigned


@pytest.fixture
async def idp() -> AsyncIterator[tuple[KeyServer, str]]:
    """The identity provider's JWKS endpoint, with one RSA and one EC signing key."""
    keys = KeyServer()
    keys.add_rsa("rsa-1")
    keys.add_ec("ec-1")
    async with serving(keys, "/discovery/keys") as url:
        yield keys, url


@pytest.fixture
async def attacker() -> AsyncIterator[tuple[KeyServer, str]]:
    """The attacker's own key server: the gateway must never fetch from it."""
    keys = KeyServer()
    keys.add_rsa("rsa-1")
    async with serving(keys) as url:
        yield keys, url


@pytest.fixture
async def jwks_gateway(
    start_gateway: StartGateway, idp: tuple[KeyServer, str], gateway_env: dict[str, str]
) -> Gateway:
    return await start_jwks_gateway(start_gateway, gateway_env, idp[1])


async def status_with(gateway: Gateway, token: str | None, scheme: str = "Bearer") -> int:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    async with gateway.session.get(gateway.url("/v1/conversations"), headers=headers) as response:
        if response.status == 401:
            assert (await response.json())["error"]["type"] == "authentication_error"
        return response.status


async def test_none_algorithm_in_any_spelling_is_refused(gateway: Gateway) -> None:
    """`alg: none` (and None, NONE, nOnE) with an empty or a copied signature never passes."""
    payload = claims()
    for alg in ("none", "None", "NONE", "nOnE", ""):
        assert await status_with(gateway, unsigned({"alg": alg, "typ": "JWT"}, payload)) == 401, alg
    genuine = hs256(payload).split(".")
    none_header = b64(b'{"alg":"none"}')
    forged = f"{none_header}.{genuine[1]}.{genuine[2]}"
    assert await status_with(gateway, forged) == 401


async def test_hmac_keyed_with_the_public_key_is_refused(jwks_gateway: Gateway, idp) -> None:
    """HS256 signed with the provider's public key (PEM, DER or its JWK text) is not accepted."""
    keys, _ = idp
    public = keys.keys["rsa-1"].public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}
    for key in (pem, der, repr(keys.jwk("rsa-1")).encode()):
        assert await status_with(jwks_gateway, hand_signed(header, claims(), key)) == 401
    assert await status_with(jwks_gateway, keys.token("rsa-1", "RS256")) == 200


async def test_asymmetric_token_on_a_secret_keyed_gateway_is_refused(gateway: Gateway) -> None:
    """A gateway keyed by AUTH_JWT_SECRET takes HS256 only: RS256 and ES256 tokens are refused."""
    keys = KeyServer()
    keys.add_rsa("k")
    keys.add_ec("e")
    assert (
        await status_with(gateway, keys.token("k", "RS256", {"sub": "alice", "exp": claims()["exp"]})) == 401
    )
    assert (
        await status_with(gateway, keys.token("e", "ES256", {"sub": "alice", "exp": claims()["exp"]})) == 401
    )


async def test_key_of_the_wrong_type_for_the_algorithm_is_refused(jwks_gateway: Gateway, idp) -> None:
    """An EC signature under the RSA key's kid, and RS256 under the EC kid, are refused."""
    keys, _ = idp
    ec_parts = keys.token("ec-1", "ES256").split(".")
    header = b64(b'{"alg":"ES256","kid":"rsa-1","typ":"JWT"}')
    assert await status_with(jwks_gateway, ".".join([header, *ec_parts[1:]])) == 401
    rsa_parts = keys.token("rsa-1", "RS256").split(".")
    header = b64(b'{"alg":"RS256","kid":"ec-1","typ":"JWT"}')
    assert await status_with(jwks_gateway, ".".join([header, *rsa_parts[1:]])) == 401


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../../../dev/null",
        "/etc/passwd",
        "..\\..\\windows\\win.ini",
        "' OR '1'='1",
        "rsa-1\u0000",
        "http://attacker.test/keys",
        "x" * 5000,
        "",
        17,
        None,
        ["rsa-1"],
        {"kid": "rsa-1"},
    ],
)
async def test_kid_tricks_are_refused(jwks_gateway: Gateway, attacker, kid: Any) -> None:
    """Path traversal, injection, URLs, null bytes, huge and non-string kids name no key: 401."""
    keys, _ = attacker
    key = keys.keys["rsa-1"]
    assert isinstance(key, rsa.RSAPrivateKey)
    signed = rs256_signed({"kid": kid, "typ": "JWT"}, claims(), key)
    assert await status_with(jwks_gateway, signed) == 401


async def test_keys_named_by_the_token_are_never_fetched_or_trusted(
    jwks_gateway: Gateway, idp, attacker
) -> None:
    """jku, x5u, an embedded jwk and x5c pointing at the attacker's key: refused, and the
    attacker's server never hears from the gateway."""
    attacker_keys, attacker_url = attacker
    key = attacker_keys.keys["rsa-1"]
    headers: list[dict[str, Any]] = [
        {"kid": "rsa-1", "jku": attacker_url},
        {"kid": "attacker", "jku": attacker_url},
        {"kid": "rsa-1", "x5u": attacker_url},
        {"kid": "rsa-1", "jwk": attacker_keys.jwk("rsa-1")},
        {"jwk": attacker_keys.jwk("rsa-1")},
        {"kid": "rsa-1", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
    ]
    for extra in headers:
        token = jwt.encode(claims(), key, algorithm="RS256", headers=extra)
        assert await status_with(jwks_gateway, token) == 401, extra
    assert attacker_keys.requests == []
    genuine, _ = idp
    assert await status_with(jwks_gateway, genuine.token("rsa-1", "RS256", jku=attacker_url)) == 200
    assert attacker_keys.requests == []


async def test_forged_kid_flood_does_not_hammer_the_identity_provider(jwks_gateway: Gateway, idp) -> None:
    """Fifty tokens with random kids cost the provider at most one extra key fetch (refresh throttled)."""
    keys, _ = idp
    assert await status_with(jwks_gateway, keys.token("rsa-1", "RS256")) == 200
    before = len(keys.requests)
    stranger = KeyServer()
    signer = stranger.add_rsa("forged")
    for index in range(50):
        forged = jwt.encode(claims(), signer, algorithm="RS256", headers={"kid": f"forged-{index}"})
        assert await status_with(jwks_gateway, forged) == 401
    assert len(keys.requests) - before <= 1


async def test_time_claims(gateway: Gateway) -> None:
    """Expired past the leeway, not yet valid, issued in the future, missing or null exp, non-numeric nbf or iat: 401."""
    now = claims()["iat"]
    cases = [
        {"sub": "alice", "exp": now - 120},
        {"sub": "alice", "exp": now + 600, "nbf": now + 300},
        {"sub": "alice", "exp": now + 600, "iat": now + 3600},
        {"sub": "alice"},
        {"sub": "alice", "exp": None},
        {"sub": "alice", "exp": now + 600, "nbf": "soon"},
        {"sub": "alice", "exp": now + 600, "iat": "then"},
    ]
    for payload in cases:
        assert await status_with(gateway, hs256(payload)) == 401, payload
    assert await status_with(gateway, hs256({"sub": "alice", "exp": now - 5})) == 200  # inside the leeway


async def test_tampered_and_stripped_signatures(gateway: Gateway) -> None:
    """A payload changed after signing, a stripped signature, a truncated token, extra segments: 401."""
    header, payload, signature = make_token("alice").split(".")
    bob = b64(f'{{"sub":"bob","exp":{claims()["exp"]}}}'.encode())
    for token in (
        f"{header}.{bob}.{signature}",
        f"{header}.{payload}.",
        f"{header}.{payload}",
        f"{header}.{payload}.{signature}.{signature}",
        f"{header}.{payload}.{signature[:-4]}",
        "." * 2,
        "a" * 8000,
    ):
        assert await status_with(gateway, token) == 401, token[:40]


async def test_only_the_bearer_scheme_is_read(gateway: Gateway) -> None:
    """Basic, a bare token, or Bearer with nothing after it are 401; the scheme is case-insensitive."""
    token = make_token("alice")
    assert await status_with(gateway, token, scheme="Basic") == 401
    assert await status_with(gateway, token, scheme="") == 401
    assert await status_with(gateway, "", scheme="Bearer") == 401
    assert await status_with(gateway, token, scheme="bearer") == 200


@pytest.mark.parametrize("sub", ["", 12345, None, ["alice"], {"id": "alice"}, True, "x" * 257])
async def test_subjects_that_name_no_user_are_refused(gateway: Gateway, sub: Any) -> None:
    """Empty, non-string and over-long subjects (with no oid) are refused."""
    assert await status_with(gateway, hs256({"sub": sub, "exp": claims()["exp"]})) == 401


@pytest.mark.parametrize(
    "sub", ["alice*", "alice}", "{alice}", "alice:rate", "al\u0000ice", " alice", "ALICE", "alice\u202e"]
)
async def test_lookalike_subjects_are_other_users(gateway: Gateway, sub: str) -> None:
    """Subjects that look like alice, or like Redis key syntax, are separate users who see nothing of hers."""
    cid = await gateway.create_conversation("alice")
    headers = {"Authorization": f"Bearer {hs256({'sub': sub, 'exp': claims()['exp']})}"}
    async with gateway.session.get(gateway.url("/v1/conversations"), headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["data"] == []
    async with gateway.session.get(gateway.url(f"/v1/conversations/{cid}"), headers=headers) as response:
        assert response.status == 404
