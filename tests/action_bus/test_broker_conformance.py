"""One conformance suite for the actions queue's semantics, run against the local broker (Redis
Streams) here and against a real Service Bus queue wherever SERVICEBUS_CONNECTION_STRING and
SERVICEBUS_CONFORMANCE_QUEUE name one (a queue with duplicate detection, MaxDeliveryCount 3 and a
5-second lock). Where it matters to the pipeline, both must answer alike: abandon redelivers at once
with the count raised, MaxDeliveryCount moves a message to the dead-letter subqueue with the reason
MaxDeliveryCountExceeded, a message id seen within the window is dropped, a scheduled message stays
out of sight until due, a renewed lock keeps a message from other receivers and an expired one does
not, and a receiver that lost its lock cannot complete."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from action_bus.redis_streams import StreamQueue
from agent_contracts.redis_connection import AnyRedis, connect
from tests.fixtures.services import ON_BOTH
from tests.polling import eventually

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH

MAX_DELIVERIES = 3


@dataclass
class Received:
    handle: Any
    message_id: str
    body: str
    delivery_count: int


class Broker(Protocol):
    #: The queue's lock duration (Service Bus: at least 5 s; the local broker's is set short here).
    lock_s: float

    async def send(self, message_id: str, body: str, enqueue_at: float | None = None) -> None: ...
    async def receive(self, receiver: int, max_count: int, wait_s: float) -> list[Received]: ...
    async def complete(self, receiver: int, message: Received) -> bool: ...
    async def abandon(self, receiver: int, message: Received) -> None: ...
    async def renew(self, receiver: int, message: Received) -> None: ...
    async def dead(self) -> list[tuple[str, str]]: ...


class LocalBroker:
    lock_s = 1.0

    def __init__(self, redis: AnyRedis, name: str) -> None:
        self.queues = [
            StreamQueue(
                redis,
                name,
                "g",
                f"r{i}",
                max_deliveries=MAX_DELIVERIES,
                claim_idle_ms=int(self.lock_s * 1000),
            )
            for i in range(2)
        ]

    async def send(self, message_id: str, body: str, enqueue_at: float | None = None) -> None:
        await self.queues[0].send(message_id, body, enqueue_at=enqueue_at)

    async def receive(self, receiver: int, max_count: int, wait_s: float) -> list[Received]:
        return [
            Received(d.delivery_id, d.message_id, d.body, d.delivery_count)
            for d in await self.queues[receiver].receive(max_count, wait_s)
        ]

    async def complete(self, receiver: int, message: Received) -> bool:
        return await self.queues[receiver].ack(message.handle)

    async def abandon(self, receiver: int, message: Received) -> None:
        await self.queues[receiver].abandon(message.handle)

    async def renew(self, receiver: int, message: Received) -> None:
        await self.queues[receiver].touch([message.handle])

    async def dead(self) -> list[tuple[str, str]]:
        return [(e.message_id, e.reason) for e in await self.queues[0].dead_entries()]


class ServiceBusBroker:
    """The same operations on a real queue through azure-servicebus (peek-lock receivers)."""

    lock_s = 5.0

    def __init__(self, client: Any, queue: str) -> None:
        from azure.servicebus import ServiceBusSubQueue

        self.client = client
        self.sender = client.get_queue_sender(queue)
        self.receivers = [client.get_queue_receiver(queue) for _ in range(2)]
        self.dlq = client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        self.sent: set[str] = set()

    async def send(self, message_id: str, body: str, enqueue_at: float | None = None) -> None:
        from datetime import UTC, datetime

        from azure.servicebus import ServiceBusMessage

        when = datetime.fromtimestamp(enqueue_at, UTC) if enqueue_at else None
        await self.sender.send_messages(
            ServiceBusMessage(body, message_id=message_id, scheduled_enqueue_time_utc=when)
        )
        self.sent.add(message_id)

    async def receive(self, receiver: int, max_count: int, wait_s: float) -> list[Received]:
        batch = await self.receivers[receiver].receive_messages(
            max_message_count=max_count, max_wait_time=wait_s
        )
        return [Received(m, str(m.message_id), str(m), int(m.delivery_count or 0)) for m in batch]

    async def complete(self, receiver: int, message: Received) -> bool:
        from azure.servicebus.exceptions import MessageLockLostError

        try:
            await self.receivers[receiver].complete_message(message.handle)
        except MessageLockLostError:
            return False
        return True

    async def abandon(self, receiver: int, message: Received) -> None:
        await self.receivers[receiver].abandon_message(message.handle)

    async def renew(self, receiver: int, message: Received) -> None:
        await self.receivers[receiver].renew_message_lock(message.handle)

    async def dead(self) -> list[tuple[str, str]]:
        peeked = await self.dlq.peek_messages(max_message_count=100)
        return [
            (str(m.message_id), str(m.dead_letter_reason)) for m in peeked if str(m.message_id) in self.sent
        ]


@pytest.fixture(params=["local", "servicebus"])
async def broker(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Broker]:
    if request.param == "local":
        redis = await connect(redis_url, decode_responses=True)
        yield LocalBroker(redis, f"conformance-{uuid.uuid4().hex[:8]}")
        await redis.aclose()
        return
    connection = os.environ.get("SERVICEBUS_CONNECTION_STRING")
    queue = os.environ.get("SERVICEBUS_CONFORMANCE_QUEUE")
    if not connection or not queue:
        pytest.skip(
            "Service Bus half NOT RUN: SERVICEBUS_CONNECTION_STRING and SERVICEBUS_CONFORMANCE_QUEUE are not set "
            "(no Service Bus namespace or emulator can run on this machine); the local half ran"
        )
    from azure.servicebus.aio import ServiceBusClient

    async with ServiceBusClient.from_connection_string(connection) as client:
        yield ServiceBusBroker(client, queue)


async def receive_one(broker: Broker, receiver: int = 0, wait_s: float = 10.0) -> Received:
    got = await eventually(lambda: broker.receive(receiver, 1, 1.0), "a message to receive", timeout=wait_s)
    return got[0]


def mid() -> str:
    return f"m-{uuid.uuid4().hex}"


async def test_abandon_redelivers_at_once_with_the_count_raised(broker: Broker) -> None:
    """An abandoned message comes straight back (well inside the lock duration) with delivery count + 1."""
    message_id = mid()
    await broker.send(message_id, "a")
    first = await receive_one(broker)
    started = time.monotonic()
    await broker.abandon(0, first)
    again = await receive_one(broker)
    assert (again.message_id, again.delivery_count) == (message_id, first.delivery_count + 1)
    assert time.monotonic() - started < broker.lock_s
    assert await broker.complete(0, again)


async def test_max_delivery_count_dead_letters_with_the_reason(broker: Broker) -> None:
    """Abandoned MAX_DELIVERIES times, the message is in the dead-letter subqueue as MaxDeliveryCountExceeded."""
    message_id = mid()
    await broker.send(message_id, "poison")
    for _ in range(MAX_DELIVERIES):
        await broker.abandon(0, await receive_one(broker))
    assert await broker.receive(0, 1, 1.0) == []
    assert (message_id, "MaxDeliveryCountExceeded") in await broker.dead()


async def test_duplicate_message_id_is_dropped(broker: Broker) -> None:
    """The same message id sent twice within the window is delivered once."""
    message_id = mid()
    await broker.send(message_id, "once")
    await broker.send(message_id, "twice")
    first = await receive_one(broker)
    assert first.body == "once" and await broker.complete(0, first)
    assert await broker.receive(0, 1, 2.0) == []


async def test_scheduled_message_waits_until_due(broker: Broker) -> None:
    """A message scheduled 3 s ahead is not delivered before then, and is after."""
    message_id = mid()
    due = time.time() + 3
    await broker.send(message_id, "later", enqueue_at=due)
    assert await broker.receive(0, 1, 1.0) == []
    got = await receive_one(broker, wait_s=15)
    assert got.message_id == message_id and time.time() >= due - 0.5
    assert await broker.complete(0, got)


async def test_expired_lock_moves_the_message_and_the_old_holder_cannot_complete(broker: Broker) -> None:
    """Renewed, the lock holds past its duration; left to expire, another receiver gets the message and
    the first one's complete fails."""
    message_id = mid()
    await broker.send(message_id, "locked")
    held = await receive_one(broker, 0)
    for _ in range(2):  # renewing keeps it from receiver 1 across more than one lock duration
        await asyncio.sleep(broker.lock_s * 0.6)  # time must pass for a lock to matter
        await broker.renew(0, held)
        assert await broker.receive(1, 1, 0.1) == []
    taken = await receive_one(broker, 1, wait_s=broker.lock_s * 3)
    assert taken.message_id == message_id and taken.delivery_count == held.delivery_count + 1
    assert await broker.complete(0, held) is False
    assert await broker.complete(1, taken) is True
