"""A minimal stand-in for the Durable extension's history bookkeeping, for orchestrator tests:
replays the orchestrator through the SDK with histories shaped as the host sends them, answering
each activity from a script. Independent of function_app.worker on purpose."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from function_app.app import build_app

START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def orchestrator_handle() -> Callable[[str], str]:
    functions = {f.get_function_name(): f for f in build_app().get_functions()}
    return functions["action_orchestrator"].get_user_function()


@dataclass
class ScriptedHost:
    """Answers activities with `answer(name, payload)`: a value (TaskCompleted) or an Exception (TaskFailed)."""

    answer: Callable[[str, dict[str, Any]], Any]
    input_: dict[str, Any]
    handle: Callable[[str], str] = field(default_factory=orchestrator_handle)
    clock: datetime = START
    history: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    timers: list[datetime] = field(default_factory=list)

    def _event(self, event_type: int, event_id: int = -1, **fields: Any) -> dict[str, Any]:
        return {
            "EventType": event_type,
            "EventId": event_id,
            "IsPlayed": False,
            "Timestamp": ts(self.clock),
            **fields,
        }

    def context(self) -> str:
        last = max(i for i, e in enumerate(self.history) if e["EventType"] == 12)
        played = [{**e, "IsPlayed": i < last} for i, e in enumerate(self.history)]
        return json.dumps(
            {
                "history": played,
                "instanceId": "action-test",
                "isReplaying": False,
                "parentInstanceId": None,
                "input": json.dumps(self.input_),
                "upperSchemaVersion": 0,
            }
        )

    def run(self, max_turns: int = 200) -> dict[str, Any]:
        self.history = [
            self._event(12),
            self._event(0, Name="action_orchestrator", Input=json.dumps(self.input_), Version=""),
        ]
        for _ in range(max_turns):
            state = json.loads(self.handle(self.context()))
            if state.get("isDone"):
                return state
            actions = [a for group in state["actions"] for a in group]
            task_id = len(actions) - 1
            action = actions[task_id]
            if action["actionType"] == 0:
                self.history.append(self._event(4, task_id, Name=action["functionName"]))
            else:
                self.history.append(self._event(10, task_id, FireAt=action["fireAt"]))
            self.history.append(self._event(13))
            self.clock += timedelta(milliseconds=10)
            self.history.append(self._event(12))
            if action["actionType"] == 0:
                payload = json.loads(action["input"])
                self.calls.append((action["functionName"], payload))
                result = self.answer(action["functionName"], payload)
                if isinstance(result, Exception):
                    self.history.append(
                        self._event(6, TaskScheduledId=task_id, Reason=str(result), Details="")
                    )
                else:
                    self.history.append(self._event(5, TaskScheduledId=task_id, Result=json.dumps(result)))
            else:
                fire_at = datetime.fromisoformat(action["fireAt"].replace("Z", "+00:00"))
                self.timers.append(fire_at)
                self.clock = max(self.clock, fire_at)
                self.history.append(self._event(11, TimerId=task_id, FireAt=action["fireAt"]))
        raise AssertionError("orchestration did not finish")

    def statuses(self) -> list[tuple[str, int]]:
        return [
            (p["status"], p.get("attempts", 0)) for name, p in self.calls if name == "record_action_status"
        ]

    def dispatches(self) -> int:
        return sum(1 for name, _ in self.calls if name == "dispatch_action")
