"""User feedback on an answer, counted per agent config version: POST .../feedback.

    POST /v1/conversations/{conversation_id}/feedback
    {"message_id": "msg_...", "rating": 1-5, "comment": "optional, at most 2000 characters"}

The message must be an assistant message of the caller's conversation; its own recorded config
version (not the conversation's current one) gets the rating. Rating the same message again
replaces the earlier rating. 201 for a new rating, 200 for a replaced one. A rating in a pinned
conversation (its version named by the client) is counted apart, outside the canary's samples.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from observability.online import MAX_COMMENT_CHARS, MAX_RATING, MIN_RATING
from streaming_gateway.api.middlewares import principal
from streaming_gateway.api.request_models import read_body
from streaming_gateway.errors import NotFound
from streaming_gateway.keys import engine_key, metrics_key, online_key

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_FEEDBACK_BODY_BYTES = 16 * 1024


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(min_length=1, max_length=128)
    rating: StrictInt = Field(ge=MIN_RATING, le=MAX_RATING)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


@routes.post("/v1/conversations/{conversation_id}/feedback")
async def post_feedback(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    conversation = await engine.store.owned(request.match_info["conversation_id"], principal(request).user_id)
    body = await read_body(request, FeedbackIn, max_bytes=MAX_FEEDBACK_BODY_BYTES)
    message = next(
        (
            m
            for m in await engine.store.messages(conversation.id)
            if m.get("id") == body.message_id and m.get("role") == "assistant"
        ),
        None,
    )
    if message is None:
        raise NotFound(
            f"no assistant message {body.message_id!r} in this conversation",
            code="message_not_found",
            field="message_id",
        )
    version = message.get("agent_config_version") or conversation.agent_config_version
    created = await request.app[online_key].record_feedback(
        version,
        conversation_id=conversation.id,
        message_id=body.message_id,
        rating=body.rating,
        comment=body.comment,
        pinned=bool(conversation.pinned),
    )
    metrics = request.app[metrics_key]
    if created:
        metrics.feedback.labels(metrics.version(version), str(body.rating)).inc()
    log.info("feedback %d on %s (%s)", body.rating, body.message_id, version)
    return web.json_response(
        {
            "conversation_id": conversation.id,
            "message_id": body.message_id,
            "rating": body.rating,
            "agent_config_version": version,
            "replaced": not created,
        },
        status=201 if created else 200,
    )
