"""The action orchestrator replayed through the real azure-functions-durable code with histories
shaped as the Functions host sends them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from function_app import orchestration
from function_app.orchestration import (
    BOOKKEEPING_MAX_INTERVAL_S,
    bookkeeping_delay_s,
)
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
            return {
                "applied": True,
                "status": payload["status"],
                "attempts": payload.get("attempts", 0),
                "update": {"status": payload["status"], "attempts": payload.get("attempts", 0)},
            }
        if name == "publish_action_update":
            return {"published": True}
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


def test_bookkeeping_backoff_doubles_then_caps() -> None:
    """The wait between bookkeeping tries doubles from 2 s and never exceeds the cap."""
    delays = [bookkeeping_delay_s(n) for n in range(1, 12)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == BOOKKEEPING_MAX_INTERVAL_S and delays == sorted(delays)


def cosmos_down_for(minutes: float):
    """An answer function whose record/dead-letter activities fail until `minutes` of orchestration
    time have passed (the host's clock moves only when timers fire: simulated, not waited for)."""
    answer = scripted([attempt(1, "succeeded", 201, result={"ticketId": "T-9"})])
    host_ref: list[ScriptedHost] = []

    def flaky(name: str, payload: dict[str, Any]) -> Any:
        down = host_ref[0].clock < START + timedelta(minutes=minutes)
        if down and name in ("record_action_status", "dead_letter_action"):
            return RuntimeError("StoreError: cosmos unreachable")
        return answer(name, payload)

    host = ScriptedHost(flaky, make_request().to_wire())
    host_ref.append(host)
    return host


def test_cosmos_down_for_an_hour_costs_time_not_the_action() -> None:
    """Cosmos DB down for 60 simulated minutes: bookkeeping waits it out on capped timers and the action succeeds once."""
    host = cosmos_down_for(60)
    state = host.run(max_turns=2000)
    assert state["output"]["status"] == "succeeded"
    assert host.dispatches() == 1
    gaps = [b - a for a, b in zip([START, *host.timers], host.timers, strict=False)]
    assert max(gaps) <= timedelta(seconds=BOOKKEEPING_MAX_INTERVAL_S + 1)
    assert host.timers[-1] - START >= timedelta(minutes=60)
    assert host.statuses()[-1] == ("succeeded", 1)


def test_cosmos_down_past_the_give_up_window_ends_failed_not_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cosmos DB down longer than the give-up window: the dead letter cannot be written either, so the
    orchestration fails (a Failed instance the dead-letter command lists); it never dispatched.
    The window is shortened to 30 minutes here: replaying 12 simulated hours costs a minute."""
    monkeypatch.setattr(orchestration, "BOOKKEEPING_GIVE_UP_AFTER_S", 1800.0)
    host = cosmos_down_for(24 * 60)
    with pytest.raises(Exception, match="dead_letter_action failed"):
        host.run(max_turns=5000)
    assert host.dispatches() == 0


def test_update_queue_down_never_fails_the_action() -> None:
    """Every publish of a status update fails: the action still succeeds and every status is recorded."""
    answer = scripted([attempt(1, "succeeded", 201)])

    def no_bus(name: str, payload: dict[str, Any]) -> Any:
        if name == "publish_action_update":
            return RuntimeError("BusUnavailable: action-updates unreachable")
        return answer(name, payload)

    host = ScriptedHost(no_bus, make_request().to_wire())
    assert host.run()["output"]["status"] == "succeeded"
    assert host.statuses() == [("queued", 0), ("running", 1), ("succeeded", 1)]
    publishes = [p["update"]["status"] for name, p in host.calls if name == "publish_action_update"]
    # intermediate updates are sent once; the final one is tried again on timers
    assert publishes[:2] == ["queued", "running"] and publishes.count("succeeded") == 4


def test_unsent_update_is_reported_not_raised() -> None:
    """A publish activity that answers published=false for the final update is retried, then given up."""
    answer = scripted([attempt(1, "succeeded", 201)])
    sent: list[str] = []

    def refusing(name: str, payload: dict[str, Any]) -> Any:
        if name == "publish_action_update":
            sent.append(payload["update"]["status"])
            return {"published": payload["update"]["status"] != "succeeded", "error": "down"}
        return answer(name, payload)

    host = ScriptedHost(refusing, make_request().to_wire())
    assert host.run()["output"]["status"] == "succeeded"
    assert sent.count("succeeded") == 4 and len(host.timers) == 3


@pytest.mark.parametrize("failing", ["plan_action", "dispatch_action"])
def test_unexpected_activity_failure_is_dead_lettered_with_history(failing: str) -> None:
    """plan or dispatch raising (a bug, a crash) ends dead_lettered with the reason, not as a Failed instance."""
    answer = scripted([attempt(1, "transient_error", 503)])
    calls = {"dispatch_action": 0}

    def broken(name: str, payload: dict[str, Any]) -> Any:
        if name == failing == "plan_action":
            return KeyError("registry broken")
        if name == failing == "dispatch_action":
            calls[name] += 1
            if calls[name] == 2:
                return TypeError("dispatch bug")
        return answer(name, payload)

    host = ScriptedHost(broken, make_request().to_wire())
    state = host.run()
    assert state["output"]["status"] == "dead_lettered"
    assert "orchestration failed" in state["output"]["error"]
    dead = [p for name, p in host.calls if name == "dead_letter_action"]
    assert len(dead) == 1 and "orchestration failed" in dead[0]["reason"]
    assert len(dead[0]["history"]) == (0 if failing == "plan_action" else 1)
    assert host.statuses()[-1][0] == "dead_lettered"


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
