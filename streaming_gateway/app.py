"""The app factory: settings, keys, cleanup contexts, routes, middlewares, in that order. No I/O."""

from __future__ import annotations

from aiohttp import web

from streaming_gateway import health
from streaming_gateway.contexts import redis_ctx
from streaming_gateway.keys import settings_key
from streaming_gateway.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[settings_key] = settings
    app.cleanup_ctx.append(redis_ctx)
    app.add_routes(health.routes)
    return app
