"""The local worker against orchestrators of the classic Durable Functions shapes, each replayed by
the real azure-functions-durable code: chaining, fan-out/fan-in, human interaction (a timer raced by
an external event), eternal with continue-as-new and custom status, task_any in completion order;
and the calls it does not support, which fail the instance at once with the reason, as does an
orchestrator that turned non-deterministic."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest
import redis.asyncio as aioredis

from function_app.worker.engine import Engine, RedisStarter, registered_functions
from function_app.worker.events import raise_event
from function_app.worker.instances import InstanceStore

app = df.DFApp()
FLIP = {"first": "add"}


@app.activity_trigger(input_name="x")
def add(x: list[int]) -> int:
    return sum(x)


@app.activity_trigger(input_name="x")
def double(x: int) -> int:
    return 2 * x


@app.activity_trigger(input_name="x")
async def sleepy(x: list[Any]) -> Any:
    await asyncio.sleep(x[0])  # a slow activity, so the fast one finishes first
    return x[1]


@app.orchestration_trigger(context_name="context")
def chaining(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    a = yield context.call_activity("add", [1, 2])
    b = yield context.call_activity("add", [a, 3])
    return (yield context.call_activity("double", b))


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    parts = yield context.task_all([context.call_activity("double", i) for i in range(6)])
    return (yield context.call_activity("add", parts))


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    deadline = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    answer = context.wait_for_external_event("Approval")
    winner = yield context.task_any([answer, deadline])
    if winner == answer:
        deadline.cancel()
        return f"approved by {answer.result}"
    return "timed out"


@app.orchestration_trigger(context_name="context")
def eternal(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    n = context.get_input()
    total = yield context.call_activity("add", [n, 1])
    context.set_custom_status({"round": n})
    if total < 4:
        context.continue_as_new(total)
        return None
    return total


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    slow = context.call_activity("sleepy", [0.5, "slow"])
    fast = context.call_activity("sleepy", [0.0, "fast"])
    winner = yield context.task_any([slow, fast])
    return winner.result


@app.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("add", options, [1, 1]))


@app.orchestration_trigger(context_name="context")
def drifting(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    yield context.call_activity(FLIP["first"], [1])
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    return "done"


ORCHESTRATORS, ACTIVITIES = registered_functions(app)


class Clock:
    """The engine's clock for timers: real time plus a shift the test moves forward."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


async def run(
    aredis: aioredis.Redis, name: str, input_: Any = None, clock: Clock | None = None
) -> tuple[Engine, str]:
    store = InstanceStore(aredis)
    engine = Engine(store, ORCHESTRATORS, ACTIVITIES, lease_ms=5000, clock=clock or Clock())
    iid = f"{name}-1"
    await RedisStarter(store).start(name, iid, input_)
    await engine.run_due()
    return engine, iid


async def finished(engine: Engine, iid: str, rounds: int = 20) -> Any:
    for _ in range(rounds):
        instance = await engine.store.load(iid)
        assert instance is not None
        if instance.status != "Running":
            return instance
        await engine.run_due()
    raise AssertionError(f"{iid} still running")


async def test_chaining(aredis: aioredis.Redis) -> None:
    """Three activities in sequence, each fed the last result."""
    engine, iid = await run(aredis, "chaining")
    instance = await finished(engine, iid)
    assert (instance.status, json.loads(instance.output)) == ("Completed", 12)


async def test_fan_out_fan_in(aredis: aioredis.Redis) -> None:
    """Six activities at once, then one over all their results."""
    engine, iid = await run(aredis, "fan_out")
    instance = await finished(engine, iid)
    assert json.loads(instance.output) == 30
    scheduled = [e for e in instance.history if e["EventType"] == 4]
    assert len(scheduled) == 7


async def test_human_interaction_event_wins(aredis: aioredis.Redis) -> None:
    """The instance waits (not due) until the Approval event is raised, then completes with its data."""
    engine, iid = await run(aredis, "approval")
    assert await engine.run_due() == 0  # waiting for the event or the hour: nothing to do
    assert await raise_event(aredis, iid, "Approval", "carol")
    instance = await finished(engine, iid)
    assert json.loads(instance.output) == "approved by carol"


async def test_human_interaction_timer_wins(aredis: aioredis.Redis) -> None:
    """No event: once the clock passes the hour, the timer wins (time simulated, not waited for)."""
    clock = Clock()
    engine, iid = await run(aredis, "approval", clock=clock)
    clock.shift = timedelta(hours=1, seconds=1)
    instance = await finished(engine, iid)
    assert json.loads(instance.output) == "timed out"
    assert not await raise_event(aredis, iid, "Approval", "late")  # a finished instance takes no events


async def test_eternal_continue_as_new_with_custom_status(aredis: aioredis.Redis) -> None:
    """Continue-as-new restarts with the new input and a fresh history until the bound; custom status is kept."""
    engine, iid = await run(aredis, "eternal", 0)
    instance = await finished(engine, iid)
    assert json.loads(instance.output) == 4
    assert json.loads(instance.custom_status) == {"round": 3}
    assert [e["EventType"] for e in instance.history][:2] == [12, 0]
    assert json.loads(instance.input_json) == 3


async def test_task_any_takes_the_activity_that_finished_first(aredis: aioredis.Redis) -> None:
    """Of a slow and a fast activity scheduled together, task_any returns the fast one."""
    engine, iid = await run(aredis, "race")
    instance = await finished(engine, iid)
    assert json.loads(instance.output) == "fast"


async def test_unsupported_call_fails_at_once_with_the_reason(aredis: aioredis.Redis) -> None:
    """call_activity_with_retry is not run here: the instance fails on the first step, saying so."""
    engine, iid = await run(aredis, "with_retry")
    instance = await engine.store.load(iid)
    assert instance is not None and instance.status == "Failed"
    assert (
        "CallActivityWithRetry is not supported by the local worker" in json.loads(instance.output)["error"]
    )
    assert [i.instance_id for i in await engine.store.failed()] == [iid]


async def test_non_deterministic_replay_fails_the_instance(
    aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An orchestrator that, on replay, schedules another activity than its history recorded fails with the reason."""
    clock = Clock()
    engine, iid = await run(aredis, "drifting", clock=clock)  # add ran; waiting on the timer
    monkeypatch.setitem(FLIP, "first", "double")  # a deployment changed the code under the instance
    clock.shift = timedelta(seconds=5)
    instance = await finished(engine, iid)
    assert instance.status == "Failed"
    assert json.loads(instance.output)["error"] == (
        "non-deterministic orchestrator: task 0 is double now, the history has add"
    )
