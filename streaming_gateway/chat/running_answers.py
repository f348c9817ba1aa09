"""The answers this pod is producing now, each a task, with the pod's one watchdog over them.

The watchdog (answer_watchdog.py) stops the model request at once when the answer is cancelled
(from any pod) and when nobody follows the conversation any more (after
GATEWAY_ORPHAN_GRACE_SECONDS, which leaves a dropped client time to reconnect, on any pod, and
resume). On shutdown the registry lets answers finish within the grace period, then interrupts
the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from streaming_gateway.chat.answer_watchdog import AnswerWatchdog, StepControl
from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis
from streaming_gateway.state.stream_log import StreamLog

__all__ = ["RunningAnswers", "Step", "StepControl"]

log = logging.getLogger(__name__)

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
        self.watchdog = AnswerWatchdog(redis, orphan_grace_s=orphan_grace_s)
        #: Told the conversation id when a step has ended (the log compactor's timer).
        self._on_end = on_end
        self._running: dict[str, tuple[asyncio.Task[None], StepControl]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def start(self, conversation_id: str, turn_id: str, step: Step, *, watched: bool) -> None:
        control = StepControl(conversation_id, turn_id, watched)
        task = asyncio.create_task(self._run(control, step), name=f"answer:{conversation_id}")
        self._running[conversation_id] = (task, control)
        self.watchdog.watch(control, task)

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
            self.watchdog.nudge(entry[1])

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
        try:
            # Its appends reach this pod's followers directly; the pod's log reader leaves it out.
            with self._log.hub.local_producer(control.conversation_id):
                await step(control)
        except asyncio.CancelledError:
            pass  # the step wrote its own end; nothing waits on this task's result
        finally:
            control.finished = True
            await self.watchdog.release(control)
            if control.producing_sent:
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.delete(redis_keys.producing(control.conversation_id))
            if self._on_end is not None:
                self._on_end(control.conversation_id)
