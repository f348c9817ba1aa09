"""Drive orchestrations as the Durable extension does: replay the orchestrator over its history,
record the tasks it scheduled, run the activity (or wait for the timer), append the completion,
and replay again until the orchestration is done.

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
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from function_app.errors import InstanceAlreadyExists
from function_app.worker import history as h
from function_app.worker.instances import InstanceStore, LeaseLost

log = logging.getLogger(__name__)

#: How long an instance that could not be advanced (store down, a bug) waits before the next try.
BROKEN_RETRY_S = 30.0


def now() -> datetime:
    return datetime.now(UTC)


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

    async def start(self, orchestrator: str, instance_id: str, input_: dict[str, Any]) -> None:
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


class Engine:
    def __init__(
        self,
        store: InstanceStore,
        orchestrators: dict[str, Callable[[str], str]],
        activities: dict[str, Callable[..., Any]],
        *,
        lease_ms: int = 30_000,
    ) -> None:
        self.store = store
        self.orchestrators = orchestrators
        self.activities = activities
        self.lease_ms = lease_ms
        self.token = uuid.uuid4().hex

    async def run_due(self, limit: int = 20) -> int:
        """Advance, concurrently, the instances due now that no other worker holds; how many ran."""
        leased = [
            iid
            for iid in await self.store.due(now().timestamp(), limit)
            if await self.store.acquire(iid, self.token, self.lease_ms)
        ]
        await asyncio.gather(*(self._run_leased(iid) for iid in leased))
        return len(leased)

    async def _run_leased(self, iid: str) -> None:
        renewer = asyncio.create_task(self._keep_lease(iid))
        try:
            await self.advance(iid)
        except LeaseLost:
            log.warning("instance %s: lease lost; another worker continues it", iid)
        except Exception:  # a broken instance must not stop the others: logged, retried later
            log.exception("instance %s could not be advanced; retrying in %.0fs", iid, BROKEN_RETRY_S)
            with contextlib.suppress(LeaseLost):
                await self.store.append(iid, self.token, [], due_at=now().timestamp() + BROKEN_RETRY_S)
        finally:
            renewer.cancel()
            await self.store.release(iid, self.token)

    async def _keep_lease(self, iid: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not await self.store.renew(iid, self.token, self.lease_ms):
                return

    async def advance(self, iid: str) -> None:
        """Run one instance until it finishes or waits on a timer that has not fired yet."""
        while True:
            instance = await self.store.load(iid)
            if instance is None:
                return
            events = list(instance.history)
            turn = h.replay(self.orchestrators[instance.name], iid, events, instance.input_json)
            if turn.error is not None:
                log.error("instance %s failed: %s", iid, turn.error)
                await self.store.append(
                    iid,
                    self.token,
                    [h.orchestrator_completed(now())],
                    final_status="Failed",
                    output=json.dumps({"error": turn.error}),
                )
                return
            if turn.done:
                await self.store.append(
                    iid,
                    self.token,
                    [h.orchestrator_completed(now())],
                    final_status="Completed",
                    output=json.dumps(turn.output),
                )
                log.info("instance %s completed: %s", iid, turn.output)
                return
            scheduled = self._schedule_new(turn.actions, events)
            if scheduled:
                await self.store.append(iid, self.token, scheduled)
                events.extend(scheduled)
            waiting_until = await self._complete_one(iid, events, turn.actions)
            if waiting_until is not None:
                await self.store.append(iid, self.token, [], due_at=waiting_until)
                return

    @staticmethod
    def _schedule_new(actions: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        known = {e["EventId"] for e in events if e["EventType"] in (h.TASK_SCHEDULED, h.TIMER_CREATED)}
        at, new = now(), []
        for task_id, action in enumerate(actions):
            if task_id in known:
                continue
            if action["actionType"] == h.CALL_ACTIVITY:
                new.append(h.task_scheduled(at, task_id, action["functionName"]))
            elif action["actionType"] == h.CREATE_TIMER:
                new.append(h.timer_created(at, task_id, action["fireAt"]))
            else:
                raise ValueError(f"action type {action['actionType']} is not supported by the local worker")
        return [*new, h.orchestrator_completed(at)] if new else []

    async def _complete_one(
        self, iid: str, events: list[dict[str, Any]], actions: list[dict[str, Any]]
    ) -> float | None:
        """Complete the oldest open task; the fire time when it is a timer not yet due."""
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
        if not open_tasks:
            raise RuntimeError(f"instance {iid}: not done and nothing scheduled")
        task = open_tasks[0]
        task_id = task["EventId"]
        if task["EventType"] == h.TIMER_CREATED:
            fire_at = h.parse_time(task["FireAt"])
            if fire_at > now():
                return fire_at.timestamp()
            completion = h.timer_fired(now(), task_id, task["FireAt"])
        else:
            completion = await self._run_activity(task_id, task["Name"], actions[task_id].get("input"))
        await self.store.append(iid, self.token, [h.orchestrator_started(now()), completion])
        events.extend([h.orchestrator_started(now()), completion])
        return None

    async def _run_activity(self, task_id: int, name: str, input_json: str | None) -> dict[str, Any]:
        function = self.activities[name]
        payload = json.loads(input_json) if input_json else None
        try:
            result = function(payload)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # becomes TaskFailed in the history, exactly as the host records it
            log.warning("activity %s failed: %s", name, exc)
            return h.task_failed(now(), task_id, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return h.task_completed(now(), task_id, json.dumps(result))
