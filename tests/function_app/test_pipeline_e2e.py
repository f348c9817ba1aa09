"""The whole pipeline locally: a request on the Redis Streams bus -> the local worker (the function
app's own orchestrator and activities, replayed through the Durable SDK) -> the sample backend ->
Cosmos DB -> status updates back on the update stream."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from action_bus.local import RedisStreamsActionBus, RedisUpdateSource
from action_bus.outbox import Outbox
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionResult, ActionStatus
from function_app import deadletters
from function_app.runtime import Runtime
from function_app.starter import start_from_message
from function_app.worker.engine import RedisStarter
from function_app.worker.instances import InstanceStore
from function_app.worker.service import Worker
from tests.function_app.helpers import control, final_result, make_request, worker_tick
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


async def drain_updates(aredis: aioredis.Redis, queue: str) -> list[ActionResult]:
    source = RedisUpdateSource(aredis, queue)
    updates: list[ActionResult] = []
    while batch := await source.next_updates(50, wait_s=0.05):
        for delivery_id, update in batch:
            updates.append(update)
            await source.ack(delivery_id)
    return updates


async def test_action_runs_end_to_end_once(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """Outbox -> bus -> worker -> one ticket -> Cosmos succeeded -> queued/running/succeeded updates."""
    outbox = Outbox(aredis, RedisStreamsActionBus(aredis, runtime.settings.servicebus_actions_queue))
    request = make_request()
    assert await outbox.accept(request)
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.run_relay(stop))
    worker = Worker(aredis, runtime)
    tick = worker_tick(worker)

    result = await eventually(final_result(runtime, request), tick=tick)
    stop.set()
    await relay
    assert result.status is ActionStatus.succeeded and result.attempts == 1
    assert result.result["title"] == "Printer on fire"
    assert (await control(backend, "GET", "/_control/stats"))["tickets"] == 1
    updates = await drain_updates(aredis, runtime.settings.servicebus_updates_queue)
    assert [u.status.value for u in updates] == ["queued", "running", "succeeded"]


async def test_transient_failures_are_retried_to_success(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """Two 503s then success: three attempts, retrying recorded between them, one ticket."""
    await control(
        backend, "PUT", "/_control/faults", {"rules": [{"path": "/tickets", "status": 503, "times": 2}]}
    )
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    worker = Worker(aredis, runtime)
    tick = worker_tick(worker)

    result = await eventually(final_result(runtime, request), tick=tick)
    assert result.status is ActionStatus.succeeded and result.attempts == 3
    assert [a.outcome for a in result.attempt_history] == ["transient_error", "transient_error", "succeeded"]
    statuses = [
        u.status.value for u in await drain_updates(aredis, runtime.settings.servicebus_updates_queue)
    ]
    assert statuses.count("retrying") == 2 and statuses[-1] == "succeeded"
    assert (await control(backend, "GET", "/_control/stats"))["tickets"] == 1


async def test_redelivered_message_has_no_second_effect(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """A worker that started the orchestration but died before acking: the message is redelivered to another
    worker, which finds the instance and starts nothing; the backend sees one ticket."""
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    crashed = StreamQueue(aredis, "actions", "function-app", "crashed", claim_idle_ms=50)
    [delivery] = await crashed.receive(1, wait_s=0.5)
    outcome = await start_from_message(
        delivery.body, delivery.message_id, RedisStarter(InstanceStore(aredis)), runtime.dead_letters
    )
    assert outcome == "started"  # ...and then the process died: no ack
    worker = Worker(aredis, runtime)
    assert (
        await eventually(lambda: worker.intake_once(0.05)) == 1
    )  # reclaimed, recognised as a duplicate, acked
    await eventually(final_result(runtime, request), tick=worker.engine.run_due)
    assert (await control(backend, "GET", "/_control/stats"))["tickets"] == 1
    assert await StreamQueue(aredis, "actions", "function-app").depth() == 0


async def test_exhausted_action_is_dead_lettered_and_replayed(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """Three 500s dead-letter the action with its history; after the backend is fixed, the dead-letter command
    replays it and it succeeds as run 1."""
    await control(
        backend, "PUT", "/_control/faults", {"rules": [{"path": "/tickets", "status": 500, "times": 3}]}
    )
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    worker = Worker(aredis, runtime)
    tick = worker_tick(worker)

    dead = await eventually(final_result(runtime, request), tick=tick)
    assert dead.status is ActionStatus.dead_lettered and dead.attempts == 3
    out = io.StringIO()
    assert await deadletters.run(["list"], runtime.settings, out) == 0
    assert str(request.action_id) in out.getvalue() and "gave up after 3 attempts" in out.getvalue()

    out = io.StringIO()
    assert await deadletters.run(["replay", str(request.action_id)], runtime.settings, out) == 0
    replayed = await eventually(final_result(runtime, request, replay_count=1), tick=tick)
    assert replayed.status is ActionStatus.succeeded and replayed.attempts == 1
    out = io.StringIO()
    await deadletters.run(["list"], runtime.settings, out)
    assert out.getvalue().strip().endswith("0 dead letter(s)")
    out = io.StringIO()
    assert await deadletters.run(["replay", str(request.action_id)], runtime.settings, out) == 1
    assert "no dead letter" in out.getvalue()


async def test_poison_message_lands_in_broker_dead_letters_and_replays(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer
) -> None:
    """An invalid message is dead-lettered with its reason at once; the command lists it as not replayable."""
    await StreamQueue(aredis, "actions", "function-app").send("m-bad", '{"name": "create_ticket"}')
    worker = Worker(aredis, runtime)
    assert await eventually(lambda: worker.intake_once(0.05)) == 1
    out = io.StringIO()
    await deadletters.run(["list", "--json"], runtime.settings, out)
    assert '"kind": "invalid_message"' in out.getvalue() and '"replayable": false' in out.getvalue()
    out = io.StringIO()
    assert await deadletters.run(["replay", "message-m-bad"], runtime.settings, out) == 1
    assert "fix its producer" in out.getvalue()


async def test_killed_worker_action_completes_exactly_once(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, app_env: dict[str, str], output_dir: Path
) -> None:
    """SIGKILL the worker process while its dispatch is in flight (the backend already acted); a restarted
    worker finishes the action: one ticket, one succeeded document."""
    await control(
        backend,
        "PUT",
        "/_control/faults",
        {"rules": [{"path": "/tickets", "phase": "after", "delay_s": 1.5, "times": 1}]},
    )
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    env = {**os.environ, **app_env}
    log = open(output_dir / "worker-e2e.log", "ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "function_app.worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    first = start()
    try:

        async def in_flight() -> bool:
            return (await control(backend, "GET", "/_control/stats"))["tickets"] == 1

        await eventually(in_flight)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start()
        try:
            result = await eventually(final_result(runtime, request), timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    assert result.status is ActionStatus.succeeded
    stats = await control(backend, "GET", "/_control/stats")
    assert stats["tickets"] == 1 and stats["replayed"] >= 1
    assert second.returncode == 0
