"""Liveness and readiness: /healthz says the process serves, /readyz that its dependencies answer."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from redis.exceptions import RedisError

from streaming_gateway.keys import redis_key

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[redis_key].ping(), timeout=2)
        checks["redis"] = "ok"
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        checks["redis"] = f"failing: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response({"status": "ok" if ready else "failing", "checks": checks}, status=200 if ready else 503)
