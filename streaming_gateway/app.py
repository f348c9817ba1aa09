"""The app factory: settings, keys, cleanup contexts, routes, middlewares, in that order. No I/O."""

from __future__ import annotations

from aiohttp import web

from observability.http_server import tracing_middleware
from streaming_gateway.api import (
    chat_completions,
    conversations,
    feedback,
    health,
    messages,
    models,
    openapi,
    web_client,
    websocket,
)
from streaming_gateway.api.middlewares import auth_middleware, error_middleware
from streaming_gateway.contexts import (
    action_tasks_ctx,
    auth_ctx,
    bus_ctx,
    canary_ctx,
    config_ctx,
    core_ctx,
    llm_ctx,
    online_ctx,
    redis_ctx,
)
from streaming_gateway.keys import metrics_key, settings_key
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from streaming_gateway.shutdown import on_shutdown


def create_app(settings: Settings, metrics: GatewayMetrics | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[settings_key] = settings
    app[metrics_key] = metrics or GatewayMetrics()
    app.cleanup_ctx.extend(
        [
            health.metrics_listener_ctx,
            redis_ctx,
            config_ctx,
            auth_ctx,
            llm_ctx,
            online_ctx,
            bus_ctx,
            core_ctx,
            action_tasks_ctx,
            canary_ctx,
        ]
    )
    app.on_shutdown.append(on_shutdown)
    app.on_response_prepare.append(web_client.add_page_headers)
    for module in (
        health,
        openapi,
        conversations,
        messages,
        feedback,
        chat_completions,
        models,
        websocket,
        web_client,
    ):
        app.add_routes(module.routes)
    if not settings.metrics_port:
        app.router.add_get("/metrics", health.metrics)
    # Tracing outermost: its span covers auth and errors, and records the status the client got.
    app.middlewares.extend([tracing_middleware, error_middleware, auth_middleware])
    return app
