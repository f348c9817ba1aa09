"""Middlewares: errors to JSON (one place), then authentication and the per-user request rate."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from action_bus.ports import ActionBusError
from streaming_gateway.auth.authenticator import Principal, bearer_token
from streaming_gateway.errors import GatewayError, RateLimited, Unauthorized, as_gateway_error
from streaming_gateway.keys import (
    authenticator_key,
    metrics_key,
    rate_limiter_key,
    settings_key,
    ws_tickets_key,
)

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
WS_PATH = "/v1/ws"


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def error_response(error: GatewayError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (GatewayError, ActionBusError, RedisError, OSError) as exc:
        if isinstance(exc, ConnectionResetError):
            raise  # the client went away: nothing to answer
        error = as_gateway_error(exc)
        if error is not exc:
            log.warning("%s %s: %s: %s", request.method, request.path, error.code, exc)
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        code = "payload_too_large" if exc.status == 413 else exc.reason.lower().replace(" ", "_")
        body = {
            "error": {
                "message": exc.reason if exc.status != 413 else exc.text or exc.reason,
                "type": kind,
                "code": code,
                "param": None,
            }
        }
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return web.json_response(body, status=exc.status, headers=headers)


async def authenticate(request: web.Request) -> Principal:
    """The bearer token; on the WebSocket, which browsers cannot give headers, a ticket from
    `POST /v1/ws/tickets` instead, and the JWT in `?access_token=` only if GATEWAY_WS_QUERY_TOKEN."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and request.path == WS_PATH:
        ticket = request.query.get("ticket")
        if ticket is not None:
            return await request.app[ws_tickets_key].redeem(ticket)
        token = request.query.get("access_token")
        if token is not None and not request.app[settings_key].ws_query_token:
            raise Unauthorized(
                "a token in the URL is not accepted; open the WebSocket with ?ticket= from "
                "POST /v1/ws/tickets",
                reason="query_token",
            )
    return await request.app[authenticator_key].authenticate(token)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only the API under /v1/ needs a token: health, metrics, the API description and the web
    client are open."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    metrics = request.app[metrics_key]
    try:
        request[PRINCIPAL] = await authenticate(request)
    except Unauthorized as exc:
        metrics.auth_failures.labels(exc.reason).inc()
        raise
    try:
        await request.app[rate_limiter_key].hit(request[PRINCIPAL].user_id)
    except RateLimited as exc:
        metrics.rate_limit_rejections.labels(exc.limit).inc()
        raise
    return await handler(request)
