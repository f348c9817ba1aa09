"""Operational endpoints: /healthz (the process serves), /readyz (dependencies answer and the pod
takes new streams), /metrics (Prometheus text format)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from streaming_gateway.keys import metrics_key, redis_key, streams_key

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
    except (TimeoutError, RedisError, OSError) as exc:
        checks["redis"] = f"failing: {type(exc).__name__}"
    streams = request.app.get(streams_key)
    checks["accepting"] = "failing: shutting down" if streams is not None and streams.shutting_down else "ok"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "failing", "checks": checks}, status=200 if ready else 503
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[metrics_key].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
