"""The WebSocket API: `GET /v1/ws`, JSON frames both ways.

Client frames: `{"type": "message", "content", "conversation_id"?}`, `{"type": "cancel"}`,
`{"type": "resume", "conversation_id", "after"}`, `{"type": "ping"}`; each counts as one request
against the user's rate limit. Server frames: the same event JSON as SSE, plus control frames
without an id: `ack` (a message or resume was taken, with the id to resume after), `pong`, and
`rejected` (code, message, param, status, kind, and `retry_after` when rate limited; the
connection stays open). One connection follows one conversation at a time. On shutdown the
server closes with 1012 (service restart) once the client has every event; it resumes after
the last id it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from redis.exceptions import RedisError

from action_bus.ports import ActionBusError
from streaming_gateway.api.following import follow, start_turn
from streaming_gateway.api.middlewares import principal
from streaming_gateway.api.request_models import check_length, check_metadata, validation_error
from streaming_gateway.chat.engine import ChatEngine
from streaming_gateway.errors import GatewayError, InvalidInput, RateLimited, as_gateway_error
from streaming_gateway.keys import (
    catalog_key,
    engine_key,
    metrics_key,
    rate_limiter_key,
    settings_key,
    streams_key,
    ws_tickets_key,
)
from streaming_gateway.state.client_streams import StreamHandle
from streaming_gateway.state.conversation_store import new_id
from streaming_gateway.state.log_follower import Follower
from streaming_gateway.state.stream_log import resumable_ahead

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendFrame(_Frame):
    type: Literal["message"]
    content: str = Field(min_length=1)
    conversation_id: str | None = Field(default=None, max_length=128)
    metadata: dict[str, str] | None = None  # bounded by check_metadata


class CancelFrame(_Frame):
    type: Literal["cancel"]
    conversation_id: str | None = Field(default=None, max_length=128)


class ResumeFrame(_Frame):
    type: Literal["resume"]
    conversation_id: str = Field(min_length=1, max_length=128)
    after: int = Field(default=0, ge=0)


class PingFrame(_Frame):
    type: Literal["ping"]


ClientFrame = Annotated[SendFrame | CancelFrame | ResumeFrame | PingFrame, Field(discriminator="type")]
_frames: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class WsSession:
    def __init__(self, request: web.Request, ws: web.WebSocketResponse, handle: StreamHandle) -> None:
        self.request = request
        self.ws = ws
        self.handle = handle
        self.user_id = principal(request).user_id
        self.engine: ChatEngine = request.app[engine_key]
        self.conversation_id: str | None = None
        self._following: asyncio.Task[None] | None = None
        self._follower: Follower | None = None
        #: Holds the follower's watcher lease until the connection follows something else or closes.
        self._following_cm: contextlib.AsyncExitStack | None = None

    async def count_frame(self) -> None:
        """Every client frame (message, resume, cancel, ping, even an invalid one) is one request
        against the user's GATEWAY_RATE_LIMIT_PER_MINUTE, counted before it is read."""
        app = self.request.app
        try:
            await app[rate_limiter_key].hit(self.user_id)
        except RateLimited as exc:
            app[metrics_key].rate_limit_rejections.labels(exc.limit).inc()
            raise

    async def handle_text(self, text: str) -> None:
        try:
            frame = _frames.validate_json(text)
        except ValidationError as exc:
            raise validation_error(exc) from None
        if isinstance(frame, PingFrame):
            await self.ws.send_json({"type": "pong"})
        elif isinstance(frame, SendFrame):
            await self._send(frame)
        elif isinstance(frame, CancelFrame):
            cid = frame.conversation_id or self.conversation_id
            if cid is None:
                raise InvalidInput("no conversation to cancel", field="conversation_id")
            conversation = await self.engine.store.owned(cid, self.user_id)
            await self.ws.send_json(
                {
                    "type": "cancelled",
                    "conversation_id": cid,
                    "cancelled": await self.engine.cancel(conversation),
                }
            )
        else:
            conversation = await self.engine.store.owned(frame.conversation_id, self.user_id)
            ahead = resumable_ahead(conversation.ids_ahead, self.request.app[settings_key].token_batch_max)
            if frame.after > conversation.last_event_id + ahead:
                raise InvalidInput(
                    f"after {frame.after} is not an event id of this conversation", field="after"
                )
            follower = await self._follow_new(conversation.id)
            await self.ws.send_json({"type": "ack", "conversation_id": conversation.id, "after": frame.after})
            self._start_following(follower, frame.after)

    async def _send(self, frame: SendFrame) -> None:
        app = self.request.app
        check_length(frame.content, app[settings_key].max_message_chars, "content")
        check_metadata(frame.metadata, app[settings_key])
        store = self.engine.store
        caller = principal(self.request)
        if frame.conversation_id:
            conversation = await store.owned(frame.conversation_id, self.user_id)
            await app[catalog_key].check_turn(caller, conversation.agent_config_version)
        else:
            cid = new_id("conv")
            config = await app[catalog_key].for_new_conversation(caller, cid)
            # Written by the turn's script, its index entry by the user's beside it (state/turn_setup.py).
            conversation = store.new(self.user_id, config.version, cid=cid)
        message: dict[str, Any] = {"role": "user", "content": frame.content}
        if frame.metadata:
            message["metadata"] = frame.metadata
        follower = await self._follow_new(conversation.id, turn_from=conversation.last_event_id)
        try:
            after = await start_turn(
                self.request.app, follower, conversation, [message], create=not frame.conversation_id
            )
        except GatewayError:
            await self._stop_following()
            raise
        await self.ws.send_json({"type": "ack", "conversation_id": conversation.id, "after": after})
        self._start_following(follower, after)

    async def _follow_new(self, cid: str, *, turn_from: int | None = None) -> Follower:
        await self._stop_following()
        self.conversation_id = cid
        following = contextlib.AsyncExitStack()
        follower = await following.enter_async_context(
            follow(self.request.app, self.handle, cid, turn_from=turn_from)
        )
        self._follower, self._following_cm = follower, following
        return follower

    def _start_following(self, follower: Follower, after: int) -> None:
        self._following = asyncio.create_task(self._forward(follower, after))

    async def _forward(self, follower: Follower, after: int) -> None:
        try:
            async for entry in follower.entries(after, until_end=False):
                if entry is not None:  # keep-alive is the WebSocket's own ping
                    await self.ws.send_str(entry.data)
        except ConnectionResetError:
            pass
        except RedisError as exc:
            log.warning("websocket follow of %s failed: Redis: %s", follower.conversation_id, exc)
            await self.ws.close(
                code=WSCloseCode.TRY_AGAIN_LATER, message=f"resume after {follower.last_id}".encode()
            )

    async def _stop_following(self) -> None:
        task, following = self._following, self._following_cm
        self._following, self._follower, self._following_cm = None, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if following is not None:
            await following.aclose()

    async def close(self) -> None:
        await self._stop_following()

    async def end_for_shutdown(self) -> None:
        """Let the follower flush what is in the log, then close with 1012 naming the resume point."""
        await self.handle.stop.wait()
        if self._following is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._following), 5)
        last = self._follower.last_id if self._follower is not None else 0
        await self.ws.close(code=WSCloseCode.SERVICE_RESTART, message=f"resume after {last}".encode())


@routes.post("/v1/ws/tickets")
async def issue_ticket(request: web.Request) -> web.Response:
    """A single-use ticket that opens one WebSocket as the caller: `/v1/ws?ticket=<ticket>`."""
    ticket, ttl = await request.app[ws_tickets_key].issue(principal(request))
    return web.json_response(
        {"ticket": ticket, "expires_in": ttl}, status=201, headers={"Cache-Control": "no-store"}
    )


@routes.get("/v1/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[settings_key]
    async with request.app[streams_key].open("ws", principal(request).user_id) as handle:
        ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s, max_msg_size=settings.max_body_bytes)
        await ws.prepare(request)
        session = WsSession(request, ws, handle)
        shutdown_watch = asyncio.create_task(session.end_for_shutdown())
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    await session.count_frame()
                    if msg.type == WSMsgType.BINARY:
                        raise InvalidInput("frames are JSON text", code="invalid_frame")
                    await session.handle_text(msg.data)
                except (GatewayError, ActionBusError, RedisError) as exc:
                    error = as_gateway_error(exc)
                    if error is not exc:
                        log.warning("websocket frame failed: %s: %s", error.code, exc)
                    await ws.send_json(_rejected(error))
        except ConnectionResetError:
            pass
        finally:
            shutdown_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shutdown_watch
            await session.close()
    return ws


def _rejected(exc: GatewayError) -> dict[str, Any]:
    error = exc.body()["error"]
    frame: dict[str, Any] = {**error, "type": "rejected", "kind": error["type"], "status": exc.status}
    if isinstance(exc, RateLimited):
        frame["retry_after"] = exc.retry_after_s
    return frame
