"""The action orchestrator: a deterministic generator; every piece of I/O is an activity.

Retries of the backend call are driven here with durable timers rather than with the SDK's
RetryOptions: the dispatch activity classifies each attempt (succeeded / transient / permanent)
and returns instead of raising, so a permanent error is never retried, a 429's Retry-After sets
the wait, every attempt is recorded (running -> retrying -> running ...) as it happens, and the
attempt history is at hand for the dead-letter record. RetryOptions would retry any failure blindly
with a fixed schedule and hide the attempts from this code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from function_app.registry import RetryPolicy

ORCHESTRATOR = "action_orchestrator"
PLAN, DISPATCH, RECORD, DEAD_LETTER = (
    "plan_action",
    "dispatch_action",
    "record_action_status",
    "dead_letter_action",
)

#: Bookkeeping activities (Cosmos write, dead-letter write) fail only when the store is down: retry
#: them on a fixed durable-timer schedule before giving up on the orchestration.
BOOKKEEPING_ATTEMPTS = 6
BOOKKEEPING_FIRST_INTERVAL_S = 2.0


def instance_id_for(idempotency_key: str, replay_count: int = 0) -> str:
    """One orchestration per idempotency key (and per replay): a redelivered message finds it."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"action-{digest}" if replay_count == 0 else f"action-{digest}-r{replay_count}"


def _bookkeeping(context: Any, name: str, payload: dict[str, Any]) -> Generator[Any, Any, Any]:
    for attempt in range(1, BOOKKEEPING_ATTEMPTS + 1):
        try:
            return (yield context.call_activity(name, payload))
        except Exception:  # the SDK surfaces an activity failure as a bare Exception; re-raised when spent
            if attempt == BOOKKEEPING_ATTEMPTS:
                raise
            delay = BOOKKEEPING_FIRST_INTERVAL_S * 2 ** (attempt - 1)
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
    return None


def _record(context: Any, request: dict[str, Any], status: str, **fields: Any) -> Generator[Any, Any, Any]:
    payload = {"request": request, "status": status, **fields}
    return (yield from _bookkeeping(context, RECORD, payload))


def action_orchestrator(context: Any) -> Generator[Any, Any, dict[str, Any]]:
    request: dict[str, Any] = context.get_input()
    yield from _record(context, request, "queued")
    plan = yield context.call_activity(PLAN, {"request": request})
    if not plan["ok"]:
        yield from _record(context, request, "failed", error=plan["error"])
        return {"status": "failed", "attempts": 0, "error": plan["error"]}

    policy = RetryPolicy.from_wire(plan["retry"])
    history: list[dict[str, Any]] = []
    common = {"maxAttempts": policy.max_attempts}
    for attempt in range(1, policy.max_attempts + 1):
        yield from _record(context, request, "running", attempts=attempt, history=history, **common)
        result = yield context.call_activity(DISPATCH, {"request": request, "attempt": attempt})
        history = [*history, {k: v for k, v in result.items() if k != "result"}]
        if result["outcome"] == "succeeded":
            yield from _record(
                context,
                request,
                "succeeded",
                attempts=attempt,
                history=history,
                result=result["result"],
                **common,
            )
            return {"status": "succeeded", "attempts": attempt, "result": result["result"]}
        if result["outcome"] == "permanent_error":
            yield from _record(
                context, request, "failed", attempts=attempt, history=history, error=result["error"], **common
            )
            return {"status": "failed", "attempts": attempt, "error": result["error"]}
        if attempt < policy.max_attempts:
            delay = policy.delay_after(attempt, result.get("retryAfterS"))
            yield from _record(
                context,
                request,
                "retrying",
                attempts=attempt,
                history=history,
                error=result["error"],
                **common,
            )
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))

    reason = f"gave up after {policy.max_attempts} attempts; last error: {history[-1]['error']}"
    yield from _bookkeeping(context, DEAD_LETTER, {"request": request, "reason": reason, "history": history})
    yield from _record(
        context,
        request,
        "dead_lettered",
        attempts=policy.max_attempts,
        history=history,
        error=reason,
        **common,
    )
    return {"status": "dead_lettered", "attempts": policy.max_attempts, "error": reason}
