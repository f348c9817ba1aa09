"""The local worker against orchestrators of the classic Durable Functions shapes, each replayed by
the real azure-functions-durable code: chaining, fan-out/fan-in, human interaction (a timer raced by
an external event), eternal with continue-as-new and custom status, task_any in completion order,
retries (call_activity_with_retry) and sub-orchestrations (with and without retry), with histories
shaped as the host writes them; and the calls it does not support, which fail the instance at once
with the reason, as does an orchestrator that turned non-deterministic."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest
import redis.asyncio as aioredis

from function_app.worker import history as h
from function_app.worker.engine import Engine, RedisStarter, registered_functions
from function_app.worker.events import raise_event
from function_app.worker.instances import Instance, InstanceStore
from function_app.worker.shim import retry_delay
from tests.function_app.helpers import output_of, stored

app = df.DFApp()
FLIP = {"first": "add"}
#: Calls so far per key, for activities and orchestrators that fail their first n calls.
CALLS: dict[str, int] = {}


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


@app.activity_trigger(input_name="x")
def flaky(x: list[Any]) -> str:
    """Fails its first x[1] calls for key x[0], then answers."""
    key, failures = x
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] <= failures:
        raise RuntimeError(f"{key}: failure {CALLS[key]}")
    return f"{key} ok after {CALLS[key]}"


@app.orchestration_trigger(context_name="context")
def chaining(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("add", [1, 2])
    b = yield context.call_activity("add", [a, 3])
    return (yield context.call_activity("double", b))


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    parts = yield context.task_all([context.call_activity("double", i) for i in range(6)])
    return (yield context.call_activity("add", parts))


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    deadline = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    answer = context.wait_for_external_event("Approval")
    winner = yield context.task_any([answer, deadline])
    if winner == answer:
        deadline.cancel()
        return f"approved by {answer.result}"
    return "timed out"


@app.orchestration_trigger(context_name="context")
def eternal(context: df.DurableOrchestrationContext):
    n = context.get_input()
    total = yield context.call_activity("add", [n, 1])
    context.set_custom_status({"round": n})
    if total < 4:
        context.continue_as_new(total)
        return None
    return total


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):
    slow = context.call_activity("sleepy", [0.5, "slow"])
    fast = context.call_activity("sleepy", [0.0, "fast"])
    winner = yield context.task_any([slow, fast])
    return winner.result


@app.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):
    key, failures = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
    try:
        first = yield context.call_activity_with_retry("flaky", options, [key, failures])
    except Exception as exc:  # the last attempt's error reaches the code once the attempts are spent
        return f"gave up: {str(exc).splitlines()[0]}"
    second = yield context.call_activity("double", 2)
    return [first, second]


@app.orchestration_trigger(context_name="context")
def retry_in_fan_out(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=500, max_number_of_attempts=2)
    key = context.get_input()
    parts = yield context.task_all(
        [context.call_activity_with_retry("flaky", options, [key, 1]), context.call_activity("double", 5)]
    )
    return [*parts, (yield context.call_activity("double", 7))]


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    n = context.get_input()
    doubled = yield context.call_activity("double", n)
    if doubled < 0:
        raise ValueError(f"negative: {doubled}")
    return {"doubled": doubled, "parent": context.parent_instance_id}


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("flaky", context.get_input()))


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    first = yield context.call_sub_orchestrator("child", 3)
    many = yield context.task_all([context.call_sub_orchestrator("child", n) for n in (1, 2)])
    try:
        yield context.call_sub_orchestrator("child", -1)
    except Exception as exc:
        failed = str(exc).splitlines()[0]
    return {"first": first, "many": [m["doubled"] for m in many], "failed": failed}


@app.orchestration_trigger(context_name="context")
def parent_with_retry(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=2)
    return (yield context.call_sub_orchestrator_with_retry("flaky_child", options, context.get_input()))


@app.orchestration_trigger(context_name="context")
def calls_http(context: df.DurableOrchestrationContext):
    return (yield context.call_http("GET", "http://127.0.0.1:9/never"))


@app.orchestration_trigger(context_name="context")
def drifting(context: df.DurableOrchestrationContext):
    yield context.call_activity(FLIP["first"], [1])
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    return "done"


@app.orchestration_trigger(context_name="context")
def one_child(context: df.DurableOrchestrationContext):
    return (yield context.call_sub_orchestrator("child", context.get_input()))


@app.orchestration_trigger(context_name="context")
def versioned(context: df.DurableOrchestrationContext):
    """Version 2.0 added a step; instances started before keep the 1.0 path."""
    first = yield context.call_activity("double", 1)
    if h.compare_versions(context.version or "", "2.0") >= 0:
        first = yield context.call_activity("add", [first, 10])
    return {"version": context.version, "result": first}


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


async def finished(engine: Engine, iid: str, rounds: int = 20) -> Instance:
    for _ in range(rounds):
        instance = await stored(engine.store, iid)
        if instance.status != "Running":
            return instance
        await engine.run_due()
    raise AssertionError(f"{iid} still running")


async def test_chaining(aredis: aioredis.Redis) -> None:
    """Three activities in sequence, each fed the last result."""
    engine, iid = await run(aredis, "chaining")
    instance = await finished(engine, iid)
    assert (instance.status, output_of(instance)) == ("Completed", 12)


async def test_fan_out_fan_in(aredis: aioredis.Redis) -> None:
    """Six activities at once, then one over all their results."""
    engine, iid = await run(aredis, "fan_out")
    instance = await finished(engine, iid)
    assert output_of(instance) == 30
    scheduled = [e for e in instance.history if e["EventType"] == 4]
    assert len(scheduled) == 7


async def test_human_interaction_event_wins(aredis: aioredis.Redis) -> None:
    """The instance waits (not due) until the Approval event is raised, then completes with its data."""
    engine, iid = await run(aredis, "approval")
    assert await engine.run_due() == 0  # waiting for the event or the hour: nothing to do
    assert await raise_event(aredis, iid, "Approval", "carol")
    instance = await finished(engine, iid)
    assert output_of(instance) == "approved by carol"


async def test_human_interaction_timer_wins(aredis: aioredis.Redis) -> None:
    """No event: once the clock passes the hour, the timer wins (time simulated, not waited for)."""
    clock = Clock()
    engine, iid = await run(aredis, "approval", clock=clock)
    clock.shift = timedelta(hours=1, seconds=1)
    instance = await finished(engine, iid)
    assert output_of(instance) == "timed out"
    assert not await raise_event(aredis, iid, "Approval", "late")  # a finished instance takes no events


async def test_eternal_continue_as_new_with_custom_status(aredis: aioredis.Redis) -> None:
    """Continue-as-new restarts with the new input and a fresh history until the bound; custom status is kept."""
    engine, iid = await run(aredis, "eternal", 0)
    instance = await finished(engine, iid)
    assert output_of(instance) == 4
    assert instance.custom_status is not None
    assert json.loads(instance.custom_status) == {"round": 3}
    assert [e["EventType"] for e in instance.history][:2] == [12, 0]
    assert json.loads(instance.input_json) == 3


async def test_task_any_takes_the_activity_that_finished_first(aredis: aioredis.Redis) -> None:
    """Of a slow and a fast activity scheduled together, task_any returns the fast one."""
    engine, iid = await run(aredis, "race")
    instance = await finished(engine, iid)
    assert output_of(instance) == "fast"


async def test_unsupported_call_fails_at_once_with_the_reason(aredis: aioredis.Redis) -> None:
    """call_http is not run here: the instance fails on the first step, saying so."""
    engine, iid = await run(aredis, "calls_http")
    instance = await stored(engine.store, iid)
    assert instance is not None and instance.status == "Failed"
    assert "CallHttp is not supported by the local worker" in output_of(instance)["error"]
    assert [i.instance_id for i in await engine.store.failed()] == [iid]


def shape(history: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The scheduling and completion events of a history, as (kind, task id)."""
    names = {
        4: "scheduled",
        5: "completed",
        6: "failed",
        10: "timer",
        11: "fired",
        7: "sub",
        8: "sub-ok",
        9: "sub-failed",
    }
    keys = {
        5: "TaskScheduledId",
        6: "TaskScheduledId",
        8: "TaskScheduledId",
        9: "TaskScheduledId",
        11: "TimerId",
    }
    return [
        (names[e["EventType"]], e[keys.get(e["EventType"], "EventId")])
        for e in history
        if e["EventType"] in names
    ]


def later() -> Clock:
    """A clock an hour ahead: every retry interval has passed when the engine looks."""
    clock = Clock()
    clock.shift = timedelta(hours=1)
    return clock


async def test_activity_retry_waits_the_interval_between_attempts(aredis: aioredis.Redis) -> None:
    """Two failures, then success on the third attempt: each failure is followed by a timer of the
    first retry interval, then the next attempt, as the host's retry loop writes it."""
    engine, iid = await run(aredis, "with_retry", ["retry-ok", 2], clock=later())
    instance = await finished(engine, iid)
    assert output_of(instance) == ["retry-ok ok after 3", 4]
    assert shape(instance.history) == [
        ("scheduled", 0), ("failed", 0), ("timer", 1), ("fired", 1),
        ("scheduled", 2), ("failed", 2), ("timer", 3), ("fired", 3),
        ("scheduled", 4), ("completed", 4),
        ("scheduled", 5), ("completed", 5),
    ]  # fmt: skip
    failures = [i for i, e in enumerate(instance.history) if e["EventType"] == 6]
    timers = [e for e in instance.history if e["EventType"] == 10]
    for failed_at, timer in zip(failures, timers, strict=True):
        episode_start = max(
            h.parse_time(e["Timestamp"]) for e in instance.history[:failed_at] if e["EventType"] == 12
        )
        assert h.parse_time(timer["FireAt"]) - episode_start == timedelta(seconds=1)


async def test_activity_retry_gives_up_after_the_last_attempt(aredis: aioredis.Redis) -> None:
    """Three failed attempts of three: the orchestrator gets the last error (after one more timer,
    as DTFx waits one after the last attempt) and handles it."""
    engine, iid = await run(aredis, "with_retry", ["retry-never", 5], clock=later())
    instance = await finished(engine, iid)
    assert output_of(instance) == "gave up: RuntimeError: retry-never: failure 3 "
    assert [kind for kind, _ in shape(instance.history)].count("scheduled") == 3
    assert shape(instance.history)[-2:] == [("timer", 5), ("fired", 5)]


async def test_retry_inside_task_all_numbers_tasks_as_the_sdk_does(aredis: aioredis.Redis) -> None:
    """A retried call beside a plain one: the retry's timer and second attempt take the next ids
    after both, and the call after the fan-in the one after that; every replay agrees."""
    engine, iid = await run(aredis, "retry_in_fan_out", "fan-retry", clock=later())
    instance = await finished(engine, iid)
    assert output_of(instance) == ["fan-retry ok after 2", 10, 14]
    assert sorted(shape(instance.history)) == sorted(
        [
            ("scheduled", 0), ("scheduled", 1), ("failed", 0), ("completed", 1),
            ("timer", 2), ("fired", 2), ("scheduled", 3), ("completed", 3),
            ("scheduled", 4), ("completed", 4),
        ]
    )  # fmt: skip


async def test_sub_orchestrations_run_as_child_instances(aredis: aioredis.Redis) -> None:
    """One child, then two at once, then one that fails: results and the failure reach the parent,
    each child is an instance of its own that knows its parent."""
    engine, iid = await run(aredis, "parent")
    instance = await finished(engine, iid, rounds=40)
    output = output_of(instance)
    assert output["first"] == {"doubled": 6, "parent": iid}
    assert output["many"] == [2, 4]
    assert output["failed"].startswith(f"sub-orchestration {iid}:3 failed: negative: -2")
    assert shape(instance.history)[:2] == [("sub", 0), ("sub-ok", 0)]
    created = [e for e in instance.history if e["EventType"] == 7]
    assert [(e["EventId"], e["Name"], e["InstanceId"]) for e in created] == [
        (n, "child", f"{iid}:{n}") for n in range(4)
    ]
    first_child = await stored(engine.store, f"{iid}:0")
    assert first_child.status == "Completed"
    assert first_child.parent_id == iid and first_child.parent_task == 0


async def test_sub_orchestration_retry_starts_a_new_child_per_attempt(aredis: aioredis.Redis) -> None:
    """The first child fails; after the retry interval a second child (its own instance) succeeds."""
    engine, iid = await run(aredis, "parent_with_retry", ["sub-retry", 1], clock=later())
    instance = await finished(engine, iid, rounds=40)
    assert output_of(instance) == "sub-retry ok after 2"
    assert shape(instance.history) == [
        ("sub", 0),
        ("sub-failed", 0),
        ("timer", 1),
        ("fired", 1),
        ("sub", 2),
        ("sub-ok", 2),
    ]
    assert (await stored(engine.store, f"{iid}:0")).status == "Failed"
    assert (await stored(engine.store, f"{iid}:2")).status == "Completed"


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
    assert output_of(instance)["error"] == (
        "non-deterministic orchestrator: task 0 is double now, the history has add"
    )


async def test_parent_finds_a_child_that_ended_untold(
    aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker stops between a child's end and telling its parent: the parent, looking at its
    children again after the recheck interval, gets the result, once."""
    clock = Clock()
    engine, iid = await run(aredis, "one_child", 4, clock=clock)
    telling = engine.store.notify_parent

    async def lost(*_args: Any) -> bool:
        return False

    monkeypatch.setattr(engine.store, "notify_parent", lost)
    await engine.run_due()  # the child runs to its end; the parent is not told
    assert (await stored(engine.store, f"{iid}:0")).status == "Completed"
    assert (await stored(engine.store, iid)).status == "Running"
    assert await engine.run_due() == 0  # nothing due: the parent waits for the recheck
    monkeypatch.setattr(engine.store, "notify_parent", telling)
    clock.shift = timedelta(seconds=31)
    instance = await finished(engine, iid)
    assert output_of(instance) == {"doubled": 8, "parent": iid}
    assert [kind for kind, _ in shape(instance.history)] == ["sub", "sub-ok"]


async def test_a_new_version_runs_beside_in_flight_instances_of_the_old(aredis: aioredis.Redis) -> None:
    """An instance started at 1.0 keeps its path under 2.0 code; a 2.0 instance is left alone by a
    1.0 worker (a deployment in progress) and run by a 2.0 worker."""
    store = InstanceStore(aredis)
    old = Engine(store, ORCHESTRATORS, ACTIVITIES, lease_ms=5000, version="1.0")
    new = Engine(store, ORCHESTRATORS, ACTIVITIES, lease_ms=5000, version="2.0")
    await RedisStarter(store, "1.0").start("versioned", "v-old", None)
    await RedisStarter(store, "2.0").start("versioned", "v-new", None)
    await old.run_due()
    assert (await stored(store, "v-old")).status == "Completed"
    untouched = await stored(store, "v-new")
    assert untouched.status == "Running" and len(untouched.history) == 2
    later_now = (datetime.now(UTC) + timedelta(minutes=1)).timestamp()
    assert await store.due(later_now) == ["v-new"]  # offered again later, not failed
    new.clock = lambda: datetime.now(UTC) + timedelta(minutes=1)
    instance = await finished(new, "v-new")
    assert output_of(instance) == {"version": "2.0", "result": 12}
    assert output_of(await stored(store, "v-old")) == {"version": "1.0", "result": 2}


def test_versions_compare_as_the_extension_compares_them() -> None:
    """Dotted numbers numerically, others as strings; no version is older than any."""
    assert h.compare_versions("1.10", "1.9") == 1
    assert h.compare_versions("2", "2.0") == 0
    assert h.compare_versions("", "1.0") == -1 and h.compare_versions("1.0", "") == 1
    assert h.compare_versions("beta", "alpha") == 1


def test_retry_delay_follows_dtfx_back_off() -> None:
    """First interval alone (what the Python SDK sends) waits it every time; a back-off coefficient
    and a maximum interval, when an SDK sends them, grow the wait and cap it as DTFx does."""
    python_sdk = {"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 3}
    assert [retry_delay(python_sdk, n).total_seconds() for n in (1, 2, 3)] == [1.0, 1.0, 1.0]
    growing = {**python_sdk, "backoffCoefficient": 2, "maxRetryIntervalInMilliseconds": 5000}
    assert [retry_delay(growing, n).total_seconds() for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


async def test_another_worker_continues_a_retry_from_the_history_alone(aredis: aioredis.Redis) -> None:
    """The first worker stops while the retry timer waits; a second one, knowing nothing but the
    history, fires it and runs the next attempt under the next id."""
    first, iid = await run(aredis, "with_retry", ["retry-handover", 1])
    waiting = await stored(first.store, iid)
    assert waiting.status == "Running" and shape(waiting.history)[-1] == ("timer", 1)
    second = Engine(InstanceStore(aredis), ORCHESTRATORS, ACTIVITIES, lease_ms=5000, clock=later())
    instance = await finished(second, iid)
    assert output_of(instance) == ["retry-handover ok after 2", 4]
    assert [e for e in shape(instance.history) if e[0] == "scheduled"] == [
        ("scheduled", 0),
        ("scheduled", 2),
        ("scheduled", 3),
    ]
