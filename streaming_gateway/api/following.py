"""Following a conversation's log for one client stream, the same way on every transport."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from streaming_gateway.keys import engine_key, settings_key
from streaming_gateway.state.client_streams import StreamHandle
from streaming_gateway.state.log_follower import Follower


@contextlib.asynccontextmanager
async def follow(app: web.Application, handle: StreamHandle, conversation_id: str) -> AsyncIterator[Follower]:
    """A follower of `conversation_id` for the open stream `handle` (it stops when the stream is
    asked to stop), holding its watcher lease while the block runs."""
    engine = app[engine_key]
    follower = Follower(
        engine.log,
        engine.answers,
        conversation_id,
        heartbeat_s=app[settings_key].heartbeat_s,
        stop=handle.stop,
    )
    async with follower:
        yield follower
