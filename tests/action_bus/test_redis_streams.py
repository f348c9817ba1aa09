"""The local broker on real Redis Streams: redelivery after a consumer dies, delivery counts,
dead-lettering after max deliveries, duplicate detection on send."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from action_bus.local import RedisStreamsActionBus, RedisUpdateSink, RedisUpdateSource
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest, ActionResult, ActionStatus
from tests.function_app.helpers import make_request


async def test_unacked_entry_goes_to_another_consumer_after_idle(aredis: aioredis.Redis) -> None:
    """An entry received by a consumer that died without acking is reclaimed by the next one, count 2."""
    crashed = StreamQueue(aredis, "actions", "workers", "crashed", claim_idle_ms=50)
    await crashed.send("m-1", "body-1")
    first = await crashed.receive(1, wait_s=0.5)
    assert [d.delivery_count for d in first] == [1]
    survivor = StreamQueue(aredis, "actions", "workers", "survivor", claim_idle_ms=50)
    again = []
    for _ in range(50):  # polls until the entry has been idle long enough to be reclaimed
        again = await survivor.receive(1, wait_s=0.05)
        if again:
            break
    assert [(d.message_id, d.body, d.delivery_count) for d in again] == [("m-1", "body-1", 2)]
    await survivor.ack(again[0].delivery_id)
    assert await survivor.receive(1, wait_s=0.05) == []
    assert await survivor.depth() == 0


async def test_entry_is_dead_lettered_after_max_deliveries(aredis: aioredis.Redis) -> None:
    """Past max_deliveries the entry moves to the dead-letter stream with the reason and is not delivered."""
    queue = StreamQueue(aredis, "actions", "workers", "w", max_deliveries=2, claim_idle_ms=0)
    await queue.send("poison", "{}")
    counts = []
    for _ in range(3):
        counts += [d.delivery_count for d in await queue.receive(1, wait_s=0.05)]
    assert counts == [1, 2]
    dead = await queue.dead_entries()
    assert [(d.message_id, d.delivery_count) for d in dead] == [("poison", 2)]
    assert dead[0].reason == "MaxDeliveryCountExceeded" and "2 times" in dead[0].description
    assert await queue.depth() == 0


async def test_dead_entry_can_be_requeued(aredis: aioredis.Redis) -> None:
    """A dead entry put back is delivered again with a fresh delivery count."""
    queue = StreamQueue(aredis, "actions", "workers", "w", max_deliveries=1, claim_idle_ms=0)
    await queue.send("m", "b")
    await queue.receive(1, wait_s=0.05)
    await queue.receive(1, wait_s=0.05)
    [dead] = await queue.dead_entries()
    assert await queue.requeue_dead(dead.dead_id)
    [delivery] = await queue.receive(1, wait_s=0.05)
    assert (delivery.message_id, delivery.delivery_count) == ("m", 1)
    assert await queue.dead_entries() == []


async def test_same_message_id_is_sent_once(aredis: aioredis.Redis) -> None:
    """A message id sent twice within the window is appended once (Service Bus duplicate detection)."""
    queue = StreamQueue(aredis, "actions", "workers")
    assert await queue.send("k", "1") is True
    assert await queue.send("k", "2") is False
    assert await queue.depth() == 1


async def test_bus_publish_carries_properties_and_dedups(aredis: aioredis.Redis) -> None:
    """The action bus adapter keeps trace context and content type beside the body; a re-publish is dropped,
    a replay (next replay_count) is not."""
    bus = RedisStreamsActionBus(aredis)
    request = make_request()
    await bus.publish(request)
    await bus.publish(request)
    await bus.publish(request.model_copy(update={"replay_count": 1}))
    deliveries = await StreamQueue(aredis, "actions", "function-app").receive(10, wait_s=0.1)
    assert [d.message_id for d in deliveries] == [request.idempotency_key, f"{request.idempotency_key}#r1"]
    assert deliveries[0].properties["traceparent"] == request.trace_context["traceparent"]
    assert deliveries[0].properties["content_type"] == "application/json"
    assert ActionRequest.model_validate_json(deliveries[0].body) == request


async def test_updates_are_shared_between_gateway_pods(aredis: aioredis.Redis) -> None:
    """Two gateway pods on the update stream each get different updates; acked ones do not come back."""
    sink = RedisUpdateSink(aredis)
    base = ActionResult.queued_for(make_request())
    for attempts in range(1, 5):
        await sink.publish_update(
            base.model_copy(update={"status": ActionStatus.running, "attempts": attempts})
        )
    pod_a, pod_b = RedisUpdateSource(aredis, consumer="a"), RedisUpdateSource(aredis, consumer="b")
    got_a = await pod_a.next_updates(2, wait_s=0.1)
    got_b = await pod_b.next_updates(10, wait_s=0.1)
    assert sorted(u.attempts for _, u in got_a + got_b) == [1, 2, 3, 4]
    assert len(got_a) == 2 and len(got_b) == 2
    for delivery_id, _ in got_a + got_b:
        await (pod_a if (delivery_id, _) in got_a else pod_b).ack(delivery_id)
    assert await RedisUpdateSource(aredis, consumer="c", claim_idle_ms=0).next_updates(10, wait_s=0.05) == []


async def test_invalid_update_is_dead_lettered_not_returned(aredis: aioredis.Redis) -> None:
    """A malformed update on the stream is moved to the dead-letter stream instead of breaking the reader."""
    queue = StreamQueue(aredis, "action-updates", "gateway")
    await queue.send("bad", json.dumps({"id": "x"}))
    source = RedisUpdateSource(aredis)
    assert await source.next_updates(10, wait_s=0.1) == []
    assert [d.message_id for d in await queue.dead_entries()] == ["bad"]


CONSUME_AND_HANG = r"""
import asyncio, sys
from action_bus.redis_streams import StreamQueue
from agent_contracts.redis_connection import connect

async def main():
    queue = StreamQueue(await connect(sys.argv[1]), "actions", "workers", "doomed")
    got = await queue.receive(1, wait_s=5)
    print("received", got[0].message_id, flush=True)
    await asyncio.Event().wait()  # never acks: killed here

asyncio.run(main())
"""


async def test_message_held_by_a_killed_consumer_process_is_redelivered(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    """A consumer process SIGKILLed after receiving (before acking): the entry goes to the next consumer."""
    import asyncio
    import subprocess
    import sys
    from pathlib import Path

    queue = StreamQueue(aredis, "actions", "workers", "survivor", claim_idle_ms=100)
    await queue.send("m-killed", "payload")
    root = Path(__file__).resolve().parents[2]
    doomed = subprocess.Popen(
        [sys.executable, "-c", CONSUME_AND_HANG, redis_url], cwd=root, stdout=subprocess.PIPE, text=True
    )
    assert doomed.stdout is not None
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, doomed.stdout.readline)
        assert line.strip() == "received m-killed"
    finally:
        doomed.kill()
        doomed.wait()
    redelivered = []
    for _ in range(100):  # poll until the entry has been idle past claim_idle_ms
        redelivered = await queue.receive(1, wait_s=0.05)
        if redelivered:
            break
    assert [(d.message_id, d.delivery_count) for d in redelivered] == [("m-killed", 2)]


async def test_receiver_recreates_a_group_lost_with_the_data(aredis: aioredis.Redis) -> None:
    """Redis loses its data under a running receiver (restart without persistence, failover to an
    empty node): the receive that finds no group answers empty instead of raising, and the queue
    works again from the next one on."""
    queue = StreamQueue(aredis, "actions", "workers", "w")
    await queue.send("before", "body-before")
    assert [d.message_id for d in await queue.receive(1, wait_s=0.05)] == ["before"]
    await aredis.flushall()
    assert await queue.receive(1, wait_s=0.05) == []
    await queue.send("after", "body-after")
    assert [d.message_id for d in await queue.receive(1, wait_s=0.05)] == ["after"]
