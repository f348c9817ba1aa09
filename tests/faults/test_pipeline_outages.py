"""Outages of the pipeline's own dependencies, through the local worker with real services: the
result store (Cosmos DB) unreachable for many simulated minutes, the updates queue unreachable, the
task hub refusing starts. Each action ends succeeded exactly once (one ticket) or stays visible;
nothing is lost. Time is simulated with the worker's clock, never waited for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from azure.cosmos.aio import CosmosClient

from action_bus.local import ACTIONS_GROUP, RedisStreamsActionBus, RedisUpdateSink
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionStatus
from function_app import accept
from function_app.orchestration import instance_id_for
from function_app.results import CosmosResultStore
from function_app.runtime import Runtime
from function_app.worker.engine import RedisStarter
from function_app.worker.instances import InstanceStore
from function_app.worker.service import Worker
from local_stack import processes
from local_stack.processes import free_port
from tests.faults.conftest import Scenario
from tests.function_app.helpers import control, final_result, make_request, stored
from tests.polling import eventually


class ShiftedClock:
    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


async def no_wait(_seconds: float) -> None:
    return None


@pytest.mark.slow  # about 30 s; tests/function_app/test_orchestrator_replay.py covers hours of it in one
@pytest.mark.scenario(
    "Cosmos DB down for 30 simulated minutes",
    "the result store refuses connections while an action runs; the worker's clock jumps to each retry",
    "bookkeeping waits on capped durable timers; once Cosmos is back the action succeeds once",
)
async def test_cosmos_outage_costs_time_not_the_action(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, scenario: Scenario
) -> None:
    """With Cosmos unreachable no step moves past its bookkeeping; after it returns: one ticket, succeeded."""
    real = runtime.results
    dead_client = CosmosClient(
        f"https://127.0.0.1:{free_port()}", credential=processes.COSMOS_EMULATOR_KEY, connection_verify=False
    )
    runtime.results = CosmosResultStore(
        dead_client.get_database_client("agent").get_container_client("action_results")
    )
    clock = ShiftedClock()
    worker = Worker(aredis, runtime, sleep=no_wait)
    worker.engine.clock = clock
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    iid = instance_id_for(request.idempotency_key)
    store = InstanceStore(aredis)
    simulated = timedelta()

    async def jump_to_next_timer() -> None:
        """Freeze the worker's clock just past the next due time (one bookkeeping retry) and run it:
        the retry's own next timer then lies ahead of the frozen clock, so each step is one retry."""
        nonlocal simulated
        due = await store.next_due_at()
        if due is not None:
            wait = timedelta(seconds=max(0.0, due - datetime.now(UTC).timestamp()) + 0.01)
            simulated += wait
            frozen = datetime.now(UTC) + wait
            worker.engine.clock = lambda: frozen
        await worker.engine.run_due()

    try:
        await worker.intake_once(0.1)
        await worker.engine.run_due()
        while simulated < timedelta(minutes=30):  # every retry fails while Cosmos is down
            await jump_to_next_timer()
        instance = await stored(store, iid)
        failures = sum(1 for e in instance.history if e["EventType"] == 6)
        assert instance.status == "Running" and failures >= 8
        assert (await control(backend, "GET", "/_control/stats"))["requests"] == 0
    finally:
        runtime.results = real
        await dead_client.close()

    async def tick() -> None:
        await jump_to_next_timer()

    result = await eventually(final_result(runtime, request), tick=tick)
    stats = await control(backend, "GET", "/_control/stats")
    scenario.observed = (
        f"{failures} failed bookkeeping tries while down; then {result.status.value} after "
        f"{result.attempts} attempt, tickets {stats['tickets']}"
    )
    assert result.status is ActionStatus.succeeded and result.attempts == 1
    assert stats["tickets"] == 1


@pytest.mark.slow  # about 25 s; the replay and activity tests cover the same rule quickly
@pytest.mark.scenario(
    "updates queue down for a whole action",
    "every status update to the gateway fails (its Redis refuses connections)",
    "the action succeeds and its result document says so; no instance fails",
)
async def test_updates_queue_down_never_fails_the_action(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, scenario: Scenario
) -> None:
    """No update can be sent: the action still succeeds once and the instance completes."""
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    runtime.updates = RedisUpdateSink(dead, runtime.settings.servicebus_updates_queue)
    clock = ShiftedClock()
    worker = Worker(aredis, runtime, sleep=no_wait)
    worker.engine.clock = clock
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)

    async def tick() -> None:
        await worker.intake_once(0.05)
        clock.shift += timedelta(minutes=1)  # the final update's retry timers
        await worker.engine.run_due()

    try:
        result = await eventually(final_result(runtime, request), tick=tick)
        instance = await stored(InstanceStore(aredis), instance_id_for(request.idempotency_key))
        for _ in range(10):
            if instance.status != "Running":
                break
            await tick()
            instance = await stored(InstanceStore(aredis), instance_id_for(request.idempotency_key))
    finally:
        await dead.aclose()
    unsent = sum(
        1
        for e in instance.history
        if e["EventType"] == 5
        and json.loads(e["Result"]) == {"published": False, "error": json.loads(e["Result"]).get("error")}
    )
    scenario.observed = f"{result.status.value}; instance {instance.status}; {unsent} updates reported unsent"
    assert result.status is ActionStatus.succeeded and instance.status == "Completed"
    assert unsent >= 3 and (await control(backend, "GET", "/_control/stats"))["tickets"] == 1


@pytest.mark.scenario(
    "task hub refuses starts",
    "the worker's instance store is unreachable when the message arrives",
    "retried in the invocation, then re-sent for later and completed; the copy starts the action once",
)
async def test_task_hub_down_reschedules_instead_of_burning_deliveries(
    runtime: Runtime,
    aredis: aioredis.Redis,
    backend: TestServer,
    scenario: Scenario,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starts fail: the message is re-sent as a scheduled copy (not abandoned); once the store is back the copy runs once."""
    monkeypatch.setattr(accept, "RESEND_FIRST_DELAY_S", 0.2)
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    worker = Worker(aredis, runtime, sleep=no_wait)
    healthy = worker.starter
    worker.starter = RedisStarter(InstanceStore(dead))
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    queue = StreamQueue(aredis, runtime.settings.servicebus_actions_queue, ACTIONS_GROUP)
    try:
        assert await eventually(lambda: worker.intake_once(0.05)) == 1  # completed by re-sending
    finally:
        await dead.aclose()
    scheduled = await queue.scheduled_count()
    assert scheduled == 1 and await queue.depth() == 0
    worker.starter = healthy

    async def tick() -> None:
        await worker.intake_once(0.05)
        await worker.engine.run_due()

    result = await eventually(final_result(runtime, request), tick=tick)
    stats = await control(backend, "GET", "/_control/stats")
    scenario.observed = f"1 scheduled re-send, then {result.status.value}; tickets {stats['tickets']}"
    assert result.status is ActionStatus.succeeded and stats["tickets"] == 1
    assert await queue.dead_entries() == []
