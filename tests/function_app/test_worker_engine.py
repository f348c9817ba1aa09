"""The local worker's replay engine: history shaped as the host writes it, leases, and resilience."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from function_app.app import build_app
from function_app.errors import InstanceAlreadyExists
from function_app.orchestration import ORCHESTRATOR, instance_id_for
from function_app.runtime import Runtime
from function_app.worker import history as h
from function_app.worker.engine import Engine, RedisStarter, now, registered_functions
from function_app.worker.instances import InstanceStore
from tests.fixtures.services import ON_BOTH
from tests.function_app.helpers import make_request, output_of, stored

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH


def engine_for(aredis: aioredis.Redis) -> Engine:
    orchestrators, activities = registered_functions(build_app())
    return Engine(InstanceStore(aredis), orchestrators, activities, lease_ms=2000)


async def run_until_done(engine: Engine, iid: str) -> None:
    for _ in range(100):
        await engine.run_due()
        instance = await engine.store.load(iid)
        if instance is not None and instance.status != "Running":
            return
    raise AssertionError("instance did not finish")


async def test_history_is_shaped_like_the_hosts(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """Episodes start with OrchestratorStarted and end with OrchestratorCompleted; task ids run 0..n-1."""
    engine = engine_for(aredis)
    request = make_request()
    iid = instance_id_for(request.idempotency_key)
    await RedisStarter(engine.store).start(ORCHESTRATOR, iid, request.to_wire())
    await run_until_done(engine, iid)
    instance = await stored(engine.store, iid)
    types = [e["EventType"] for e in instance.history]
    assert types[:4] == [
        h.ORCHESTRATOR_STARTED,
        h.EXECUTION_STARTED,
        h.TASK_SCHEDULED,
        h.ORCHESTRATOR_COMPLETED,
    ]
    assert types[-1] == h.ORCHESTRATOR_COMPLETED and instance.status == "Completed"
    scheduled = [e for e in instance.history if e["EventType"] == h.TASK_SCHEDULED]
    assert [e["EventId"] for e in scheduled] == list(range(len(scheduled)))
    assert [e["Name"] for e in scheduled] == [
        "record_action_status",
        "publish_action_update",
        "plan_action",
        "record_action_status",
        "publish_action_update",
        "dispatch_action",
        "record_action_status",
        "publish_action_update",
    ]
    completed = [e for e in instance.history if e["EventType"] == h.TASK_COMPLETED]
    assert [e["TaskScheduledId"] for e in completed] == list(range(len(scheduled)))
    assert output_of(instance)["status"] == "succeeded"


async def test_instance_leased_by_another_worker_is_left_alone(
    runtime: Runtime, aredis: aioredis.Redis
) -> None:
    """While another worker holds the lease, this engine does not touch the instance."""
    engine = engine_for(aredis)
    request = make_request()
    iid = instance_id_for(request.idempotency_key)
    await RedisStarter(engine.store).start(ORCHESTRATOR, iid, request.to_wire())
    assert await engine.store.acquire(iid, "someone-else", 60_000)
    assert await engine.run_due() == 0
    assert len((await stored(engine.store, iid)).history) == 2


async def test_unrunnable_instance_fails_at_once_and_others_proceed(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """An instance whose orchestrator is not registered fails at once with that reason (listed for
    the dead-letter command), not retried forever; a healthy instance beside it completes."""
    engine = engine_for(aredis)
    broken = "action-broken"
    at = now()
    await engine.store.create(
        broken,
        "no_such_orchestrator",
        "{}",
        [h.orchestrator_started(at), h.execution_started(at, "no_such_orchestrator", "{}")],
    )
    request = make_request()
    healthy = instance_id_for(request.idempotency_key)
    await RedisStarter(engine.store).start(ORCHESTRATOR, healthy, request.to_wire())
    await run_until_done(engine, healthy)
    assert (await stored(engine.store, healthy)).status == "Completed"
    failed = await stored(engine.store, broken)
    assert failed.status == "Failed"
    assert output_of(failed)["error"] == "no orchestrator named 'no_such_orchestrator' is registered"
    assert await aredis.zscore(engine.store.due_key, broken) is None
    assert [i.instance_id for i in await engine.store.failed()] == [broken]


async def test_starting_twice_creates_one_instance(aredis: aioredis.Redis) -> None:
    """The Redis starter refuses a second instance with the same id (InstanceAlreadyExists, as the host's refusal)."""
    store = InstanceStore(aredis)
    starter = RedisStarter(store)
    request = make_request()
    iid = instance_id_for(request.idempotency_key)
    await starter.start(ORCHESTRATOR, iid, request.to_wire())
    with pytest.raises(InstanceAlreadyExists):
        await starter.start(ORCHESTRATOR, iid, make_request().to_wire())
    assert await starter.exists(iid)
    assert json.loads((await stored(store, iid)).input_json)["actionId"] == str(request.action_id)


async def test_event_raised_while_the_instance_runs_keeps_it_due(aredis: aioredis.Redis) -> None:
    """An event queued while a worker holds the instance is not overlooked: the worker's own
    'wait for an event' write leaves it due now, since its inbox is not empty."""
    store = InstanceStore(aredis)
    await RedisStarter(store).start("approval", "raised-1", None)
    assert await store.acquire("raised-1", "worker-a", 60_000)
    assert await store.raise_event("raised-1", h.event_raised(now(), "Approval", '"yes"'))
    await store.append("raised-1", "worker-a", [], due_at=float("inf"))
    assert await store.due(now().timestamp()) == ["raised-1"]
