"""Cleanup contexts: one async generator per long-lived client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web

from streaming_gateway.keys import redis_key, settings_key

log = logging.getLogger(__name__)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    # No connection is made here: the gateway starts (and /healthz answers) while Redis is down,
    # and /readyz reports it until Redis answers.
    client = aioredis.Redis.from_url(
        app[settings_key].redis_url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )
    app[redis_key] = client
    yield
    await client.aclose()
