"""The background consumer of action status updates: any pod may take any update.

Each update becomes an `action_status` event in its conversation's log and, when it completes a
step, the model's continuation. An update is acked only once handled; if handling fails (Redis
down) it stays unacked and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from action_bus.ports import ActionBusError, ActionUpdateSource
from streaming_gateway.chat.engine import ChatEngine
from streaming_gateway.errors import GatewayError

log = logging.getLogger(__name__)

BATCH = 50
WAIT_S = 1.0
MAX_BACKOFF_S = 10.0


async def consume_updates(source: ActionUpdateSource, engine: ChatEngine, stop: asyncio.Event) -> None:
    backoff = 0.2
    while not stop.is_set():
        try:
            batch = await source.next_updates(BATCH, WAIT_S)
            for delivery_id, update in batch:
                await engine.on_action_update(update)
                await source.ack(delivery_id)
            backoff = 0.2
        except (RedisError, OSError, ActionBusError, GatewayError) as exc:
            log.warning("action updates: %s; retrying in %.1f s", exc, backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
