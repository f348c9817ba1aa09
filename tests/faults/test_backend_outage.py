"""The tickets backend fails in the ways real services fail (500, 503, a call that outlives the
dispatch timeout), then recovers or stays down; the pipeline retries per policy, dead-letters with
the attempt history, and a replay after recovery succeeds exactly once."""

from __future__ import annotations

import io

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from action_bus.local import RedisStreamsActionBus
from agent_contracts import ActionStatus
from function_app import deadletters
from function_app.runtime import Runtime
from function_app.settings import Settings
from function_app.worker.service import Worker
from tests.faults.conftest import Scenario
from tests.function_app.helpers import control, final_result, make_request, worker_tick
from tests.polling import eventually

ATTEMPTS = 4


@pytest.fixture
def settings(app_env: dict[str, str]) -> Settings:
    """Four attempts, short backoff, and a dispatch timeout short enough to trip on purpose."""
    return Settings.from_env(
        {
            **app_env,
            "ACTION_RETRY_POLICIES": f"create_ticket=0.1:{ATTEMPTS}",
            "DISPATCH_TIMEOUT_SECONDS": "0.5",
        }
    )


@pytest.mark.scenario(
    "backend 500, 503, timeout, then recovers",
    "HTTP 500, HTTP 503, a 1 s stall (dispatch timeout 0.5 s), then healthy",
    f"retried per policy ({ATTEMPTS} attempts): 3 transient errors then succeeded, one ticket",
)
async def test_mixed_transient_failures_are_retried_per_policy(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, scenario: Scenario
) -> None:
    """500, 503 and a timed-out call are each retried with backoff; the fourth attempt succeeds and one ticket exists."""
    await control(
        backend,
        "PUT",
        "/_control/faults",
        {
            "rules": [
                {"path": "/tickets", "status": 500, "times": 1},
                {"path": "/tickets", "status": 503, "times": 1},
                {
                    "path": "/tickets",
                    "delay_s": 1.0,
                    "times": 1,
                },  # acts late: the retry must not make a second ticket
            ]
        },
    )
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    result = await eventually(final_result(runtime, request), tick=worker_tick(Worker(aredis, runtime)))
    await eventually(lambda: _settled(backend))
    history = [(a.outcome, a.status_code) for a in result.attempt_history]
    stats = await control(backend, "GET", "/_control/stats")
    scenario.observed = (
        f"{result.status.value} after {result.attempts} attempts {history}; tickets {stats['tickets']}"
    )
    assert result.status is ActionStatus.succeeded and result.attempts == ATTEMPTS
    assert history == [
        ("transient_error", 500),
        ("transient_error", 503),
        ("transient_error", None),
        ("succeeded", 201),
    ]
    assert "no answer within 0.5s" in (result.attempt_history[2].error or "")
    assert stats["tickets"] == 1


async def _settled(backend: TestServer) -> bool:
    """The stalled request has finished (it answers from the idempotency store or made the one ticket)."""
    stats = await control(backend, "GET", "/_control/stats")
    return stats["tickets"] == 1 and stats["requests"] >= ATTEMPTS and not stats["faults_left"]


@pytest.mark.scenario(
    "backend stays down, recovers, replay",
    f"HTTP 503 on every attempt ({ATTEMPTS}), then the backend is fixed",
    "dead-lettered with the attempt history; one replay succeeds once; a second replay is refused",
)
async def test_down_backend_dead_letters_then_replays_once(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, settings: Settings, scenario: Scenario
) -> None:
    """Every attempt fails: dead-lettered with its history; after recovery one replay makes one ticket."""
    await control(
        backend,
        "PUT",
        "/_control/faults",
        {"rules": [{"path": "/tickets", "status": 503, "times": ATTEMPTS, "retry_after": 0}]},
    )
    request = make_request()
    await RedisStreamsActionBus(aredis).publish(request)
    tick = worker_tick(Worker(aredis, runtime))
    dead = await eventually(final_result(runtime, request), tick=tick)
    assert dead.status is ActionStatus.dead_lettered and dead.attempts == ATTEMPTS
    assert [a.status_code for a in dead.attempt_history] == [503] * ATTEMPTS
    assert (await control(backend, "GET", "/_control/stats"))["tickets"] == 0

    out = io.StringIO()
    assert await deadletters.run(["replay", str(request.action_id)], settings, out) == 0
    replayed = await eventually(final_result(runtime, request, replay_count=1), tick=tick)
    again = io.StringIO()
    second = await deadletters.run(["replay", str(request.action_id)], settings, again)
    for _ in range(3):
        await tick()
    stats = await control(backend, "GET", "/_control/stats")
    scenario.observed = (
        f"dead_lettered after {dead.attempts} attempts (history {[a.status_code for a in dead.attempt_history]}); "
        f"replay -> {replayed.status.value} in {replayed.attempts} attempt; second replay exit {second}; "
        f"tickets {stats['tickets']}"
    )
    assert replayed.status is ActionStatus.succeeded and replayed.attempts == 1
    assert second == 1 and "no dead letter" in again.getvalue()
    assert stats["tickets"] == 1
