"""The answers this pod is producing now, each a task with a watchdog beside it.

The watchdog stops the model request at once when the answer is cancelled (from any pod) and
when nobody follows the conversation any more (after GATEWAY_ORPHAN_GRACE_SECONDS, which leaves
a dropped client time to reconnect, on any pod, and resume). On shutdown the registry lets
answers finish within the grace period, then interrupts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis
from streaming_gateway.state.stream_log import StreamLog

log = logging.getLogger(__name__)

TICK_S = 1.0
PRODUCING_LEASE_S = 5


@dataclass
class StepControl:
    """Shared by a producing step and its watchdog: why the step was stopped, if it was."""

    conversation_id: str
    turn_id: str
    #: Client-started answers stop when nobody follows them; action continuations run regardless.
    watched: bool
    reason: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the step has ended: the watchdog must stop even if its cancel was swallowed
    #: (asyncio.wait_for on 3.11 can lose a cancel that races its inner wait's completion).
    finished: bool = False
    #: Set once the watchdog has sent the producing lease: only then does the end delete it (an
    #: answer shorter than a tick never wrote it, and its end costs no command for it).
    producing_sent: bool = False


Step = Callable[[StepControl], Awaitable[None]]


class RunningAnswers:
    def __init__(
        self,
        redis: Redis,
        log_: StreamLog,
        *,
        orphan_grace_s: float,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = redis
        self._log = log_
        self._orphan_grace_s = orphan_grace_s
        #: Told the conversation id when a step has ended (the log compactor's timer).
        self._on_end = on_end
        self._running: dict[str, tuple[asyncio.Task[None], StepControl]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def start(self, conversation_id: str, turn_id: str, step: Step, *, watched: bool) -> None:
        control = StepControl(conversation_id, turn_id, watched)
        task = asyncio.create_task(self._run(control, step), name=f"answer:{conversation_id}")
        self._running[conversation_id] = (task, control)

        def forget(done: asyncio.Task[None]) -> None:
            if self._running.get(conversation_id, (None,))[0] is done:
                del self._running[conversation_id]

        task.add_done_callback(forget)

    def running(self, conversation_id: str) -> bool:
        return conversation_id in self._running

    def nudge(self, conversation_id: str) -> None:
        """A local reader of this conversation left: check for followers now."""
        entry = self._running.get(conversation_id)
        if entry is not None:
            entry[1].wake.set()

    def cancel(self, conversation_id: str, reason: str) -> bool:
        entry = self._running.get(conversation_id)
        if entry is None:
            return False
        task, control = entry
        control.reason = control.reason or reason
        task.cancel()
        return True

    async def drain(self, grace_s: float) -> None:
        """Let running answers finish within grace_s, then interrupt the rest and wait for their end."""
        tasks = [task for task, _ in self._running.values()]
        if not tasks:
            return
        log.info("shutdown: waiting up to %.1f s for %d answers", grace_s, len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for conversation_id, (task, _) in list(self._running.items()):
            if task in pending:
                self.cancel(conversation_id, "shutdown")
        if pending:
            log.info("shutdown: interrupted %d answers", len(pending))
            await asyncio.wait(pending, timeout=10)

    async def _run(self, control: StepControl, step: Step) -> None:
        task = asyncio.current_task()
        assert task is not None
        watchdog = asyncio.create_task(self._watch(control, task))
        try:
            # Its appends reach this pod's followers directly; the pod's log reader leaves it out.
            with self._log.hub.local_producer(control.conversation_id):
                await step(control)
        except asyncio.CancelledError:
            pass  # the step wrote its own end; nothing waits on this task's result
        finally:
            control.finished = True
            control.wake.set()
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            if control.producing_sent:
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.delete(redis_keys.producing(control.conversation_id))
            if self._on_end is not None:
                self._on_end(control.conversation_id)

    async def _watch(self, control: StepControl, step_task: asyncio.Task[None]) -> None:
        cid = control.conversation_id
        orphan_since: float | None = None
        while not control.finished:
            timeout = TICK_S
            if orphan_since is not None:
                timeout = max(0.0, min(TICK_S, orphan_since + self._orphan_grace_s - time.monotonic()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(control.wake.wait(), timeout)
            control.wake.clear()
            if control.finished:
                return
            try:
                # Marked before it is sent: a lease in flight when the step ends is deleted too.
                control.producing_sent = True
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.set(redis_keys.producing(cid), control.turn_id, ex=PRODUCING_LEASE_S)
                    pipe.get(redis_keys.cancel(cid))
                    pipe.zcount(redis_keys.watchers(cid), time.time(), "+inf")
                    _, cancel_turn, watchers = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("answer watchdog for %s cannot reach Redis: %s", cid, exc)
                continue
            if control.finished:
                return
            if cancel_turn == control.turn_id:
                control.reason = control.reason or "cancelled"
                step_task.cancel()
                return
            if not control.watched or watchers:
                orphan_since = None
                continue
            orphan_since = orphan_since if orphan_since is not None else time.monotonic()
            if time.monotonic() - orphan_since >= self._orphan_grace_s:
                log.info("nobody follows %s any more: stopping the model", cid)
                control.reason = control.reason or "abandoned"
                step_task.cancel()
                return
