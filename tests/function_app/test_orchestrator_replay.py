"""The action orchestrator replayed through the real azure-functions-durable code with histories
shaped as the Functions host sends them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from function_app.registry import RetryPolicy
from tests.function_app.durable_host import START, ScriptedHost, orchestrator_handle
from tests.function_app.helpers import make_request

POLICY = RetryPolicy(first_interval_s=2.0, max_attempts=3, backoff_coefficient=2.0, max_interval_s=60.0)


def attempt(
    n: int, outcome: str, status: int | None = None, retry_after: float | None = None, result: Any = None
) -> dict[str, Any]:
    return {
        "attempt": n,
        "startedAt": "2026-01-01T12:00:00+00:00",
        "finishedAt": "2026-01-01T12:00:01+00:00",
        "outcome": outcome,
        "statusCode": status,
        "error": None if outcome == "succeeded" else f"HTTP {status}",
        "result": result,
        "retryAfterS": retry_after,
    }


def scripted(outcomes: list[dict[str, Any]], plan: dict[str, Any] | None = None):
    remaining = list(outcomes)

    def answer(name: str, payload: dict[str, Any]) -> Any:
        if name == "plan_action":
            return plan or {"ok": True, "retry": POLICY.to_wire()}
        if name == "dispatch_action":
            return remaining.pop(0)
        if name == "record_action_status":
            return {"applied": True, "status": payload["status"], "attempts": payload.get("attempts", 0)}
        if name == "dead_letter_action":
            return {"deadLettered": payload["request"]["actionId"]}
        raise AssertionError(name)

    return answer


def host_for(outcomes: list[dict[str, Any]], **kwargs: Any) -> ScriptedHost:
    return ScriptedHost(scripted(outcomes, **kwargs), make_request().to_wire())


def test_success_records_queued_running_succeeded() -> None:
    """A first-attempt success records queued, running(1), succeeded(1) and returns the result."""
    host = host_for([attempt(1, "succeeded", 201, result={"ticketId": "T-1"})])
    state = host.run()
    assert state["output"] == {"status": "succeeded", "attempts": 1, "result": {"ticketId": "T-1"}}
    assert host.statuses() == [("queued", 0), ("running", 1), ("succeeded", 1)]
    assert host.timers == []


def test_transient_failure_then_success_waits_backoff() -> None:
    """A 503 then a success: retrying(1) recorded, one durable timer at the first interval, then success."""
    host = host_for([attempt(1, "transient_error", 503), attempt(2, "succeeded", 201, result={"ok": 1})])
    state = host.run()
    assert state["output"]["status"] == "succeeded"
    assert host.statuses() == [
        ("queued", 0),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
    assert host.dispatches() == 2
    assert len(host.timers) == 1 and host.timers[0] - START >= timedelta(seconds=2)
    assert host.timers[0] - START < timedelta(seconds=3)


def test_retry_after_longer_than_backoff_is_honoured() -> None:
    """A 429 with Retry-After 30 s makes the durable timer wait 30 s, not the 2 s backoff."""
    host = host_for([attempt(1, "transient_error", 429, retry_after=30.0), attempt(2, "succeeded", 200)])
    host.run()
    assert timedelta(seconds=30) <= host.timers[0] - START < timedelta(seconds=31)


def test_exhausted_retries_dead_letter_with_history() -> None:
    """Three transient failures: two timers (2 s, 4 s), a dead-letter record with all attempts, status dead_lettered."""
    host = host_for([attempt(i, "transient_error", 500) for i in (1, 2, 3)])
    state = host.run()
    assert state["output"]["status"] == "dead_lettered"
    assert host.dispatches() == 3
    gaps = [host.timers[0] - START, host.timers[1] - host.timers[0]]
    assert timedelta(seconds=2) <= gaps[0] < timedelta(seconds=3)
    assert timedelta(seconds=4) <= gaps[1] < timedelta(seconds=5)
    dead = [p for name, p in host.calls if name == "dead_letter_action"]
    assert len(dead) == 1 and [h["attempt"] for h in dead[0]["history"]] == [1, 2, 3]
    assert "3 attempts" in dead[0]["reason"]
    assert host.statuses()[-1] == ("dead_lettered", 3)


def test_permanent_error_fails_without_retry() -> None:
    """A 422 from the backend fails the action at once: one dispatch, no timer, no dead letter."""
    host = host_for([attempt(1, "permanent_error", 422)])
    state = host.run()
    assert state["output"]["status"] == "failed"
    assert host.dispatches() == 1 and host.timers == []
    assert host.statuses()[-1] == ("failed", 1)
    assert not [name for name, _ in host.calls if name == "dead_letter_action"]


def test_invalid_arguments_fail_before_any_dispatch() -> None:
    """A plan that rejects the arguments records failed and never dispatches."""
    host = host_for([], plan={"ok": False, "error": "invalid arguments for create_ticket"})
    state = host.run()
    assert state["output"]["status"] == "failed"
    assert host.dispatches() == 0
    assert host.statuses() == [("queued", 0), ("failed", 0)]


def test_failed_status_write_is_retried_on_a_timer() -> None:
    """A record activity that fails once (Cosmos down) is retried after a durable timer, then goes on."""
    answer = scripted([attempt(1, "succeeded", 201)])
    failures = iter([RuntimeError("cosmos down")])

    def flaky(name: str, payload: dict[str, Any]) -> Any:
        if name == "record_action_status" and payload["status"] == "running":
            return next(failures, None) or answer(name, payload)
        return answer(name, payload)

    host = ScriptedHost(flaky, make_request().to_wire())
    assert host.run()["output"]["status"] == "succeeded"
    assert len(host.timers) == 1
    assert host.statuses().count(("running", 1)) == 2


@pytest.mark.parametrize(
    "outcomes",
    [
        [attempt(1, "succeeded", 201)],
        [attempt(1, "transient_error", 503), attempt(2, "succeeded", 201)],
        [attempt(i, "transient_error", 500) for i in (1, 2, 3)],
    ],
)
def test_replaying_the_same_history_twice_is_deterministic(outcomes: list[dict[str, Any]]) -> None:
    """The finished history replayed twice more yields byte-identical state (actions and output)."""
    host = host_for(outcomes)
    host.run()
    handle = orchestrator_handle()
    first, second = handle(host.context()), handle(host.context())
    assert first == second
    assert json.loads(first)["isDone"] is True
