"""WebSocket tickets: how a browser opens an authenticated WebSocket without its JWT in the URL.

A browser cannot set an `Authorization` header on a WebSocket, and a token in the query string
ends up in proxy and API Management access logs. So the page trades its JWT for a ticket with an
authenticated `POST /v1/ws/tickets` and opens `/v1/ws?ticket=<ticket>`. A ticket is 256 random
bits, lives GATEWAY_WS_TICKET_TTL_SECONDS (never past the token's own `exp`) and opens one
WebSocket: it is read and deleted in one transaction. Redis keeps only the secret's SHA-256, with
the principal the ticket stands for, under a key tagged per user (`{<user tag>}`: one hash slot).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time

from streaming_gateway.auth.authenticator import Principal
from streaming_gateway.errors import Unauthorized
from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis

#: `<user tag>.<secret>`: the tag picks the user's hash slot; the secret is the credential.
TICKET = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


def user_tag(user_id: str) -> str:
    """A short stand-in for the user id in tickets and keys (a ticket in a URL names no user)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


class WsTickets:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def issue(self, principal: Principal) -> tuple[str, int]:
        """A new ticket for `principal` and its lifetime in seconds."""
        ttl = self._ttl_s
        exp = principal.claims.get("exp")
        if isinstance(exp, int | float):
            ttl = max(1, min(ttl, int(exp - time.time())))
        tag, secret = user_tag(principal.user_id), secrets.token_urlsafe(32)
        value = json.dumps({"user_id": principal.user_id, "claims": principal.claims})
        await self._redis.set(_key(tag, secret), value, ex=ttl)
        return f"{tag}.{secret}", ttl

    async def redeem(self, ticket: str) -> Principal:
        """The principal of a valid, unused, unexpired ticket, which is spent by this call;
        Unauthorized otherwise (the same answer for forged, used and expired tickets)."""
        match = TICKET.match(ticket)
        if match is None:
            raise Unauthorized("malformed WebSocket ticket", reason="ticket")
        key = _key(*match.groups())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.delete(key)
            value, _ = await pipe.execute()
        if value is None:
            raise Unauthorized("unknown, used or expired WebSocket ticket", reason="ticket")
        data = json.loads(value)
        return Principal(data["user_id"], data["claims"])


def _key(tag: str, secret: str) -> str:
    return redis_keys.ws_ticket(tag, hashlib.sha256(secret.encode()).hexdigest())
