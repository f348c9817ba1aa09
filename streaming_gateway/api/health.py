"""Operational endpoints: /healthz (the process serves), /readyz (dependencies answer and the pod
takes new streams), /metrics (Prometheus text format).

/metrics is served with the API unless GATEWAY_METRICS_PORT is set: then only on a listener of its
own (`metrics_listener_ctx`), which answers nothing else, so the API port never exposes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from streaming_gateway.keys import metrics_key, redis_key, settings_key, streams_key

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


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[metrics_key].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """With GATEWAY_METRICS_PORT, a second listener serving only /metrics from the same registry,
    on GATEWAY_METRICS_HOST (GATEWAY_HOST by default); it stops when the gateway does."""
    settings = app[settings_key]
    if not settings.metrics_port:
        yield
        return
    metrics_app = web.Application()
    metrics_app[metrics_key] = app[metrics_key]
    metrics_app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    host = settings.metrics_host or settings.host
    await web.TCPSite(runner, host, settings.metrics_port).start()
    log.info("metrics on %s:%d", host, settings.metrics_port)
    yield
    await runner.cleanup()
