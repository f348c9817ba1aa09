"""Activities: all the I/O of an action's orchestration. Each takes the JSON payload the
orchestrator sent and the runtime; the Functions bindings in blueprints/ are thin wrappers.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.trace import SpanKind

from action_bus.ports import ActionBusError
from agent_contracts import ActionRequest, ActionResult, ActionStatus
from agent_contracts.actions import AttemptRecord, utcnow
from function_app.deadletters_store import DeadLetter
from function_app.dispatch import dispatch_once, validate_arguments
from function_app.results import write_transition
from function_app.runtime import Runtime
from observability import consumer_span

log = logging.getLogger(__name__)


async def plan_action(payload: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Check the action exists and its arguments fit; return its retry policy (recorded in history)."""
    request = ActionRequest.model_validate(payload["request"])
    problem = validate_arguments(runtime.registry, request)
    if problem is not None:
        return {"ok": False, "error": problem}
    return {"ok": True, "retry": runtime.registry.get(request.name).retry.to_wire()}


async def dispatch_action(payload: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    request = ActionRequest.model_validate(payload["request"])
    return await dispatch_once(
        runtime.http, runtime.registry, request, int(payload["attempt"]), runtime.settings.dispatch_timeout_s
    )


def attempt_records(history: list[dict[str, Any]]) -> list[AttemptRecord]:
    return [
        AttemptRecord(
            attempt=h["attempt"],
            started_at=h["startedAt"],
            finished_at=h.get("finishedAt"),
            outcome=h["outcome"],
            status_code=h.get("statusCode"),
            error=h.get("error"),
        )
        for h in history
    ]


def result_from(payload: dict[str, Any]) -> ActionResult:
    request = ActionRequest.model_validate(payload["request"])
    status = ActionStatus(payload["status"])
    now = utcnow()
    return ActionResult.queued_for(request).model_copy(
        update={
            "status": status,
            "attempts": int(payload.get("attempts", 0)),
            "max_attempts": payload.get("maxAttempts"),
            "result": payload.get("result"),
            "error": payload.get("error"),
            "attempt_history": attempt_records(payload.get("history", [])),
            "updated_at": now,
            "completed_at": now if status.is_final else None,
        }
    )


async def record_action_status(payload: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Write one status transition to Cosmos DB (idempotent, never backwards).

    Returns the stored document as `update` when this transition is what is stored (newly, or
    already by an earlier run of this activity), for `publish_action_update` to send; the send is a
    separate activity so that an outage of the updates queue can never fail the bookkeeping.
    """
    new = result_from(payload)
    request_context = ActionRequest.model_validate(payload["request"]).trace_context
    # The Cosmos write as a client span of the turn's trace (the end of gateway -> bus -> activity).
    with consumer_span(
        "cosmos upsert action_results",
        request_context,
        {
            "db.system": "cosmosdb",
            "db.operation.name": "upsert",
            "agent.action_id": new.id,
            "agent.action_status": new.status.value,
        },
        kind=SpanKind.CLIENT,
        tracer_name="function_app",
    ):
        written = await write_transition(runtime.results, new)
    stored = written.stored
    same = (stored.status, stored.attempts, stored.replay_count) == (
        new.status,
        new.attempts,
        new.replay_count,
    )
    return {
        "applied": written.applied,
        "status": stored.status.value,
        "attempts": stored.attempts,
        # Also when this exact transition was already stored: the activity may be re-run after a crash
        # between the write and the publish, and the gateway ignores an update it has seen.
        "update": stored.to_wire() if written.applied or same else None,
    }


async def publish_action_update(payload: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Best effort: send one status change to the gateway. A bus outage is reported, not raised."""
    update = ActionResult.model_validate(payload["update"])
    try:
        await runtime.updates.publish_update(update)
    except ActionBusError as exc:
        log.warning("update %s/%s not sent: %s", update.id, update.status.value, exc)
        return {"published": False, "error": str(exc)[:500]}
    return {"published": True}


async def dead_letter_action(payload: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    request = ActionRequest.model_validate(payload["request"])
    letter = DeadLetter(
        id=str(request.action_id),
        kind="action",
        reason=payload["reason"],
        request=request.to_wire(),
        attempt_history=attempt_records(payload.get("history", [])),
        replay_count=request.replay_count,
    )
    await runtime.dead_letters.put(letter)
    log.warning("action %s (%s) dead-lettered: %s", request.action_id, request.name, payload["reason"])
    return {"deadLettered": letter.id}


ACTIVITIES = {
    "plan_action": plan_action,
    "dispatch_action": dispatch_action,
    "record_action_status": record_action_status,
    "publish_action_update": publish_action_update,
    "dead_letter_action": dead_letter_action,
}
