"""The action bus on Redis Streams: used when no Service Bus is configured (local stack, tests)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import ValidationError

from action_bus.ports import DeadMessage
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest, ActionResult
from agent_contracts.redis_connection import AnyRedis
from observability.propagation import to_application_properties

log = logging.getLogger(__name__)

ACTIONS_GROUP = "function-app"
UPDATES_GROUP = "gateway"


def request_properties(request: ActionRequest) -> dict[str, str]:
    """What travels beside the body: content type, action name, W3C trace context."""
    properties = {
        "content_type": "application/json",
        "action_name": request.name,
        "conversation_id": request.conversation_id,
    }
    properties.update(to_application_properties(request.trace_context))
    return properties


def update_message_id(update: ActionResult) -> str:
    """One id per status change, so a re-sent update is dropped and a new one never is."""
    return f"{update.id}:{update.replay_count}:{update.status.value}:{update.attempts}"


class RedisStreamsActionBus:
    """ActionBus adapter: XADD to the actions stream, deduplicated by the request's message id."""

    def __init__(self, redis: AnyRedis, queue: str = "actions") -> None:
        self.queue = StreamQueue(redis, queue, ACTIONS_GROUP)

    async def publish(self, request: ActionRequest) -> None:
        await self.queue.send(request.message_id, request.to_json(), request_properties(request))

    async def close(self) -> None:
        return None


class RedisMessageScheduler:
    """MessageScheduler adapter: the local broker's scheduled enqueue on the actions stream."""

    def __init__(self, redis: AnyRedis, queue: str = "actions") -> None:
        self.queue = StreamQueue(redis, queue, ACTIONS_GROUP)

    async def schedule(
        self, message_id: str, body: str, properties: dict[str, str], enqueue_at: datetime
    ) -> None:
        await self.queue.send(message_id, body, properties, enqueue_at=enqueue_at.timestamp())

    async def close(self) -> None:
        return None


class RedisUpdateSink:
    """ActionUpdateSink adapter: each status change appended to the updates stream."""

    def __init__(self, redis: AnyRedis, queue: str = "action-updates") -> None:
        self.queue = StreamQueue(redis, queue, UPDATES_GROUP)

    async def publish_update(self, update: ActionResult) -> None:
        await self.queue.send(
            update_message_id(update),
            update.to_json(),
            {"content_type": "application/json", "status": update.status.value},
        )

    async def close(self) -> None:
        return None


class RedisUpdateSource:
    """ActionUpdateSource adapter: gateway pods share one consumer group, so each update goes to one pod."""

    def __init__(
        self,
        redis: AnyRedis,
        queue: str = "action-updates",
        *,
        consumer: str | None = None,
        max_deliveries: int = 10,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.queue = StreamQueue(
            redis, queue, UPDATES_GROUP, consumer, max_deliveries=max_deliveries, claim_idle_ms=claim_idle_ms
        )

    async def next_updates(self, max_count: int = 50, wait_s: float = 5.0) -> list[tuple[str, ActionResult]]:
        updates: list[tuple[str, ActionResult]] = []
        for delivery in await self.queue.receive(max_count, wait_s):
            try:
                updates.append((delivery.delivery_id, ActionResult.model_validate_json(delivery.body)))
            except ValidationError as exc:
                await self.queue.dead_letter(delivery, f"invalid ActionResult: {exc.error_count()} errors")
        return updates

    async def ack(self, delivery_id: str) -> None:
        await self.queue.ack(delivery_id)

    async def close(self) -> None:
        return None


class StreamDeadLetters:
    """BusDeadLetters adapter: the local broker's dead-letter stream of the actions queue."""

    def __init__(self, redis: AnyRedis, queue: str = "actions") -> None:
        self.queue = StreamQueue(redis, queue, ACTIONS_GROUP)

    async def peek(self, max_count: int = 100) -> list[DeadMessage]:
        return [
            DeadMessage(
                id=entry.dead_id,
                message_id=entry.message_id,
                body=entry.body,
                reason=entry.reason,
                description=entry.description,
                delivery_count=entry.delivery_count,
                dead_lettered_at=datetime.fromtimestamp(entry.dead_lettered_at, UTC),
                properties=entry.properties,
            )
            for entry in await self.queue.dead_entries(max_count)
        ]

    async def replay(self, dead_id: str) -> bool:
        return await self.queue.requeue_dead(dead_id)

    async def purge(self) -> int:
        return await self.queue.purge_dead()

    async def close(self) -> None:
        return None
