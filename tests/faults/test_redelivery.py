"""The same ActionRequest delivered three times (the bus's duplicate detection missed it, or three
senders raced) to two workers at once: one backend effect, one result document."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from action_bus.local import ACTIONS_GROUP, RedisUpdateSource, request_properties
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionStatus
from function_app.runtime import Runtime
from function_app.worker.service import Worker
from tests.faults.conftest import Scenario
from tests.function_app.helpers import control, final_result, make_request, worker_tick
from tests.polling import eventually


@pytest.mark.scenario(
    "same ActionRequest delivered 3 times",
    "3 bus messages (distinct message ids) with one request, two workers consuming at once",
    "one backend call, one ticket, one result document, one succeeded update",
)
async def test_triple_delivery_makes_one_effect(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, scenario: Scenario
) -> None:
    """Three deliveries of one request through two racing workers: the backend acts once, Cosmos holds one document."""
    request = make_request()
    queue = StreamQueue(aredis, runtime.settings.servicebus_actions_queue, ACTIONS_GROUP)
    for copy in range(3):
        assert await queue.send(
            f"{request.message_id}-copy{copy}", request.to_json(), request_properties(request)
        )
    workers = [Worker(aredis, runtime), Worker(aredis, runtime)]
    tick = worker_tick(*workers)

    result = await eventually(final_result(runtime, request), tick=tick)
    for _ in range(5):  # let any straggling copy run through intake too
        await tick()
    assert await queue.depth() == 0

    stats = await control(backend, "GET", "/_control/stats")
    container = runtime.results.container  # type: ignore[attr-defined]
    documents = [
        item
        async for item in container.query_items(
            "SELECT * FROM c WHERE c.conversationId = @cid",
            parameters=[{"name": "@cid", "value": request.conversation_id}],
            partition_key=request.conversation_id,
        )
    ]
    source = RedisUpdateSource(aredis, runtime.settings.servicebus_updates_queue)
    succeeded = 0
    while batch := await source.next_updates(50, wait_s=0.05):
        for delivery_id, update in batch:
            succeeded += update.status is ActionStatus.succeeded
            await source.ack(delivery_id)
    scenario.observed = (
        f"backend requests {stats['requests']}, tickets {stats['tickets']}, result documents "
        f"{len(documents)} ({result.status.value}, {result.attempts} attempt), "
        f"succeeded updates {succeeded}"
    )
    assert result.status is ActionStatus.succeeded and result.attempts == 1
    assert stats["tickets"] == 1 and stats["requests"] == 1
    assert len(documents) == 1 and documents[0]["id"] == str(request.action_id)
    assert succeeded == 1
