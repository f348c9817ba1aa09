"""Conversations of the calling user: create, list (newest first, paginated), read, delete, cancel."""

from __future__ import annotations

import logging

from aiohttp import web

from streaming_gateway.api.middlewares import principal
from streaming_gateway.api.request_models import ConversationIn, read_body
from streaming_gateway.errors import InvalidInput
from streaming_gateway.keys import catalog_key, engine_key, settings_key
from streaming_gateway.state.conversation_store import new_id

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_PAGE = 100


@routes.post("/v1/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    data = await read_body(
        request, ConversationIn, max_bytes=request.app[settings_key].max_body_bytes, required=False
    )
    catalog, caller = request.app[catalog_key], principal(request)
    cid = new_id("conv")
    if data.agent_config_version:
        config = await catalog.pin(caller, data.agent_config_version, cid)
    else:
        config = await catalog.for_new_conversation(caller, cid)
    # A version the client named is pinned (an operator, an evaluation run): its traffic is not
    # the rollout's sample, whichever version the split would have picked.
    conversation = await request.app[engine_key].store.create(
        caller.user_id, config.version, data.title, cid=cid, pinned=bool(data.agent_config_version)
    )
    return web.json_response(
        conversation.public(),
        status=201,
        headers={"Location": f"/v1/conversations/{conversation.id}", "X-Conversation-Id": conversation.id},
    )


@routes.get("/v1/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 20, 1, MAX_PAGE)
    cursor = request.query.get("cursor")
    before = _int_query(request, "cursor", 0, 0, 2**62) if cursor is not None else None
    page, next_cursor = await request.app[engine_key].store.page(principal(request).user_id, limit, before)
    return web.json_response(
        {
            "data": [c.public() for c in page],
            "next_cursor": str(next_cursor) if next_cursor is not None else None,
        }
    )


@routes.get("/v1/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    store = request.app[engine_key].store
    conversation = await store.owned(request.match_info["conversation_id"], principal(request).user_id)
    messages = await store.messages(conversation.id)
    return web.json_response({**conversation.public(), "messages": messages})


@routes.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    conversation = await engine.store.owned(request.match_info["conversation_id"], principal(request).user_id)
    engine.answers.cancel(conversation.id, "deleted")
    await engine.store.delete(conversation)
    return web.Response(status=204)


@routes.post("/v1/conversations/{conversation_id}/cancel")
async def cancel_answer(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    conversation = await engine.store.owned(request.match_info["conversation_id"], principal(request).user_id)
    cancelled = await engine.cancel(conversation)
    return web.json_response({"cancelled": cancelled}, status=202 if cancelled else 200)


def _int_query(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{name} must be between {minimum} and {maximum}", field=name)
    return value
