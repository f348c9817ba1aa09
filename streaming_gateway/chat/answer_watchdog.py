"""The pod's one watchdog over the answers it is producing: cancels from any pod, orphan stops.

Each running answer is checked about every TICK_S once it is a tick old: its producing lease is
renewed (a cancel sent to another pod finds the producer by it), its cancel key is read, and its
live watchers are counted (nobody following an answer for GATEWAY_ORPHAN_GRACE_SECONDS stops it).
All the answers due at one time go in one pipeline: one round trip per Redis node (a Redis Cluster
client's pipeline sends each node its commands concurrently; the three of one answer share its
conversation's hash tag), not a task and a `wait_for` loop per answer.

- Due times are rounded up to a grid of TICK_S / GRID, so answers started close together are
  checked together, and one timer (not one per answer) waits for the next due time. A pod of short
  answers (each done within a tick) never sends a command for them.
- `nudge` (a local reader of the conversation left) makes its answer due now: the orphan check
  starts at once, as the grace period counts from it.
- An answer whose end is written (`StepControl.end_written`, set by the step before its last
  write) or that has finished is not checked again: a cancel or an orphan stop has nothing left to
  stop, and the follower leaving right after the end costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis

log = logging.getLogger(__name__)

#: How often a running answer is checked.
TICK_S = 1.0
#: Due times are rounded up to TICK_S / GRID: checks are at most that late, and those due within
#: one step of the grid share a round trip.
GRID = 4
PRODUCING_LEASE_S = 5
#: Answers per pipeline (three commands each).
CHUNK = 300


@dataclass(eq=False)
class StepControl:
    """Shared by a producing step and the watchdog: why the step was stopped, if it was."""

    conversation_id: str
    turn_id: str
    #: Client-started answers stop when nobody follows them; action continuations run regardless.
    watched: bool
    reason: str | None = None
    #: Set by the step once its answer's end is being written: nothing is checked for it any more.
    end_written: bool = False
    #: Set when the step has ended.
    finished: bool = False
    #: Set once a check has sent the producing lease: only then does the end delete it (an answer
    #: shorter than a tick never wrote it, and its end costs no command for it).
    producing_sent: bool = False
    #: When the answer is next checked (time.monotonic()).
    due: float = 0.0
    #: Since when nobody has followed it (monotonic), if so.
    orphan_since: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class AnswerWatchdog:
    def __init__(self, redis: Redis, *, orphan_grace_s: float, tick_s: float = TICK_S) -> None:
        self._redis = redis
        self._orphan_grace_s = orphan_grace_s
        self._tick_s = tick_s
        self._grid_s = tick_s / GRID
        self._watched: set[StepControl] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: The check in flight (at most one) and the answers it covers.
        self._check: asyncio.Task[None] | None = None
        self._checking: set[StepControl] = set()

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, control: StepControl, task: asyncio.Task[None]) -> None:
        """Check the answer of `task` from a tick on, until it ends."""
        control.task = task
        control.due = time.monotonic() + self._tick_s
        self._watched.add(control)
        self._schedule(control.due)

    def nudge(self, control: StepControl) -> None:
        """Check this answer now (a local reader of it left), unless its end is written already.
        During a check of it, once more after that check (it may have counted the reader)."""
        if control.end_written or control.finished or control not in self._watched:
            return
        control.due = time.monotonic()
        self._schedule(control.due)

    async def release(self, control: StepControl) -> None:
        """The answer ended: stop checking it, and wait for a check in flight that covers it (its
        producing lease may be on the way, and the caller deletes it after)."""
        self._watched.discard(control)
        if not self._watched and self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        check = self._check
        if check is not None and control in self._checking:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(check)

    async def check_due(self) -> None:
        """Check every answer due now, in one pipeline (the timer calls this; so may a test)."""
        now = time.monotonic()
        due = [c for c in self._watched if c.due <= now and not (c.end_written or c.finished)]
        for start in range(0, len(due), CHUNK):
            await self._check_some(due[start : start + CHUNK])

    def _schedule(self, when: float) -> None:
        if self._check is not None:
            return  # the check in flight schedules the next one when it is done
        now = time.monotonic()
        if when > now:
            when = math.ceil(when / self._grid_s) * self._grid_s
        if when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, when - now), self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        if not any(c.due <= now and not c.end_written for c in self._watched):
            self._reschedule()
            return
        self._check = asyncio.create_task(self._run_check(), name="answer-watchdog")

    async def _run_check(self) -> None:
        try:
            await self.check_due()
        finally:
            self._check = None
            self._checking = set()
            self._reschedule()

    def _reschedule(self) -> None:
        pending = [c.due for c in self._watched if not (c.end_written or c.finished)]
        if pending:
            self._schedule(min(pending))

    async def _check_some(self, controls: list[StepControl]) -> None:
        self._checking.update(controls)
        now, sent = time.time(), time.monotonic()
        try:
            # Marked before it is sent: a lease in flight when its step ends is deleted too.
            async with self._redis.pipeline(transaction=False) as pipe:
                for control in controls:
                    cid = control.conversation_id
                    control.producing_sent = True
                    pipe.set(redis_keys.producing(cid), control.turn_id, ex=PRODUCING_LEASE_S)
                    pipe.get(redis_keys.cancel(cid))
                    pipe.zcount(redis_keys.watchers(cid), now, "+inf")
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            replies = [exc] * (3 * len(controls))
        failed = next((r for r in replies if isinstance(r, BaseException)), None)
        if failed is not None:
            log.warning("answer watchdog cannot reach Redis (%d answers): %s", len(controls), failed)
        now = time.monotonic()
        for n, control in enumerate(controls):
            _, cancel_turn, watchers = replies[3 * n : 3 * n + 3]
            if control.due <= sent:  # else nudged while this check was in flight: due again now
                control.due = now + self._tick_s
            if isinstance(cancel_turn, BaseException) or isinstance(watchers, BaseException):
                continue  # no decision without an answer: checked again in a tick
            self._decide(control, cancel_turn, watchers, now)

    def _decide(self, control: StepControl, cancel_turn: object, watchers: object, now: float) -> None:
        if control.finished or control.end_written:
            return
        if cancel_turn == control.turn_id:
            self._stop(control, "cancelled")
            return
        if not control.watched or watchers:
            control.orphan_since = None
            return
        if control.orphan_since is None:
            control.orphan_since = now
        if now - control.orphan_since >= self._orphan_grace_s:
            log.info("nobody follows %s any more: stopping the model", control.conversation_id)
            self._stop(control, "abandoned")
            return
        control.due = min(control.due, control.orphan_since + self._orphan_grace_s)

    def _stop(self, control: StepControl, reason: str) -> None:
        control.reason = control.reason or reason
        self._watched.discard(control)
        if control.task is not None:
            control.task.cancel()
