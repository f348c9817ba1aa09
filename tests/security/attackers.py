"""Tools of the attacker beside the shared identity provider (tests/fixtures/identity.py): tokens
no honest issuer writes (unsigned, RS256 over any header, HS256 keyed with any secret)."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fixtures.gateway import SECRET
from tests.fixtures.identity import b64


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
