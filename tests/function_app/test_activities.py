"""Activities against real services: the sample backend on a free port failing on purpose, the
Cosmos DB server, and the Redis update stream."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from action_bus.local import RedisUpdateSink, RedisUpdateSource
from agent_contracts import ActionStatus
from function_app import activities
from function_app.dispatch import dispatch_once
from function_app.registry import ActionRegistry
from function_app.runtime import Runtime
from local_stack.processes import free_port
from tests.function_app.helpers import make_request, read_stored


async def set_faults(backend: TestServer, *rules: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(backend.make_url("/_control/faults"), json={"rules": list(rules)}) as response:
            assert response.status == 200


async def backend_stats(backend: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(backend.make_url("/_control/stats")) as response:
        return await response.json()


def payload(attempt: int = 1, **overrides: Any) -> dict[str, Any]:
    return {"request": make_request(**overrides).to_wire(), "attempt": attempt}


async def test_dispatch_success_returns_the_backend_result(runtime: Runtime, backend: TestServer) -> None:
    """A 201 from the backend is a success carrying the created ticket."""
    outcome = await activities.dispatch_action(payload(), runtime)
    assert outcome["outcome"] == "succeeded" and outcome["statusCode"] == 201
    assert outcome["result"]["ticketId"].startswith("T-")


async def test_dispatch_sends_idempotency_key_and_trace_context(
    runtime: Runtime, backend: TestServer
) -> None:
    """The backend receives the Idempotency-Key and a traceparent in the trace the gateway started."""
    request = make_request()
    await activities.dispatch_action({"request": request.to_wire(), "attempt": 1}, runtime)
    [seen] = (await backend_stats(backend))["recent"]
    assert seen["Idempotency-Key"] == request.idempotency_key
    assert seen["traceparent"].split("-")[1] == request.trace_context["traceparent"].split("-")[1]


async def test_dispatch_repeat_with_same_key_makes_one_ticket(runtime: Runtime, backend: TestServer) -> None:
    """The Idempotency-Key header makes a repeated dispatch return the first ticket, not a second one."""
    first = await activities.dispatch_action(payload(1), runtime)
    second = await activities.dispatch_action(payload(2), runtime)
    assert first["result"] == second["result"]
    stats = await backend_stats(backend)
    assert stats["tickets"] == 1 and stats["replayed"] == 1


async def test_dispatch_5xx_is_transient(runtime: Runtime, backend: TestServer) -> None:
    """A 500 is a transient error with its status code."""
    await set_faults(backend, {"path": "/tickets", "status": 500})
    outcome = await activities.dispatch_action(payload(), runtime)
    assert (outcome["outcome"], outcome["statusCode"]) == ("transient_error", 500)
    assert (await backend_stats(backend))["tickets"] == 0


async def test_dispatch_429_keeps_retry_after(runtime: Runtime, backend: TestServer) -> None:
    """A 429 with Retry-After: 7 is transient and carries 7 seconds for the orchestrator's timer."""
    await set_faults(backend, {"path": "/tickets", "status": 429, "retry_after": 7})
    outcome = await activities.dispatch_action(payload(), runtime)
    assert outcome["outcome"] == "transient_error" and outcome["retryAfterS"] == 7.0


async def test_dispatch_4xx_is_permanent(runtime: Runtime, backend: TestServer) -> None:
    """A 400 from the backend is permanent (never retried) and drops any Retry-After."""
    await set_faults(backend, {"path": "/tickets", "status": 400, "retry_after": 3})
    outcome = await activities.dispatch_action(payload(), runtime)
    assert outcome["outcome"] == "permanent_error" and outcome["retryAfterS"] is None


async def test_dispatch_missing_ticket_is_permanent(runtime: Runtime, backend: TestServer) -> None:
    """get_ticket for an unknown id: the backend's 404 is a permanent error."""
    outcome = await activities.dispatch_action(
        payload(name="get_ticket", arguments={"ticket_id": "T-NOPE"}), runtime
    )
    assert (outcome["outcome"], outcome["statusCode"]) == ("permanent_error", 404)


async def test_dispatch_timeout_is_transient(runtime: Runtime, backend: TestServer) -> None:
    """A backend that does not answer within the dispatch timeout is a transient error."""
    await set_faults(backend, {"path": "/tickets", "delay_s": 3})
    outcome = await dispatch_once(runtime.http, runtime.registry, make_request(), 1, timeout_s=0.3)
    assert outcome["outcome"] == "transient_error" and "no answer" in outcome["error"]


async def test_dispatch_connection_refused_is_transient(runtime: Runtime) -> None:
    """Nothing listening on the backend's port is a transient error."""
    spec = replace(runtime.registry.get("create_ticket"), base_url=f"http://127.0.0.1:{free_port()}")
    registry = ActionRegistry([spec])
    outcome = await dispatch_once(runtime.http, registry, make_request(), 1, timeout_s=2)
    assert outcome["outcome"] == "transient_error"


async def test_dispatch_invalid_arguments_never_reach_the_backend(
    runtime: Runtime, backend: TestServer
) -> None:
    """Arguments that break the action's schema are a permanent error decided before any HTTP call."""
    outcome = await activities.dispatch_action(payload(arguments={"title": ""}), runtime)
    assert outcome["outcome"] == "permanent_error" and "invalid arguments" in outcome["error"]
    assert (await backend_stats(backend))["requests"] == 0


async def test_plan_rejects_unknown_action_and_gives_policy(runtime: Runtime) -> None:
    """plan_action refuses an unregistered name and returns the configured retry policy for a known one."""
    unknown = await activities.plan_action(payload(name="launch_rocket"), runtime)
    known = await activities.plan_action(payload(), runtime)
    assert unknown == {"ok": False, "error": "no action named 'launch_rocket' is registered"}
    assert known["ok"] and known["retry"]["maxAttempts"] == 3 and known["retry"]["firstIntervalS"] == 0.1


async def record_and_publish(runtime: Runtime, payload: dict[str, Any]) -> dict[str, Any]:
    """What the orchestrator does: the record activity, then the publish activity with its update."""
    written = await activities.record_action_status(payload, runtime)
    if written["update"] is not None:
        assert await activities.publish_action_update({"update": written["update"]}, runtime) == {
            "published": True
        }
    return written


async def test_record_writes_cosmos_and_hands_over_the_update(runtime: Runtime, aredis: Any) -> None:
    """record_action_status stores the document and returns it; publishing it puts the status on the update stream."""
    request = make_request()
    await record_and_publish(runtime, {"request": request.to_wire(), "status": "queued"})
    await record_and_publish(
        runtime, {"request": request.to_wire(), "status": "running", "attempts": 1, "maxAttempts": 3}
    )
    stored, _ = await read_stored(runtime.results, request.conversation_id, str(request.action_id))
    assert stored.status is ActionStatus.running and stored.max_attempts == 3
    source = RedisUpdateSource(aredis, runtime.settings.servicebus_updates_queue)
    updates = await source.next_updates(10, wait_s=1)
    assert [u.status.value for _, u in updates] == ["queued", "running"]


async def test_record_rerun_hands_over_again_but_stale_does_not(runtime: Runtime, aredis: Any) -> None:
    """Re-running the same record hands the update over again (at-least-once); a backwards one is neither stored nor sent."""
    request = make_request()
    wire = request.to_wire()
    for status in ("queued", "succeeded", "succeeded"):
        await record_and_publish(runtime, {"request": wire, "status": status, "attempts": 1})
    stale = await activities.record_action_status(
        {"request": wire, "status": "running", "attempts": 1}, runtime
    )
    source = RedisUpdateSource(aredis, runtime.settings.servicebus_updates_queue)
    statuses = [u.status.value for _, u in await source.next_updates(10, wait_s=1)]
    assert statuses == [
        "queued",
        "succeeded",
    ]  # the re-sent succeeded has the same message id: dropped by the bus
    assert stale == {"applied": False, "status": "succeeded", "attempts": 1, "update": None}


async def test_publish_with_bus_down_reports_instead_of_raising(runtime: Runtime, aredis: Any) -> None:
    """The updates queue unreachable: publish_action_update answers published=false with the reason."""
    request = make_request()
    written = await activities.record_action_status(
        {"request": request.to_wire(), "status": "queued"}, runtime
    )
    down = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    broken = replace(runtime, updates=RedisUpdateSink(down, runtime.settings.servicebus_updates_queue))
    try:
        answer = await activities.publish_action_update({"update": written["update"]}, broken)
    finally:
        await down.aclose()
    assert answer["published"] is False and "redis stream" in answer["error"]


async def test_dead_letter_activity_stores_reason_and_history(runtime: Runtime) -> None:
    """dead_letter_action writes the request, the reason and every attempt to the dead-letter container."""
    request = make_request()
    history = [
        {
            "attempt": n,
            "startedAt": "2026-01-01T00:00:00+00:00",
            "outcome": "transient_error",
            "statusCode": 503,
            "error": "HTTP 503",
        }
        for n in (1, 2)
    ]
    await activities.dead_letter_action(
        {"request": request.to_wire(), "reason": "gave up", "history": history}, runtime
    )
    await activities.dead_letter_action(
        {"request": request.to_wire(), "reason": "gave up", "history": history}, runtime
    )
    letters = await runtime.dead_letters.list()
    assert len(letters) == 1
    assert letters[0].reason == "gave up" and [a.attempt for a in letters[0].attempt_history] == [1, 2]
    assert letters[0].request is not None
    assert letters[0].request["actionId"] == str(request.action_id)
