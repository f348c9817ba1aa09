"""Middlewares: errors to JSON (one place), then authentication and the per-user request rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

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
from streaming_gateway.state.limits import PendingCount

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
#: A request whose count against the rate limit its turn's setup makes (`counted_by_turn`).
PENDING_COUNT = web.RequestKey("pending_count", PendingCount)
WS_PATH = "/v1/ws"

_COUNTED_BY_TURN: set[Callable[..., object]] = set()


def counted_by_turn(handler: Handler) -> Handler:
    """A handler that starts a turn: its request is counted against the rate limit in the turn's
    user script (state/limits.py UserGate), not by a command of its own before the handler. Every
    request still counts, and 429 still comes first: a handler ending before its setup ran is
    counted then, and a 429 from that count replaces its answer."""
    _COUNTED_BY_TURN.add(handler)
    return handler


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
    user_id = request[PRINCIPAL].user_id
    if request.match_info.handler not in _COUNTED_BY_TURN:
        await _count(request, user_id)
        return await handler(request)
    await _count(request, user_id, remembered_only=True)
    pending = request[PENDING_COUNT] = PendingCount()
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        if not pending.counted:  # the client left: still one request
            with contextlib.suppress(GatewayError, RedisError, OSError):
                await asyncio.shield(_count(request, user_id))
        raise
    except BaseException:
        if not pending.counted:
            await _count(request, user_id)  # a 429 here is the answer, as if counted first
        raise
    if not pending.counted:
        await _count(request, user_id)
    return response


async def _count(request: web.Request, user_id: str, *, remembered_only: bool = False) -> None:
    """Count the request against the user's rate limit (or, `remembered_only`, refuse it if this
    pod knows the user is over the limit in this window, without asking Redis)."""
    limiter = request.app[rate_limiter_key]
    try:
        if remembered_only:
            limiter.check_remembered(user_id)
        else:
            await limiter.hit(user_id)
    except RateLimited as exc:
        request.app[metrics_key].rate_limit_rejections.labels(exc.limit).inc()
        raise
