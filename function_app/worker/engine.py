"""Drive orchestrations as the Durable extension does: replay the orchestrator over its history,
record the tasks it scheduled, run the activities (or wait for the timers and events), append each
completion in the order it happened, and replay again until the orchestration is done.

What it runs faithfully: activities (`call_activity`), durable timers, `task_all`/`task_any` (all
open activities run at once; completions are appended in completion order, so `task_any` sees
the real winner), external events (`wait_for_external_event`, raised with
`python -m function_app.worker.events raise ...`), continue-as-new and custom status. Anything
else (activity retry options, sub-orchestrations, entities, HTTP) fails the instance at once with
a reason naming the unsupported call, instead of being retried forever; so does an orchestrator
that no longer schedules what its history recorded (non-determinism), as the host fails it.

At-least-once like the real host: an activity interrupted by a crash before its completion was
appended runs again after a restart, which is why activities are idempotent (the backend gets the
same Idempotency-Key; Cosmos writes never move backwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from function_app.errors import InstanceAlreadyExists
from function_app.worker import history as h
from function_app.worker.instances import InstanceStore, LeaseLost

log = logging.getLogger(__name__)

#: How long an instance that could not be advanced (store down) waits before the next try.
BROKEN_RETRY_S = 30.0
SUPPORTED = (h.CALL_ACTIVITY, h.CREATE_TIMER, h.WAIT_FOR_EXTERNAL_EVENT, h.CONTINUE_AS_NEW)


def now() -> datetime:
    return datetime.now(UTC)


class OrchestrationBroken(Exception):
    """The orchestrator cannot be run faithfully here: the instance fails with this reason."""


def registered_functions(app: Any) -> tuple[dict[str, Callable[[str], str]], dict[str, Callable[..., Any]]]:
    """Orchestrators and activities of a DFApp, as the host's worker indexes them (call once per app)."""
    orchestrators: dict[str, Callable[[str], str]] = {}
    activities: dict[str, Callable[..., Any]] = {}
    for function in app.get_functions():
        trigger = function.get_trigger().get_binding_name()
        if trigger == "orchestrationTrigger":
            orchestrators[function.get_function_name()] = function.get_user_function()
        elif trigger == "activityTrigger":
            activities[function.get_function_name()] = function.get_user_function()
    return orchestrators, activities


class RedisStarter:
    """OrchestrationStarter on the Redis instance store (the local worker's durable client)."""

    def __init__(self, store: InstanceStore) -> None:
        self.store = store

    async def exists(self, instance_id: str) -> bool:
        return await self.store.exists(instance_id)

    async def start(self, orchestrator: str, instance_id: str, input_: Any) -> None:
        input_json = json.dumps(input_)
        at = now()
        created = await self.store.create(
            instance_id,
            orchestrator,
            input_json,
            [h.orchestrator_started(at), h.execution_started(at, orchestrator, input_json)],
        )
        if not created:  # the atomic create refused: another delivery started it first
            raise InstanceAlreadyExists(instance_id)


def numbered(actions: list[dict[str, Any]]) -> list[tuple[int | None, dict[str, Any]]]:
    """Each action with the task id the SDK gave it: activities and timers take the next sequence
    number; an external event is keyed by its name and takes none."""
    out: list[tuple[int | None, dict[str, Any]]] = []
    sequence = 0
    for action in actions:
        kind = action["actionType"]
        if kind not in SUPPORTED:
            name = h.ACTION_NAMES.get(kind, f"action type {kind}")
            raise OrchestrationBroken(f"{name} is not supported by the local worker")
        if kind in (h.CALL_ACTIVITY, h.CREATE_TIMER):
            out.append((sequence, action))
            sequence += 1
        else:
            out.append((None, action))
    return out


def check_determinism(tasks: list[tuple[int | None, dict[str, Any]]], events: list[dict[str, Any]]) -> None:
    """The history's scheduled tasks must be what the orchestrator schedules now, id by id."""
    scheduled = {e["EventId"]: e for e in events if e["EventType"] in (h.TASK_SCHEDULED, h.TIMER_CREATED)}
    for task_id, action in tasks:
        recorded = scheduled.pop(task_id, None) if task_id is not None else None
        if recorded is None:
            continue
        if action["actionType"] == h.CALL_ACTIVITY and (
            recorded["EventType"] != h.TASK_SCHEDULED or recorded.get("Name") != action["functionName"]
        ):
            raise OrchestrationBroken(
                f"non-deterministic orchestrator: task {task_id} is {action['functionName']} now, "
                f"the history has {recorded.get('Name') or 'a timer'}"
            )
        if action["actionType"] == h.CREATE_TIMER and recorded["EventType"] != h.TIMER_CREATED:
            raise OrchestrationBroken(
                f"non-deterministic orchestrator: task {task_id} is a timer now, "
                f"the history has {recorded.get('Name')}"
            )


class Engine:
    def __init__(
        self,
        store: InstanceStore,
        orchestrators: dict[str, Callable[[str], str]],
        activities: dict[str, Callable[..., Any]],
        *,
        lease_ms: int = 30_000,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.store = store
        self.orchestrators = orchestrators
        self.activities = activities
        self.lease_ms = lease_ms
        self.token = uuid.uuid4().hex
        #: The time timers are compared with; tests pass a clock they move to fire timers early.
        self.clock = clock
        self._running: dict[str, asyncio.Task[None]] = {}

    async def _lease_due(self, limit: int) -> list[str]:
        # Shuffled among more than we take, so two workers do not queue on the same head of the list.
        candidates = await self.store.due(self.clock().timestamp(), limit * 3)
        random.shuffle(candidates)
        leased: list[str] = []
        for iid in candidates:
            if len(leased) == limit:
                break
            if iid not in self._running and await self.store.acquire(iid, self.token, self.lease_ms):
                leased.append(iid)
        return leased

    async def run_due(self, limit: int = 20) -> int:
        """Advance, concurrently, the instances due now that no other worker holds; how many ran."""
        leased = await self._lease_due(limit)
        await asyncio.gather(*(self._run_leased(iid) for iid in leased))
        return len(leased)

    async def run_continuously(self, stop: asyncio.Event, concurrency: int = 20, idle_s: float = 0.2) -> None:
        """The worker's execution loop: keeps up to `concurrency` instances in flight and takes new
        due ones as each finishes, with no batch barrier (a slow instance holds one slot, not all)."""
        while not stop.is_set():
            free = concurrency - len(self._running)
            for iid in await self._lease_due(free) if free > 0 else []:
                task = asyncio.create_task(self._run_leased(iid))
                self._running[iid] = task
                task.add_done_callback(self._forget_task)
            waiting = list(self._running.values())
            with contextlib.suppress(TimeoutError):
                if waiting:
                    await asyncio.wait(waiting, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.wait_for(stop.wait(), timeout=idle_s)
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        for iid, running in list(self._running.items()):
            if running is task:
                del self._running[iid]

    async def _run_leased(self, iid: str) -> None:
        renewer = asyncio.create_task(self._keep_lease(iid))
        try:
            await self.advance(iid)
        except LeaseLost:
            log.warning("instance %s: lease lost; another worker continues it", iid)
        except Exception:  # the store failed mid-step: logged, retried later; others go on
            log.exception("instance %s could not be advanced; retrying in %.0fs", iid, BROKEN_RETRY_S)
            with contextlib.suppress(LeaseLost, Exception):
                await self.store.append(iid, self.token, [], due_at=self.clock().timestamp() + BROKEN_RETRY_S)
        finally:
            renewer.cancel()
            await self.store.release(iid, self.token)

    async def _keep_lease(self, iid: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not await self.store.renew(iid, self.token, self.lease_ms):
                return

    async def _fail(self, iid: str, reason: str) -> None:
        log.error("instance %s failed: %s", iid, reason)
        await self.store.append(
            iid,
            self.token,
            [h.orchestrator_completed(now())],
            final_status="Failed",
            output=json.dumps({"error": reason}),
        )

    async def advance(self, iid: str) -> None:
        """Run one instance until it finishes or waits for a timer or an event."""
        while True:
            await self.store.take_inbox(iid, self.token)
            instance = await self.store.load(iid)
            if instance is None or instance.status != "Running":
                return
            events = list(instance.history)
            orchestrator = self.orchestrators.get(instance.name)
            if orchestrator is None:
                await self._fail(iid, f"no orchestrator named {instance.name!r} is registered")
                return
            turn = h.replay(orchestrator, iid, events, instance.input_json)
            custom = "" if turn.custom_status is None else json.dumps(turn.custom_status)
            if turn.error is not None:
                await self._fail(iid, turn.error)
                return
            try:
                tasks = numbered(turn.actions)
                check_determinism(tasks, events)
            except OrchestrationBroken as exc:
                await self._fail(iid, str(exc))
                return
            if turn.done:
                restart = next((a for _, a in tasks if a["actionType"] == h.CONTINUE_AS_NEW), None)
                if restart is not None:
                    input_json = restart.get("input") or "null"
                    at = now()
                    await self.store.restart(
                        iid,
                        self.token,
                        input_json,
                        [h.orchestrator_started(at), h.execution_started(at, instance.name, input_json)],
                    )
                    log.info("instance %s continued as new", iid)
                    continue
                await self.store.append(
                    iid,
                    self.token,
                    [h.orchestrator_completed(now())],
                    final_status="Completed",
                    output=json.dumps(turn.output),
                    custom_status=custom,
                )
                log.info("instance %s completed: %s", iid, turn.output)
                return
            scheduled = self._schedule_new(tasks, events)
            if scheduled or custom:
                await self.store.append(iid, self.token, scheduled, custom_status=custom)
                events.extend(scheduled)
            waiting_until = await self._complete_open(iid, events, tasks)
            if waiting_until is not None:
                await self.store.append(iid, self.token, [], due_at=waiting_until)
                return

    @staticmethod
    def _schedule_new(
        tasks: list[tuple[int | None, dict[str, Any]]], events: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        known = {e["EventId"] for e in events if e["EventType"] in (h.TASK_SCHEDULED, h.TIMER_CREATED)}
        at, new = now(), []
        for task_id, action in tasks:
            if task_id is None or task_id in known:
                continue
            if action["actionType"] == h.CALL_ACTIVITY:
                new.append(h.task_scheduled(at, task_id, action["functionName"]))
            else:
                new.append(h.timer_created(at, task_id, action["fireAt"]))
        return [*new, h.orchestrator_completed(at)] if new else []

    async def _complete_open(
        self, iid: str, events: list[dict[str, Any]], tasks: list[tuple[int | None, dict[str, Any]]]
    ) -> float | None:
        """Run every open activity at once and fire every due timer, appending each completion as it
        happens; the time to come back when only timers not yet due (or events) remain."""
        done = {
            e.get("TaskScheduledId", e.get("TimerId"))
            for e in events
            if e["EventType"] in (h.TASK_COMPLETED, h.TASK_FAILED, h.TIMER_FIRED)
        }
        open_tasks = [
            e
            for e in events
            if e["EventType"] in (h.TASK_SCHEDULED, h.TIMER_CREATED) and e["EventId"] not in done
        ]
        inputs = {task_id: action.get("input") for task_id, action in tasks if task_id is not None}
        timers = [e for e in open_tasks if e["EventType"] == h.TIMER_CREATED]
        due_timers = [t for t in timers if h.parse_time(t["FireAt"]) <= self.clock()]
        activities = [e for e in open_tasks if e["EventType"] == h.TASK_SCHEDULED]
        if not activities and not due_timers:
            if timers:
                return min(h.parse_time(t["FireAt"]) for t in timers).timestamp()
            if any(a["actionType"] == h.WAIT_FOR_EXTERNAL_EVENT for _, a in tasks):
                return float("inf")  # made due again when an event is raised
            raise OrchestrationBroken(f"instance {iid}: not done and nothing scheduled")
        for timer in due_timers:
            await self._append_completion(
                iid, events, h.timer_fired(now(), timer["EventId"], timer["FireAt"])
            )
        runs = [
            asyncio.create_task(self._run_activity(e["EventId"], e["Name"], inputs.get(e["EventId"])))
            for e in activities
        ]
        for finished in asyncio.as_completed(runs):
            await self._append_completion(iid, events, await finished)
        return None

    async def _append_completion(
        self, iid: str, events: list[dict[str, Any]], completion: dict[str, Any]
    ) -> None:
        episode = [h.orchestrator_started(now()), completion]
        await self.store.append(iid, self.token, episode)
        events.extend(episode)

    async def _run_activity(self, task_id: int, name: str, input_json: str | None) -> dict[str, Any]:
        function = self.activities.get(name)
        if function is None:
            return h.task_failed(now(), task_id, f"no activity named {name!r} is registered", "")
        payload = json.loads(input_json) if input_json else None
        try:
            result = function(payload)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # becomes TaskFailed in the history, exactly as the host records it
            log.warning("activity %s failed: %s", name, exc)
            return h.task_failed(now(), task_id, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return h.task_completed(now(), task_id, json.dumps(result))
