"""The action orchestrator: a deterministic generator; every piece of I/O is an activity.

Retries of the backend call are driven here with durable timers rather than with the SDK's
RetryOptions: the dispatch activity classifies each attempt (succeeded / transient / permanent)
and returns instead of raising, so a permanent error is never retried, a 429's Retry-After sets
the wait, every attempt is recorded (running -> retrying -> running ...) as it happens, and the
attempt history is at hand for the dead-letter record. RetryOptions would retry any failure blindly
with a fixed schedule and hide the attempts from this code.

Every path ends in a visible state:
- bookkeeping (the Cosmos DB writes) is retried on durable timers with capped exponential backoff
  for hours (`BOOKKEEPING_GIVE_UP_AFTER_S`), so an outage of Cosmos DB costs time, not the action;
- the status update to the gateway is its own best-effort activity: it never fails the action;
- any other failure (plan or dispatch raising, bookkeeping exhausted) is caught by the guard in
  `action_orchestrator`, which writes a dead letter with the reason and the attempt history and
  records the action as dead_lettered. Only when even that is impossible does the instance end
  Failed, and the dead-letter command lists Failed instances too.

Time is the orchestration's own clock (`context.current_utc_datetime`), which is replay-safe and
which tests advance by firing timers: hours of outage are simulated, never waited for.

Versions: an instance keeps the orchestration version it was started with (`context.version`, from
host.json's `defaultVersion`, `ORCHESTRATOR_VERSION` here). In-flight instances replay whatever code
is deployed, so a change to what this generator schedules (an activity added, removed, reordered or
renamed) bumps ORCHESTRATOR_VERSION and host.json together and keeps the old path for instances of
the older version until they have drained (docs/deploy.md, "Orchestrator changes and in-flight
instances"). Changes that schedule the same activities in the same order need no bump.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from function_app.errors import PipelineError
from function_app.registry import RetryPolicy

ORCHESTRATOR = "action_orchestrator"
#: The orchestration version new instances start with: host.json's durableTask.defaultVersion (a test
#: checks they agree) and the local worker's. Bump both for a change in what the orchestrator schedules.
ORCHESTRATOR_VERSION = "1.0"
PLAN, DISPATCH, RECORD, DEAD_LETTER, PUBLISH = (
    "plan_action",
    "dispatch_action",
    "record_action_status",
    "dead_letter_action",
    "publish_action_update",
)

#: Bookkeeping activities (Cosmos write, dead-letter write) fail only when the store is down: retried
#: on durable timers, 2 s doubling to at most 5 min between tries, for 6 hours in all.
BOOKKEEPING_FIRST_INTERVAL_S = 2.0
BOOKKEEPING_MAX_INTERVAL_S = 300.0
BOOKKEEPING_GIVE_UP_AFTER_S = 6 * 3600.0

#: A final status update the bus refused is tried again a few times (the gateway is waiting for it);
#: intermediate updates are sent once. Either way a lost update never fails the action: the result
#: document in Cosmos DB is the record.
FINAL_UPDATE_RETRY_DELAYS_S = (5.0, 30.0, 120.0)


class BookkeepingExhausted(PipelineError):
    """A bookkeeping activity kept failing for BOOKKEEPING_GIVE_UP_AFTER_S."""

    def __init__(self, activity: str, tries: int, last_error: str) -> None:
        super().__init__(f"{activity} failed {tries} times over the give-up window; last error: {last_error}")
        self.activity = activity


def instance_id_for(idempotency_key: str, replay_count: int = 0) -> str:
    """One orchestration per idempotency key (and per replay): a redelivered message finds it."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"action-{digest}" if replay_count == 0 else f"action-{digest}-r{replay_count}"


def bookkeeping_delay_s(failures: int) -> float:
    """Wait after the n-th consecutive failure: 2, 4, 8, ... capped at BOOKKEEPING_MAX_INTERVAL_S."""
    return min(BOOKKEEPING_MAX_INTERVAL_S, BOOKKEEPING_FIRST_INTERVAL_S * 2.0 ** min(failures - 1, 30))


def _bookkeeping(context: Any, name: str, payload: dict[str, Any]) -> Generator[Any, Any, Any]:
    started = context.current_utc_datetime
    failures = 0
    while True:
        try:
            return (yield context.call_activity(name, payload))
        except Exception as exc:  # the SDK surfaces an activity failure as a bare Exception
            failures += 1
            now = context.current_utc_datetime
            if (now - started).total_seconds() >= BOOKKEEPING_GIVE_UP_AFTER_S:
                raise BookkeepingExhausted(name, failures, str(exc)[:500]) from exc
            delay = bookkeeping_delay_s(failures)
            yield context.create_timer(now + timedelta(seconds=delay))


def _publish(context: Any, update: dict[str, Any] | None, final: bool) -> Generator[Any, Any, None]:
    """Best effort: tell the gateway; never raises (the result document is the record)."""
    if update is None:
        return
    delays = FINAL_UPDATE_RETRY_DELAYS_S if final else ()
    for attempt in range(len(delays) + 1):
        try:
            sent = yield context.call_activity(PUBLISH, {"update": update})
        except Exception:  # an activity crash is one more failed send, not a failed action
            sent = {"published": False}
        if sent.get("published"):
            return
        if attempt < len(delays):
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delays[attempt]))


class _Progress:
    """What the guard needs to write a dead letter: the attempts made so far."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.attempts = 0
        self.max_attempts: int | None = None


def _record(
    context: Any, request: dict[str, Any], status: str, progress: _Progress, **fields: Any
) -> Generator[Any, Any, Any]:
    payload: dict[str, Any] = {"request": request, "status": status, **fields}
    if progress.max_attempts is not None:
        payload.setdefault("maxAttempts", progress.max_attempts)
    if progress.history:
        payload.setdefault("history", progress.history)
    written = yield from _bookkeeping(context, RECORD, payload)
    final = status in ("succeeded", "failed", "dead_lettered")
    yield from _publish(context, (written or {}).get("update"), final)
    return written


def _dead_letter(
    context: Any, request: dict[str, Any], progress: _Progress, reason: str
) -> Generator[Any, Any, dict[str, Any]]:
    payload = {"request": request, "reason": reason, "history": progress.history}
    yield from _bookkeeping(context, DEAD_LETTER, payload)
    yield from _record(context, request, "dead_lettered", progress, attempts=progress.attempts, error=reason)
    return {"status": "dead_lettered", "attempts": progress.attempts, "error": reason}


def _run(context: Any, request: dict[str, Any], progress: _Progress) -> Generator[Any, Any, dict[str, Any]]:
    yield from _record(context, request, "queued", progress)
    plan = yield context.call_activity(PLAN, {"request": request})
    if not plan["ok"]:
        yield from _record(context, request, "failed", progress, error=plan["error"])
        return {"status": "failed", "attempts": 0, "error": plan["error"]}

    policy = RetryPolicy.from_wire(plan["retry"])
    progress.max_attempts = policy.max_attempts
    for attempt in range(1, policy.max_attempts + 1):
        progress.attempts = attempt
        yield from _record(context, request, "running", progress, attempts=attempt)
        result = yield context.call_activity(DISPATCH, {"request": request, "attempt": attempt})
        progress.history = [*progress.history, {k: v for k, v in result.items() if k != "result"}]
        if result["outcome"] == "succeeded":
            yield from _record(
                context, request, "succeeded", progress, attempts=attempt, result=result["result"]
            )
            return {"status": "succeeded", "attempts": attempt, "result": result["result"]}
        if result["outcome"] == "permanent_error":
            yield from _record(context, request, "failed", progress, attempts=attempt, error=result["error"])
            return {"status": "failed", "attempts": attempt, "error": result["error"]}
        if attempt < policy.max_attempts:
            delay = policy.delay_after(attempt, result.get("retryAfterS"))
            yield from _record(
                context, request, "retrying", progress, attempts=attempt, error=result["error"]
            )
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))

    reason = f"gave up after {policy.max_attempts} attempts; last error: {progress.history[-1]['error']}"
    return (yield from _dead_letter(context, request, progress, reason))


def action_orchestrator(context: Any) -> Generator[Any, Any, dict[str, Any]]:
    """The action's whole life; the guard turns any unexpected failure into a dead letter."""
    request: dict[str, Any] = context.get_input()
    progress = _Progress()
    try:
        return (yield from _run(context, request, progress))
    except BookkeepingExhausted as exc:
        if exc.activity == DEAD_LETTER:
            raise  # the dead-letter store itself is gone: the Failed instance is the visible record
        reason = f"orchestration failed: {exc}"
    except Exception as exc:  # plan/dispatch raised, or a bug: recorded, never silently lost
        reason = f"orchestration failed: {type(exc).__name__}: {str(exc)[:500]}"
    return (yield from _dead_letter(context, request, progress, reason))
