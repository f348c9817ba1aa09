"""The gateway's outbox: accepted requests survive a bus outage and are published once it is back,
exactly once per idempotency key, with several relays running at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
import redis.asyncio as aioredis

from action_bus.local import RedisStreamsActionBus
from action_bus.outbox import Outbox
from action_bus.redis_streams import StreamQueue
from local_stack import processes
from tests.fixtures.services import ON_BOTH
from tests.function_app.helpers import make_request
from tests.polling import eventually

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH


async def bus_depth(bus_redis: aioredis.Redis) -> int:
    return await StreamQueue(bus_redis, "actions", "function-app").depth()


async def test_accept_is_false_for_a_key_already_accepted(
    aredis: aioredis.Redis, bus_redis: aioredis.Redis
) -> None:
    """The same idempotency key accepted twice (a retried client request) is one outbox entry."""
    outbox = Outbox(aredis, RedisStreamsActionBus(bus_redis))
    assert await outbox.accept(make_request()) is True
    assert await outbox.accept(make_request()) is False
    assert await outbox.pending() == 1


async def test_relay_publishes_and_empties_the_outbox(
    aredis: aioredis.Redis, bus_redis: aioredis.Redis
) -> None:
    """Accepted requests reach the bus and leave the outbox."""
    outbox = Outbox(aredis, RedisStreamsActionBus(bus_redis))
    for n in range(3):
        await outbox.accept(make_request(idempotency_key=f"conv-1:call_{n}"))
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.run_relay(stop))
    await eventually(lambda: _equal(bus_depth(bus_redis), 3))
    await eventually(lambda: _equal(outbox.pending(), 0))
    stop.set()
    await relay


async def _true(value: bool) -> bool:
    return value


async def _equal(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_bus_outage_loses_nothing(
    aredis: aioredis.Redis, bus_redis: aioredis.Redis, bus_redis_service: processes.Service
) -> None:
    """With the bus's Redis stopped, accepted requests wait in the outbox; after restart all are published."""
    outbox = Outbox(aredis, RedisStreamsActionBus(bus_redis), backoff_s=(0.05, 0.2))
    bus_redis_service.stop()
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.run_relay(stop))
    for n in range(5):
        assert await outbox.accept(make_request(idempotency_key=f"conv-1:call_{n}"))
    await eventually(lambda: _true(outbox.bus_failures >= 2))
    assert await outbox.pending() == 5 and outbox.published == 0
    bus_redis_service.start()
    await eventually(lambda: _equal(outbox.pending(), 0))
    assert await bus_depth(bus_redis) == 5
    stop.set()
    await relay


async def test_several_relays_publish_each_key_once(
    aredis: aioredis.Redis, bus_redis: aioredis.Redis
) -> None:
    """Three relays (three gateway pods) on one outbox publish 30 requests exactly once each."""
    outboxes = [Outbox(aredis, RedisStreamsActionBus(bus_redis), batch=4) for _ in range(3)]
    for n in range(30):
        await outboxes[n % 3].accept(make_request(idempotency_key=f"conv-1:call_{n}"))
    stop = asyncio.Event()
    relays = [asyncio.create_task(o.run_relay(stop)) for o in outboxes]
    await eventually(lambda: _equal(outboxes[0].pending(), 0))
    stop.set()
    await asyncio.gather(*relays)
    deliveries = await StreamQueue(bus_redis, "actions", "function-app").receive(100, wait_s=0.1)
    keys = [d.message_id for d in deliveries]
    assert sorted(keys) == sorted(f"conv-1:call_{n}" for n in range(30))


async def test_relay_crash_before_ack_does_not_duplicate(
    aredis: aioredis.Redis, bus_redis: aioredis.Redis
) -> None:
    """A relay that published but died before removing the entry: the entry is reclaimed and re-published,
    and the bus's duplicate detection keeps one message."""
    bus = RedisStreamsActionBus(bus_redis)
    crashed = Outbox(aredis, bus, claim_idle_ms=50)
    await crashed.accept(make_request())
    [taken] = await crashed.queue.receive(1, wait_s=0.1)
    await bus.publish(make_request().model_validate_json(taken.body))  # published, then "crashed" before ack
    survivor = Outbox(aredis, bus, claim_idle_ms=50)
    stop = asyncio.Event()
    relay = asyncio.create_task(survivor.run_relay(stop))
    await eventually(lambda: _equal(survivor.pending(), 0))
    stop.set()
    await relay
    assert await bus_depth(bus_redis) == 1


async def test_accept_fails_loudly_when_outbox_redis_is_down(bus_redis: aioredis.Redis) -> None:
    """With the outbox's own Redis unreachable, accept raises OutboxUnavailable (the gateway answers 503)."""
    from action_bus.outbox import OutboxUnavailable

    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{processes.free_port()}/0", socket_connect_timeout=0.5)
    with pytest.raises(OutboxUnavailable):
        await Outbox(dead, RedisStreamsActionBus(bus_redis)).accept(make_request())
    await dead.aclose()


async def test_accept_all_takes_a_step_in_one_write(
    aredis: aioredis.Redis, bus_redis: aioredis.Redis
) -> None:
    """A step's requests are stored together; a key already accepted is reported and not stored twice."""
    outbox = Outbox(aredis, RedisStreamsActionBus(bus_redis))
    assert await outbox.accept(make_request(idempotency_key="conv-1:call_a"))
    step = [make_request(idempotency_key=f"conv-1:call_{c}") for c in "ab"]
    assert await outbox.accept_all(step) == [False, True]
    assert await outbox.pending() == 2
    assert await outbox.accept_all([]) == []
