"""The verified-token cache never accepts what verifying the token would refuse: not past the
token's `exp`, not after its key left the identity provider's key set, not for a token that differs
from the verified one by a single character, and not beyond its bound in memory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streaming_gateway.auth.authenticator import Authenticator
from streaming_gateway.keys import authenticator_key
from tests.fixtures.gateway import Gateway, StartGateway, make_token
from tests.fixtures.identity import KeyServer, b64, claims, serving, start_jwks_gateway


@pytest.fixture
async def idp() -> AsyncIterator[tuple[KeyServer, str]]:
    """The identity provider's JWKS endpoint, with one RSA signing key."""
    keys = KeyServer()
    keys.add_rsa("rsa-1")
    async with serving(keys) as url:
        yield keys, url


def authenticator(gateway: Gateway) -> Authenticator:
    return gateway.app[authenticator_key]


def count_verifications(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens the gateway verifies in full from now on (a cache hit verifies none)."""
    seen: list[str] = []
    auth = authenticator(gateway)
    verify = auth._verify

    async def counted(token: str) -> Any:
        seen.append(token)
        return await verify(token)

    monkeypatch.setattr(auth, "_verify", counted)
    return seen


async def status_with(gateway: Gateway, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with gateway.session.get(gateway.url("/v1/conversations"), headers=headers) as response:
        return response.status


async def test_a_cached_token_is_refused_once_it_expired(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served from the cache before its `exp`; verified again from `exp` on (the leeway is the
    verification's, never the cache's); refused as expired past the leeway."""
    token = make_token("alice", ttl=600)
    exp = int(time.time()) + 600
    verified = count_verifications(gateway, monkeypatch)
    assert await status_with(gateway, token) == 200
    assert await status_with(gateway, token) == 200
    assert verified == [token]  # the second request was a cache hit

    authenticator(gateway).clock = lambda: exp + 1  # past exp, inside the 30 s leeway
    assert await status_with(gateway, token) == 200
    assert verified == [token, token]

    authenticator(gateway).clock = lambda: exp + 31
    assert await status_with(gateway, token) == 401
    assert gateway.metric("gateway_auth_failures_total", {"reason": "expired"}) == 1


async def test_a_token_not_valid_yet_is_not_cached(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token whose `nbf` is past the leeway is refused and not remembered; a cached one is not
    used if the clock goes back before its `nbf`."""
    now = int(time.time())
    early = make_token("alice", nbf=now + 300)
    assert await status_with(gateway, early) == 401
    assert len(authenticator(gateway).verified) == 0

    token = make_token("alice")
    assert await status_with(gateway, token) == 200
    assert len(authenticator(gateway).verified) == 1
    authenticator(gateway).clock = lambda: now - 120  # the clock stepped back before iat - leeway
    assert await status_with(gateway, token) == 401
    assert gateway.metric("gateway_auth_failures_total", {"reason": "not_yet_valid"}) == 2


async def test_a_token_whose_key_was_removed_is_refused_after_the_jwks_refresh(
    start_gateway: StartGateway,
    gateway_env: dict[str, str],
    idp: tuple[KeyServer, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The provider rotates rsa-1 out for rsa-2: a token under rsa-2 makes the gateway refetch the
    keys, which drops the cache, and the cached rsa-1 token is then refused."""
    keys, url = idp
    gateway = await start_jwks_gateway(start_gateway, gateway_env, url, AUTH_JWKS_MIN_REFRESH_SECONDS="0")
    old = keys.token("rsa-1", "RS256")
    verified = count_verifications(gateway, monkeypatch)
    assert await status_with(gateway, old) == 200
    assert await status_with(gateway, old) == 200
    assert verified == [old]

    del keys.keys["rsa-1"]
    keys.add_rsa("rsa-2")
    new = keys.token("rsa-2", "RS256", claims("bob"))
    assert await status_with(gateway, new) == 200
    assert await status_with(gateway, old) == 401
    assert gateway.metric("gateway_auth_failures_total", {"reason": "unknown_key"}) == 1
    assert await status_with(gateway, new) == 200  # verified with the current keys: cached


async def test_a_cached_token_is_not_used_once_the_keys_are_stale(
    start_gateway: StartGateway, gateway_env: dict[str, str], idp: tuple[KeyServer, str]
) -> None:
    """With the keys trusted for no time at all (AUTH_JWKS_CACHE_SECONDS=0) every request refetches
    them: a key removed since is refused on the same token's next request, with nothing else sent."""
    keys, url = idp
    gateway = await start_jwks_gateway(
        start_gateway, gateway_env, url, AUTH_JWKS_MIN_REFRESH_SECONDS="0", AUTH_JWKS_CACHE_SECONDS="0"
    )
    token = keys.token("rsa-1", "RS256")
    assert await status_with(gateway, token) == 200
    del keys.keys["rsa-1"]
    keys.add_rsa("rsa-2")
    assert await status_with(gateway, token) == 401


async def test_a_tampered_token_never_hits_the_cached_entry(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With alice's token cached, the same token with another payload, header or signature is
    verified in full and refused; alice's own still passes from the cache."""
    token = make_token("alice")
    assert await status_with(gateway, token) == 200
    verified = count_verifications(gateway, monkeypatch)
    header, payload, signature = token.split(".")
    bob = b64(f'{{"sub":"bob","exp":{claims()["exp"]}}}'.encode())
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    bare_header = b64(b'{"alg":"HS256"}')
    tampered = [
        f"{header}.{bob}.{signature}",
        f"{header}.{payload}.{flipped}",
        f"{bare_header}.{payload}.{signature}",
        f"{header}.{payload}.",
        f"{header}.{payload}",
        f"{token}.{signature}",
    ]
    for forged in tampered:
        assert await status_with(gateway, forged) == 401, forged
    assert verified == tampered
    assert await status_with(gateway, token) == 200
    assert verified == tampered
    assert len(authenticator(gateway).verified) == 1


async def test_the_cache_bound_holds_under_many_distinct_tokens(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty users' tokens through a cache of eight: never more than eight remembered, the least
    recently used dropped first, and a dropped token is verified again, not refused."""
    gateway = await start_gateway(AUTH_TOKEN_CACHE_SIZE="8")
    tokens = [make_token(f"user-{index}") for index in range(40)]
    for token in tokens:
        assert await status_with(gateway, token) == 200
        assert len(authenticator(gateway).verified) <= 8
    verified = count_verifications(gateway, monkeypatch)
    assert await status_with(gateway, tokens[-1]) == 200  # recently used: still cached
    assert verified == []
    assert await status_with(gateway, tokens[0]) == 200  # dropped long ago: verified again
    assert verified == [tokens[0]]
    assert len(authenticator(gateway).verified) == 8


async def test_no_cache_when_its_size_is_zero(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AUTH_TOKEN_CACHE_SIZE=0: every request verifies its token in full."""
    gateway = await start_gateway(AUTH_TOKEN_CACHE_SIZE="0")
    token = make_token("alice")
    verified = count_verifications(gateway, monkeypatch)
    assert await status_with(gateway, token) == 200
    assert await status_with(gateway, token) == 200
    assert verified == [token, token]
    assert len(authenticator(gateway).verified) == 0
