"""The tickets service: routes, the idempotency store and the control endpoints."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sample_backend.faults import FaultInjector, FaultRule

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


class NewTicket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    priority: str = Field(default="normal", pattern="^(low|normal|high|urgent)$")


@dataclass
class State:
    faults: FaultInjector
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Idempotency key -> (status, body) of the first successful answer.
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    key_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    requests: int = 0
    replayed: int = 0
    #: Headers of the latest requests (trace context, idempotency key), for tests and demos.
    recent: list[dict[str, str]] = field(default_factory=list)


STATE = web.AppKey("state", State)
BODY = web.ResponseKey("body", dict)


@web.middleware
async def faults_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path.startswith("/_control"):
        passed: web.StreamResponse = await handler(request)
        return passed
    state.requests += 1
    state.recent = [
        *state.recent[-19:],
        {
            name: request.headers[name]
            for name in ("traceparent", IDEMPOTENCY_HEADER)
            if name in request.headers
        },
    ]
    rule = state.faults.take(request, "before")
    if rule is not None:
        response = await state.faults.apply(rule)
        if response is not None:
            return response
    handled: web.StreamResponse = await handler(request)
    rule = state.faults.take(request, "after")
    if rule is not None:
        injected = await state.faults.apply(rule)
        if injected is not None:
            return injected
    return handled


async def create_ticket(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return await _create(request, state)
    lock = state.key_locks.setdefault(key, asyncio.Lock())
    async with lock:  # a concurrent repeat waits for the first and gets its answer
        if key in state.answers:
            state.replayed += 1
            status, body = state.answers[key]
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        response = await _create(request, state)
        if 200 <= response.status < 300:
            state.answers[key] = (response.status, response[BODY])
        return response


async def _create(request: web.Request, state: State) -> web.Response:
    try:
        ticket = NewTicket.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        return web.json_response({"error": "invalid ticket", "detail": str(exc)[:500]}, status=422)
    ticket_id = f"T-{uuid.uuid4().hex[:8].upper()}"
    body = {"ticketId": ticket_id, "status": "open", **ticket.model_dump()}
    state.tickets[ticket_id] = body
    log.info("created ticket %s (%s)", ticket_id, ticket.title)
    response = web.json_response(body, status=201)
    response[BODY] = body
    return response


async def get_ticket(request: web.Request) -> web.Response:
    ticket = request.app[STATE].tickets.get(request.match_info["ticket_id"])
    if ticket is None:
        return web.json_response({"error": "no such ticket"}, status=404)
    return web.json_response(ticket)


async def put_faults(request: web.Request) -> web.Response:
    try:
        data = await request.json()
        rules = [FaultRule(**rule) for rule in data.get("rules", [])]
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"invalid rules: {exc}"}, status=400)
    request.app[STATE].faults.rules = rules
    return web.json_response({"rules": len(rules)})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "requests": state.requests,
            "tickets": len(state.tickets),
            "replayed": state.replayed,
            "faults_injected": state.faults.injected,
            "recent": state.recent,
            "faults_left": state.faults.snapshot(),
        }
    )


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.rules.clear()
    state.tickets.clear()
    state.answers.clear()
    state.recent.clear()
    state.requests = state.replayed = state.faults.injected = 0
    return web.json_response({"reset": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_backend_app(faults: FaultInjector | None = None) -> web.Application:
    app = web.Application(middlewares=[faults_middleware])
    app[STATE] = State(faults=faults or FaultInjector())
    app.router.add_post("/tickets", create_ticket)
    app.router.add_get("/tickets/{ticket_id}", get_ticket)
    app.router.add_get("/healthz", healthz)
    app.router.add_put("/_control/faults", put_faults)
    app.router.add_get("/_control/stats", stats)
    app.router.add_post("/_control/reset", reset)
    return app
