"""History events shaped as the Durable extension sends them, and one replay of an orchestrator."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXECUTION_STARTED, TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 0, 4, 5, 6
TIMER_CREATED, TIMER_FIRED, ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 10, 11, 12, 13
EVENT_RAISED = 15
SUB_ORCHESTRATION_CREATED, SUB_ORCHESTRATION_COMPLETED, SUB_ORCHESTRATION_FAILED = 7, 8, 9
CALL_ACTIVITY, CREATE_TIMER, CONTINUE_AS_NEW, WAIT_FOR_EXTERNAL_EVENT = 0, 5, 4, 6
CALL_ACTIVITY_WITH_RETRY, CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY = 1, 2, 3
WHEN_ANY, WHEN_ALL = 11, 12
#: The replay schema the extension offers (upperSchemaVersion V2, upperSchemaVersionNew V3): the SDK
#: then answers one action per yield, task_all/task_any as WhenAll/WhenAny with their children.
UPPER_SCHEMA_VERSION, UPPER_SCHEMA_VERSION_NEW = 1, 2
#: The SDK's action types by number, for error messages about the ones the local worker lacks.
ACTION_NAMES = {
    0: "CallActivity",
    1: "CallActivityWithRetry",
    2: "CallSubOrchestrator",
    3: "CallSubOrchestratorWithRetry",
    4: "ContinueAsNew",
    5: "CreateTimer",
    6: "WaitForExternalEvent",
    7: "CallEntity",
    8: "CallHttp",
    9: "SignalEntity",
    11: "WhenAny",
    12: "WhenAll",
}
OUT_OF_PROC_MARKER = "$OutOfProcData$:"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event(event_type: int, at: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": event_type, "EventId": event_id, "IsPlayed": False, "Timestamp": iso(at), **fields}


def orchestrator_started(at: datetime) -> dict[str, Any]:
    return event(ORCHESTRATOR_STARTED, at)


def execution_started(at: datetime, name: str, input_json: str, version: str = "") -> dict[str, Any]:
    return event(EXECUTION_STARTED, at, Name=name, Input=input_json, Version=version)


def version_of(history: list[dict[str, Any]]) -> str:
    """The orchestration version the instance was started with ('' before versioning)."""
    started = next((e for e in history if e["EventType"] == EXECUTION_STARTED), None)
    return str((started or {}).get("Version") or "")


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as the extension compares orchestration versions: as dotted numbers when both are,
    else as strings; no version is older than any."""
    if a == b:
        return 0
    if not a or not b:
        return -1 if not a else 1
    try:
        left, right = [int(p) for p in a.split(".")], [int(p) for p in b.split(".")]
    except ValueError:
        return -1 if a < b else 1
    width = max(len(left), len(right))
    left, right = left + [0] * (width - len(left)), right + [0] * (width - len(right))
    return (left > right) - (left < right)


def orchestrator_completed(at: datetime) -> dict[str, Any]:
    return event(ORCHESTRATOR_COMPLETED, at)


def task_scheduled(at: datetime, task_id: int, name: str) -> dict[str, Any]:
    return event(TASK_SCHEDULED, at, task_id, Name=name)


def task_completed(at: datetime, task_id: int, result_json: str) -> dict[str, Any]:
    return event(TASK_COMPLETED, at, TaskScheduledId=task_id, Result=result_json)


def task_failed(at: datetime, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(TASK_FAILED, at, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(at: datetime, task_id: int, fire_at: str) -> dict[str, Any]:
    return event(TIMER_CREATED, at, task_id, FireAt=fire_at)


def timer_fired(at: datetime, task_id: int, fire_at: str) -> dict[str, Any]:
    return event(TIMER_FIRED, at, TimerId=task_id, FireAt=fire_at)


def sub_orchestration_created(
    at: datetime, task_id: int, name: str, instance_id: str, input_json: str | None
) -> dict[str, Any]:
    return event(SUB_ORCHESTRATION_CREATED, at, task_id, Name=name, InstanceId=instance_id, Input=input_json)


def sub_orchestration_completed(at: datetime, task_id: int, result_json: str) -> dict[str, Any]:
    return event(SUB_ORCHESTRATION_COMPLETED, at, TaskScheduledId=task_id, Result=result_json)


def sub_orchestration_failed(at: datetime, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(SUB_ORCHESTRATION_FAILED, at, TaskScheduledId=task_id, Reason=reason, Details=details)


def event_raised(at: datetime, name: str, input_json: str | None) -> dict[str, Any]:
    return event(EVENT_RAISED, at, Name=name, Input=input_json)


def with_played_flags(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """IsPlayed as the host sets it: true for every event before the current episode."""
    last_start = max((i for i, e in enumerate(history) if e["EventType"] == ORCHESTRATOR_STARTED), default=0)
    return [{**e, "IsPlayed": i < last_start} for i, e in enumerate(history)]


def context_json(
    instance_id: str, history: list[dict[str, Any]], input_json: str | None, parent_id: str | None = None
) -> str:
    return json.dumps(
        {
            "history": with_played_flags(history),
            "instanceId": instance_id,
            "isReplaying": len(history) > 2,
            "parentInstanceId": parent_id,
            "input": input_json,
            "upperSchemaVersion": UPPER_SCHEMA_VERSION,
            "upperSchemaVersionNew": UPPER_SCHEMA_VERSION_NEW,
        }
    )


@dataclass(frozen=True)
class Turn:
    """What one replay of the orchestrator answered."""

    done: bool
    actions: list[dict[str, Any]] = field(default_factory=list)
    output: Any = None
    error: str | None = None
    custom_status: Any = None


def replay(
    handle: Callable[[str], str],
    instance_id: str,
    history: list[dict[str, Any]],
    input_json: str | None,
    parent_id: str | None = None,
) -> Turn:
    """Run the orchestrator over the history; a failed orchestration comes back as Turn.error.
    Turn.actions holds one action per yield (a task_all/task_any as one compound action)."""
    try:
        state = json.loads(handle(context_json(instance_id, history, input_json, parent_id)))
    except Exception as exc:  # the SDK raises with its state appended: that is the orchestration's failure
        message = str(exc)
        if OUT_OF_PROC_MARKER not in message:
            raise
        error, _, raw_state = message.partition(OUT_OF_PROC_MARKER)
        state = json.loads(raw_state)
        return Turn(done=False, actions=_flat(state), error=state.get("error") or error.strip())
    return Turn(
        done=bool(state.get("isDone")),
        actions=_flat(state),
        output=state.get("output"),
        custom_status=state.get("customStatus"),
    )


def _flat(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [action for group in state.get("actions", []) for action in group]
