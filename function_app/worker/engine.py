"""Drive orchestrations as the Durable extension does: replay the orchestrator over its history,
record the tasks it scheduled, run the activities (or wait for the timers, events and
sub-orchestrations), append each completion in the order it happened, and replay again until the
orchestration is done.

What it runs faithfully (with the task ids the host would give, function_app.worker.shim):
activities, with or without retry options (`call_activity_with_retry`: a failed attempt waits the
retry interval on a durable timer, as the host's retry loop does), durable timers,
`task_all`/`task_any` (all open activities run at once; completions are appended in completion
order, so `task_any` sees the real winner), sub-orchestrations (`call_sub_orchestrator`, with or
without retry: a child instance of its own, whose end is queued in the parent's inbox), external
events (`wait_for_external_event`, raised with `python -m function_app.worker.events raise ...`),
continue-as-new and custom status. Anything else (entities, HTTP) fails the instance at once with a
reason naming the unsupported call, instead of being retried forever; so does an orchestrator that
no longer schedules what its history recorded (non-determinism), as the host fails it.

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
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from function_app.errors import InstanceAlreadyExists, LocalHostError
from function_app.worker import history as h
from function_app.worker.instances import Instance, InstanceStore, LeaseLost
from function_app.worker.shim import HostReplay, NonDeterministic, Replay, Task, Unsupported

log = logging.getLogger(__name__)

#: How long an instance that could not be advanced (store down) waits before the next try.
BROKEN_RETRY_S = 30.0
#: A parent waiting on sub-orchestrations looks at them again after this long even if no end was
#: queued (the worker may have stopped between a child's end and telling its parent).
CHILD_RECHECK_S = 30.0


def now() -> datetime:
    return datetime.now(UTC)


class OrchestrationBroken(LocalHostError):
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
    """OrchestrationStarter on the Redis instance store (the local worker's durable client). New
    instances carry `version`, as the host stamps host.json's defaultVersion on them."""

    def __init__(self, store: InstanceStore, version: str = "") -> None:
        self.store = store
        self.version = version

    async def exists(self, instance_id: str) -> bool:
        return await self.store.exists(instance_id)

    async def start(self, orchestrator: str, instance_id: str, input_: Any) -> None:
        input_json = json.dumps(input_)
        at = now()
        created = await self.store.create(
            instance_id,
            orchestrator,
            input_json,
            [h.orchestrator_started(at), h.execution_started(at, orchestrator, input_json, self.version)],
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
        clock: Callable[[], datetime] = now,
        version: str = "",
    ) -> None:
        self.store = store
        #: The orchestration version this code is (host.json's defaultVersion): instances of a newer
        #: version are left to a worker that has it (versionMatchStrategy CurrentOrOlder, Reject).
        self.version = version
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

    async def _fail(self, instance: Instance, reason: str) -> None:
        log.error("instance %s failed: %s", instance.instance_id, reason)
        await self._finish(instance, "Failed", json.dumps({"error": reason}))

    async def _finish(self, instance: Instance, status: str, output: str, custom: str = "") -> None:
        await self.store.append(
            instance.instance_id,
            self.token,
            [h.orchestrator_completed(now())],
            final_status=status,
            output=output,
            custom_status=custom,
        )
        await self._tell_parent(replace(instance, status=status, output=output))

    async def _tell_parent(self, child: Instance) -> bool:
        """A finished sub-orchestration's end goes to its parent's inbox (once, however often told);
        True when this call told it."""
        if child.parent_id is None or child.parent_task is None:
            return False
        at = now()
        if child.status == "Completed":
            end = h.sub_orchestration_completed(at, child.parent_task, child.output or "null")
        else:
            error = json.loads(child.output or "{}").get("error", "failed")
            end = h.sub_orchestration_failed(
                at, child.parent_task, f"sub-orchestration {child.instance_id} failed: {error}", ""
            )
        return await self.store.notify_parent(child.parent_id, child.instance_id, end)

    async def advance(self, iid: str) -> None:
        """Run one instance until it finishes or waits for a timer, an event or a sub-orchestration."""
        while True:
            await self.store.take_inbox(iid, self.token)
            instance = await self.store.load(iid)
            if instance is None or instance.status != "Running":
                # Finished (or expired) but still due: an append interrupted before its index step.
                await self.store.settle(iid, instance.status if instance else "")
                return
            events = list(instance.history)
            started_as = h.version_of(events)
            if h.compare_versions(started_as, self.version) > 0:
                log.warning(
                    "instance %s is version %s, newer than this worker's %s: left for a newer worker",
                    iid,
                    started_as,
                    self.version or "(none)",
                )
                await self.store.append(iid, self.token, [], due_at=self.clock().timestamp() + BROKEN_RETRY_S)
                return
            orchestrator = self.orchestrators.get(instance.name)
            if orchestrator is None:
                await self._fail(instance, f"no orchestrator named {instance.name!r} is registered")
                return
            turn = h.replay(orchestrator, iid, events, instance.input_json, instance.parent_id)
            custom = "" if turn.custom_status is None else json.dumps(turn.custom_status)
            if turn.error is not None:
                await self._fail(instance, turn.error)
                return
            try:
                replay = HostReplay(turn.actions, events).run()
            except (Unsupported, NonDeterministic) as exc:
                await self._fail(instance, str(exc))
                return
            if turn.done:
                restart = next((a for a in turn.actions if a["actionType"] == h.CONTINUE_AS_NEW), None)
                if restart is not None:
                    input_json = restart.get("input") or "null"
                    at = now()
                    await self.store.restart(
                        iid,
                        self.token,
                        input_json,
                        [
                            h.orchestrator_started(at),
                            h.execution_started(at, instance.name, input_json, started_as),
                        ],
                    )
                    log.info("instance %s continued as new", iid)
                    continue
                await self._finish(instance, "Completed", json.dumps(turn.output), custom)
                log.info("instance %s completed: %s", iid, turn.output)
                return
            at = now()
            new = [task.scheduled_event(at, self._child_prefix(instance)) for task in replay.new()]
            scheduled = [*new, h.orchestrator_completed(at)] if new else []
            if scheduled or custom:
                await self.store.append(iid, self.token, scheduled, custom_status=custom)
                events.extend(scheduled)
            waiting_until = await self._complete_open(instance, events, replay)
            if waiting_until is not None:
                await self.store.append(iid, self.token, [], due_at=waiting_until)
                return

    @staticmethod
    def _child_prefix(instance: Instance) -> str:
        # A default child id differs per continue-as-new generation (task ids start over at 0).
        return (
            instance.instance_id
            if instance.generation == 0
            else f"{instance.instance_id}:g{instance.generation}"
        )

    async def _complete_open(
        self, instance: Instance, events: list[dict[str, Any]], replay: Replay
    ) -> float | None:
        """Run every open activity at once, fire every due timer and look at every open
        sub-orchestration, appending each completion as it happens; the time to come back when only
        timers not yet due, events or running sub-orchestrations remain."""
        iid = instance.instance_id
        open_tasks = replay.open()
        timers = [t for t in open_tasks if t.kind == h.CREATE_TIMER]
        due_timers = [t for t in timers if h.parse_time(t.fire_at) <= self.clock()]
        activities = [t for t in open_tasks if t.kind == h.CALL_ACTIVITY]
        children = [t for t in open_tasks if t.kind == h.CALL_SUB_ORCHESTRATOR]
        progressed = False
        for child in children:
            progressed |= await self._start_or_check_child(instance, events, child)
        if not activities and not due_timers and not progressed:
            waits = [h.parse_time(t.fire_at).timestamp() for t in timers]
            if children:
                waits.append(self.clock().timestamp() + CHILD_RECHECK_S)
            if waits:
                return min(waits)
            if replay.waiting_for_events:
                return float("inf")  # made due again when an event is raised
            raise OrchestrationBroken(f"instance {iid}: not done and nothing scheduled")
        for timer in due_timers:
            await self._append_completion(iid, events, h.timer_fired(now(), timer.task_id, timer.fire_at))
        runs = [asyncio.create_task(self._run_activity(t.task_id, t.name, t.input)) for t in activities]
        for finished in asyncio.as_completed(runs):
            await self._append_completion(iid, events, await finished)
        return None

    async def _start_or_check_child(
        self, instance: Instance, events: list[dict[str, Any]], task: Task
    ) -> bool:
        """Create the child instance (again after a crash: creating is idempotent), and tell the
        parent (through its inbox) if the child already ended and that was not told yet; True when
        the parent has something new to replay."""
        child_id = task.child_instance_id(self._child_prefix(instance))
        input_json = task.input or "null"
        at = now()
        created = await self.store.create(
            child_id,
            task.name,
            input_json,
            [
                h.orchestrator_started(at),
                h.execution_started(at, task.name, input_json, task.version or self.version),
            ],
            parent=(instance.instance_id, task.task_id),
        )
        if created:
            log.info(
                "instance %s: started sub-orchestration %s (%s)", instance.instance_id, child_id, task.name
            )
            return False
        child = await self.store.load(child_id)
        if child is None:
            return False
        if (child.parent_id, child.parent_task) != (instance.instance_id, task.task_id):
            # Another instance holds the id the code asked for: the host refuses the start likewise.
            reason = f"sub-orchestration instance {child_id} already exists"
            await self._append_completion(
                instance.instance_id, events, h.sub_orchestration_failed(now(), task.task_id, reason, "")
            )
            return True
        return child.status != "Running" and await self._tell_parent(child)

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
