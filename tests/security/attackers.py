"""Tools of the attacker: tokens built by hand, and servers that record whether the gateway called them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fixtures.gateway import SECRET

ISSUER = "https://login.example.test/tenant/v2.0"
AUDIENCE = "api://agent-gateway"


def b64(data: bytes) -> str:
    return jwt.utils.base64url_encode(data).decode()


def claims(user: str = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, **extra}


def hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """An HS256-style token over any header, HMAC-keyed with `key` (PyJWT refuses to build these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def rs256_signed(header: dict[str, Any], payload: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    """An RS256 token over any header, even one PyJWT refuses to write (a non-string kid)."""
    signing_input = (
        f"{b64(json.dumps({'alg': 'RS256', **header}).encode())}.{b64(json.dumps(payload).encode())}"
    )
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), key
    )
    return f"{signing_input}.{b64(signature)}"


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


class KeyServer:
    """A JWKS endpoint serving keys made here; counts every request it receives (the identity
    provider's, or an attacker's that the gateway must never be led to fetch)."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {}
        self.requests: list[str] = []

    def add_rsa(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    def add_ec(self, kid: str) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        return key

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        else:
            data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        return {**data, "kid": kid, "use": "sig"}

    def token(self, kid: str, alg: str, payload: dict[str, Any] | None = None, **headers: Any) -> str:
        return jwt.encode(payload or claims(), self.keys[kid], algorithm=alg, headers={"kid": kid, **headers})

    def app(self) -> web.Application:
        async def keys(request: web.Request) -> web.Response:
            self.requests.append(request.path_qs)
            return web.json_response({"keys": [self.jwk(kid) for kid in self.keys]})

        app = web.Application()
        app.router.add_get("/{tail:.*}", keys)
        return app
