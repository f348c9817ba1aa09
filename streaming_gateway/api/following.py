"""Following a conversation's log for one client stream, the same way on every transport."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streaming_gateway.chat.overrides import Overrides
from streaming_gateway.keys import engine_key, settings_key, streams_key
from streaming_gateway.state.client_streams import StreamHandle
from streaming_gateway.state.conversation_store import Conversation
from streaming_gateway.state.limits import PendingCount, UserStep
from streaming_gateway.state.log_follower import Follower


def follow(
    app: web.Application, handle: StreamHandle, conversation_id: str, *, turn_from: int | None = None
) -> Follower:
    """A follower of `conversation_id` for the open stream `handle` (it stops when the stream is
    asked to stop), to use as `async with`: it holds its watcher lease while the block runs. With
    `turn_from` (the conversation's last event id as the caller knows it) it is for a turn started
    with `start_turn` below, which takes the lease in the turn's own round trip. The follower is its
    own context manager (no generator-based one per open stream: thousands of idle streams each
    keep theirs for as long as they are open)."""
    engine = app[engine_key]
    return Follower(
        engine.log,
        engine.answers,
        conversation_id,
        heartbeat_s=app[settings_key].heartbeat_s,
        stop=handle.stop,
        turn_from=turn_from,
    )


async def start_turn(
    app: web.Application,
    follower: Follower,
    conversation: Conversation,
    messages: list[dict[str, Any]],
    overrides: Overrides | None = None,
    *,
    handle: StreamHandle | None = None,
    count: PendingCount | None = None,
    create: bool = False,
) -> int:
    """Start the conversation's next turn followed by `follower` (opened with `turn_from`); returns
    the log id its answer follows. The turn's setup also takes, in the user's one script beside the
    conversation's (state/turn_setup.py): the request's `count` against the rate limit (the
    middleware's PENDING_COUNT), the slot of `handle` (opened with `slot_by_turn`), and with `create`
    the new `conversation` (from `store.new`), written by the turn's own script."""
    slot = handle is not None and handle.slot == "pending"
    user = None
    if slot or count is not None or create:
        user = UserStep(
            count=count,
            stream_id=handle.stream_id if slot and handle is not None else None,
            new_conversation=conversation.id if create else None,
        )
    after = await app[engine_key].start_turn(
        conversation, messages, overrides, watcher=follower.lease_for_turn(), user=user, create=create
    )
    if slot and handle is not None:
        app[streams_key].slot_taken(handle)
    follower.turn_started(after)
    return after
