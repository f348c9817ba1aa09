"""The host's side of a replay: which task ids the orchestrator's actions hold, which of them are
new, and which are still open, worked out as the Durable extension's out-of-process shim and the
Durable Task Framework do.

The SDK answers with one action per `yield` (the extension's replay schema V2 and later: a
`task_all`/`task_any` is one WhenAll/WhenAny action with its children). The shim invokes them in
order, each once the previous one completed; every activity, timer and sub-orchestration it invokes
takes the next sequence number. History events are applied in order, and a retried call
(`call_activity_with_retry`, `call_sub_orchestrator_with_retry`) goes on as DTFx's retry loop does:
a failed attempt schedules a timer (next number) for the retry interval; when it fires, the next
attempt (next number) or, after the last attempt's timer, the failure. Numbers come out in the
order the SDK gives them while it replays the same history, so its TaskScheduledId/TimerId lookups
land on the right tasks; a recorded task that does not match the one the code asks for at that point is the
non-determinism the host fails an instance for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from function_app.errors import LocalHostError
from function_app.worker import history as h

#: What the local worker runs; anything else fails the instance at once with the reason.
LEAF_TYPES = (h.CALL_ACTIVITY, h.CREATE_TIMER, h.CALL_SUB_ORCHESTRATOR, h.WAIT_FOR_EXTERNAL_EVENT)
RETRY_TYPES = {
    h.CALL_ACTIVITY_WITH_RETRY: h.CALL_ACTIVITY,
    h.CALL_SUB_ORCHESTRATOR_WITH_RETRY: h.CALL_SUB_ORCHESTRATOR,
}
COMPOUND_TYPES = (h.WHEN_ALL, h.WHEN_ANY)


class Unsupported(LocalHostError):
    """The orchestrator asked for something the local worker does not run faithfully."""


class NonDeterministic(LocalHostError):
    """The history holds another task under an id than the orchestrator schedules now."""


@dataclass
class Task:
    """One id's worth of work: an activity, a timer or a sub-orchestration."""

    task_id: int
    kind: int  # CALL_ACTIVITY, CREATE_TIMER or CALL_SUB_ORCHESTRATOR
    name: str = ""
    input: str | None = None
    fire_at: str = ""
    instance_id: str | None = None
    version: str | None = None
    recorded: bool = False
    done: bool = False

    def scheduled_event(self, at: datetime, parent_id: str) -> dict[str, Any]:
        if self.kind == h.CALL_ACTIVITY:
            return h.task_scheduled(at, self.task_id, self.name)
        if self.kind == h.CREATE_TIMER:
            return h.timer_created(at, self.task_id, self.fire_at)
        return h.sub_orchestration_created(
            at, self.task_id, self.name, self.child_instance_id(parent_id), self.input
        )

    def child_instance_id(self, parent_id: str) -> str:
        # The extension takes the id the code gave, else a new one; a deterministic one serves here.
        return self.instance_id or f"{parent_id}:{self.task_id}"


@dataclass
class Node:
    """An invoked action: a leaf (one task, or an event), a retry loop, or WhenAll/WhenAny."""

    action: dict[str, Any]
    children: list[Node] = field(default_factory=list)
    task: Task | None = None
    attempts: int = 0
    waiting_on_timer: bool = False
    state: str = "running"  # running | succeeded | failed
    parent: Node | None = None


@dataclass
class Replay:
    tasks: dict[int, Task] = field(default_factory=dict)
    waiting_for_events: set[str] = field(default_factory=set)

    def new(self) -> list[Task]:
        """Tasks invoked by this replay that the history does not hold yet, in id order."""
        return [t for _, t in sorted(self.tasks.items()) if not t.recorded]

    def open(self) -> list[Task]:
        return [t for _, t in sorted(self.tasks.items()) if not t.done]


def retry_delay(options: dict[str, Any], attempt: int) -> timedelta:
    """The wait after the `attempt`-th failure: DTFx's first interval times the back-off coefficient
    to the power attempt-1, capped by the maximum interval (the Python SDK sends neither of those
    two, so its retries wait the first interval each time)."""
    first_ms = float(options.get("firstRetryIntervalInMilliseconds") or 0)
    coefficient = float(options.get("backoffCoefficient") or 1.0)
    delay_ms = first_ms * coefficient ** (attempt - 1)
    cap = options.get("maxRetryIntervalInMilliseconds")
    if cap:
        delay_ms = min(delay_ms, float(cap))
    return timedelta(milliseconds=delay_ms)


class HostReplay:
    """Apply a history to the orchestrator's actions as the host does (one instance, one replay)."""

    def __init__(self, actions: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
        for action in actions:
            check_supported(action)
        self.actions = actions
        self.history = history
        self.result = Replay()
        self._next_id = 0
        self._next_action = 0
        self._current: Node | None = None
        self._leaves: dict[int, Node] = {}
        self._event_waiters: dict[str, list[Node]] = {}
        self._raised: dict[str, int] = {}
        self._now: datetime | None = None

    def run(self) -> Replay:
        for event in self.history:
            kind = event["EventType"]
            if kind == h.ORCHESTRATOR_STARTED:
                self._now = h.parse_time(event["Timestamp"])
            elif kind == h.EXECUTION_STARTED:
                self._invoke_next()
            elif kind in (h.TASK_SCHEDULED, h.TIMER_CREATED, h.SUB_ORCHESTRATION_CREATED):
                self._check_recorded(event)
            elif kind in (h.TASK_COMPLETED, h.SUB_ORCHESTRATION_COMPLETED):
                self._settle(event["TaskScheduledId"], ok=True)
            elif kind in (h.TASK_FAILED, h.SUB_ORCHESTRATION_FAILED):
                self._settle(event["TaskScheduledId"], ok=False)
            elif kind == h.TIMER_FIRED:
                self._settle(event["TimerId"], ok=True)
            elif kind == h.EVENT_RAISED:
                self._raise(event["Name"])
        self.result.waiting_for_events = {name for name, waiters in self._event_waiters.items() if waiters}
        return self.result

    # invoking actions -------------------------------------------------------------------------

    def _invoke_next(self) -> None:
        while self._current is None or self._current.state != "running":
            if self._next_action >= len(self.actions):
                return
            action = self.actions[self._next_action]
            self._next_action += 1
            if action["actionType"] == h.CONTINUE_AS_NEW:
                continue
            self._current = self._invoke(action, None)

    def _invoke(self, action: dict[str, Any], parent: Node | None) -> Node:
        node = Node(action, parent=parent)
        kind = action["actionType"]
        if kind in COMPOUND_TYPES:
            node.children = [self._invoke(child, node) for child in action.get("compoundActions", [])]
            self._update_compound(node)
        elif kind in RETRY_TYPES:
            node.attempts = 1
            node.task = self._allocate(node, RETRY_TYPES[kind], action)
        elif kind == h.WAIT_FOR_EXTERNAL_EVENT:
            name = action["externalEventName"]
            if self._raised.get(name):  # raised before anyone waited: the SDK keeps it for the waiter
                self._raised[name] -= 1
                node.state = "succeeded"
            else:
                self._event_waiters.setdefault(name, []).append(node)
        else:
            node.task = self._allocate(node, kind, action)
        return node

    def _allocate(self, node: Node, kind: int, action: dict[str, Any], fire_at: str = "") -> Task:
        task = Task(
            self._next_id,
            kind,
            name=action.get("functionName", ""),
            input=action.get("input"),
            fire_at=fire_at or action.get("fireAt", ""),
            instance_id=action.get("instanceId"),
            version=action.get("version"),
        )
        self.result.tasks[task.task_id] = task
        self._leaves[task.task_id] = node
        self._next_id += 1
        return task

    # applying history -------------------------------------------------------------------------

    def _check_recorded(self, event: dict[str, Any]) -> None:
        task_id = event["EventId"]
        task = self.result.tasks.get(task_id)
        recorded = {h.TASK_SCHEDULED: h.CALL_ACTIVITY, h.TIMER_CREATED: h.CREATE_TIMER}.get(
            event["EventType"], h.CALL_SUB_ORCHESTRATOR
        )
        if task is None:
            raise NonDeterministic(
                f"non-deterministic orchestrator: the history has {describe(recorded, event.get('Name'))} "
                f"as task {task_id}, which the orchestrator no longer schedules"
            )
        if task.kind != recorded or (recorded != h.CREATE_TIMER and task.name != event.get("Name")):
            raise NonDeterministic(
                f"non-deterministic orchestrator: task {task_id} is {describe(task.kind, task.name)} now, "
                f"the history has {describe(recorded, event.get('Name'))}"
            )
        task.recorded = True
        if recorded == h.CREATE_TIMER:
            task.fire_at = event["FireAt"]  # what the history holds is when it fires

    def _settle(self, task_id: int, ok: bool) -> None:
        task = self.result.tasks.get(task_id)
        if task is None or task.done:
            return  # a completion for nothing open: the SDK ignores it as well
        task.done = True
        self._leaf_done(self._leaves.pop(task_id), ok)
        self._invoke_next()

    def _leaf_done(self, node: Node, ok: bool) -> None:
        kind = node.action["actionType"]
        if kind in RETRY_TYPES:
            self._retry_step(node, ok)
            return
        self._set(node, "succeeded" if ok else "failed")

    def _retry_step(self, node: Node, ok: bool) -> None:
        """DTFx's retry loop: a failure waits a timer; the timer brings the next attempt, or the
        failure once the attempts are spent (one timer after the last attempt, as DTFx has it)."""
        if node.waiting_on_timer:
            node.waiting_on_timer = False
            if node.attempts >= int(node.action.get("retryOptions", {}).get("maxNumberOfAttempts", 1)):
                self._set(node, "failed")
            else:
                node.attempts += 1
                node.task = self._allocate(node, RETRY_TYPES[node.action["actionType"]], node.action)
            return
        if ok:
            self._set(node, "succeeded")
            return
        assert self._now is not None
        fire_at = self._now + retry_delay(node.action.get("retryOptions", {}), node.attempts)
        node.task = self._allocate(node, h.CREATE_TIMER, {}, fire_at=h.iso(fire_at))
        node.waiting_on_timer = True

    def _raise(self, name: str) -> None:
        waiters = self._event_waiters.get(name)
        if not waiters:
            self._raised[name] = self._raised.get(name, 0) + 1
            return
        node = waiters.pop()  # the SDK hands an event to the latest waiter of that name
        self._set(node, "succeeded")
        self._invoke_next()

    def _set(self, node: Node, state: str) -> None:
        if node.state != "running":
            return
        node.state = state
        if node.parent is not None:
            self._update_compound(node.parent)

    def _update_compound(self, node: Node) -> None:
        states = [child.state for child in node.children]
        if node.action["actionType"] == h.WHEN_ANY:
            finished = any(s != "running" for s in states) or not states
        else:
            finished = all(s != "running" for s in states) or "failed" in states
        if finished:  # as the SDK has it: WhenAll fails at its first failed child, WhenAny never fails
            failed = node.action["actionType"] == h.WHEN_ALL and "failed" in states
            self._set(node, "failed" if failed else "succeeded")


def check_supported(action: dict[str, Any]) -> None:
    kind = action["actionType"]
    if kind in COMPOUND_TYPES:
        for child in action.get("compoundActions", []):
            check_supported(child)
        return
    if kind in LEAF_TYPES or kind in RETRY_TYPES or kind == h.CONTINUE_AS_NEW:
        return
    raise Unsupported(
        f"{h.ACTION_NAMES.get(kind, f'action type {kind}')} is not supported by the local worker"
    )


def describe(kind: int, name: str | None) -> str:
    if kind == h.CREATE_TIMER:
        return "a timer"
    if kind == h.CALL_SUB_ORCHESTRATOR:
        return f"sub-orchestration {name}"
    return str(name)
