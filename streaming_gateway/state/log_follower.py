"""Following one conversation's stream log for one client connection (SSE, WebSocket, OpenAI API).

Replays what the client has not seen (after its last event id) from the log, then follows live
from its inbox in the pod's log hub (state/log_hub.py): entries appended on this pod are handed
over as they are persisted, the rest come from the pod's one reader. Nothing waits in Redis, so an
idle stream holds no Redis connection. Reads are bounded batches written with backpressure, so a
slow client costs at most one batch of memory. While following, the reader holds a watcher lease
in Redis: an answer nobody follows is stopped (chat/running_answers.py).

A follower opened for a turn this pod is about to start (`turn_from`) subscribes before the turn
and takes no lease itself: the turn's one round trip takes it (`watcher`, then `turn_started`).
Its first entries are the producer's appends handed over, so it reads nothing from the log unless
something written elsewhere meanwhile shows as a gap.

Keep-alives (a write on an idle stream every `heartbeat_s`: proxies keep the connection open, and a
client that went away is noticed when the write fails) come from one timer wheel per pod
(KeepAliveWheel), not a timer per stream: thousands of idle streams leave no timer, timeout object
and cancellation per keep-alive in the event loop (on asyncio's own loop, GATEWAY_UVLOOP=false, its
timer heap compares in Python on every push and pop, so each open stream's timer slowed every other).
A new stream's first keep-alive comes a round-robin fraction of the interval early, so streams
opened in a burst do not keep alive in one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import AsyncGenerator
from typing import Protocol

from agent_contracts.events import ErrorEvent
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import Watcher, new_id
from streaming_gateway.state.log_compaction import first_id, resume_view
from streaming_gateway.state.stream_log import LogEntry, StreamLog, Subscription

log = logging.getLogger(__name__)

BATCH = 100
WATCH_LEASE_S = 15.0
#: Ticks of the keep-alive wheel per interval: a keep-alive is late by at most one tick.
KEEPALIVE_TICKS = 16


class AnswerNudge(Protocol):
    """What a follower needs of the running answers (chat.running_answers.RunningAnswers)."""

    def nudge(self, conversation_id: str) -> None: ...


class Follower:
    __slots__ = (
        "_answers",
        "_heartbeat_s",
        "_keepalive_at",
        "_leased",
        "_log",
        "_reader_id",
        "_stop",
        "_turn_after",
        "_turn_from",
        "_turn_inbox",
        "_waiting_on",
        "_wheel_tick",
        "conversation_id",
        "last_id",
        "ready",
    )

    def __init__(
        self,
        log_: StreamLog,
        answers: AnswerNudge,
        conversation_id: str,
        *,
        heartbeat_s: float,
        stop: asyncio.Event,
        turn_from: int | None = None,
    ) -> None:
        """`turn_from`: this follower is for a turn about to start on this pod, and the log is
        known to reach at least this id (see turn_started)."""
        self._log = log_
        self._answers = answers
        self.conversation_id = conversation_id
        self._heartbeat_s = heartbeat_s
        self._stop = stop
        self._reader_id = new_id("reader")
        self.last_id = 0
        #: Entries already in hand after the one just yielded: a writer flushes when it reaches 0.
        self.ready = 0
        self._turn_from = turn_from
        #: The inbox subscribed before the turn, and the id the turn's answer follows.
        self._turn_inbox: Subscription | None = None
        self._turn_after: int | None = None
        self._leased = False
        #: While waiting: when a keep-alive is due (monotonic), the inbox waited on, and the wheel's
        #: tick this follower is filed under (None: not filed).
        self._keepalive_at: float | None = None
        self._waiting_on: Subscription | None = None
        self._wheel_tick: int | None = None

    def lease_for_turn(self) -> Watcher:
        """The watcher lease the turn's begin_turn takes for this follower. From here on the
        follower removes it when it ends: the script may have run although its answer never came
        back (the request cancelled meanwhile), and a lease left behind would keep an answer nobody
        follows running until it expired."""
        self._leased = True
        return Watcher(self._reader_id, WATCH_LEASE_S)

    async def __aenter__(self) -> Follower:
        if self._turn_from is not None:
            # The turn's own appends reach it from the hub: nothing to wake the pod's reader for.
            self._turn_inbox = self._log.hub.subscribe(self.conversation_id, self._turn_from, quiet=True)
            return self
        await self._log.watch(self.conversation_id, self._reader_id, WATCH_LEASE_S)
        self._hold_lease()
        return self

    def turn_started(self, after: int) -> None:
        """The turn began (its lease is taken) and its answer follows log id `after`."""
        self._hold_lease()
        self._turn_after = after
        if self._turn_inbox is not None:
            self._turn_inbox.caught_up(after)
            self._log.hub.seen(self.conversation_id, after)

    def _hold_lease(self) -> None:
        # Renewed with every other lease of the pod in one round trip (state/leases.py).
        self._log.leases.hold(redis_keys.watchers(self.conversation_id), self._reader_id, WATCH_LEASE_S)
        self._leased = True

    async def __aexit__(self, *exc_info: object) -> None:
        if self._turn_inbox is not None:
            self._log.unsubscribe(self._turn_inbox)
            self._turn_inbox = None
        if not self._leased:
            return  # no turn was asked for: no lease was taken
        # Not awaited: a follower's end (a cancel, a new resume on the socket) never waits for
        # Redis. The removal goes in one round trip with the others asked for in this turn of the
        # event loop: the stream's slot, when the stream ends with its follower (state/leases.py).
        # It is sent even when the answer has ended: a lease left to run out would count as a
        # live watcher for up to WATCH_LEASE_S, and keep the conversation's next answer running
        # that long after its own client left (its orphan stop counts the watchers).
        # The running answer is nudged once the lease is gone, to check for followers then (an
        # answer whose end is written is not checked: chat/answer_watchdog.py).
        removed = self._log.leases.release(redis_keys.watchers(self.conversation_id), self._reader_id)
        removed.add_done_callback(self._unwatched)

    def _unwatched(self, removed: asyncio.Future[None]) -> None:
        if not removed.cancelled():
            removed.exception()  # retrieved: a lease not removed runs out by itself
        self._answers.nudge(self.conversation_id)

    async def entries(
        self, after: int, *, until_end: bool, until_step_end: bool = False
    ) -> AsyncGenerator[LogEntry | None, None]:
        """Log entries after `after`, in order; None when a keep-alive is due. Ends after the answer's
        end when until_end (after any message_end, a tool-call pause included, when until_step_end),
        or once caught up after `stop` is set."""
        self.last_id = after
        cid = self.conversation_id
        inbox = self._turn_inbox
        if inbox is not None and after == self._turn_after:
            # Subscribed before the turn began: the answer's entries come from the hub.
            self._turn_inbox = None
            from_log = False
        else:
            # Subscribed before the first read: whatever is appended after that read reaches the inbox.
            inbox = self._log.subscribe(cid, after)
            from_log = True  # replay from the log first; later only on a gap or an overflowed inbox
        wheel = keep_alives(self._heartbeat_s)
        # A first keep-alive a round-robin part of the interval early spreads a burst of new streams.
        last_sent = time.monotonic() - wheel.stagger()
        first = True
        flushed = False  # once stopping: one last read of the log, then end when caught up
        try:
            while True:
                stopping = self._stop.is_set()
                if from_log:
                    entries = await self._log.read(cid, self.last_id, count=BATCH)
                    from_log = len(entries) >= BATCH
                    if first and entries and self.last_id and first_id(entries[0]) > self.last_id + 1:
                        yield self._gap(first_id(entries[0]) - 1)
                    first = False
                    inbox.caught_up(entries[-1].id if entries else self.last_id)
                else:
                    taken = inbox.take(self.last_id)
                    if taken is None:
                        from_log = True
                        continue
                    entries = taken
                for index, stored in enumerate(entries):
                    # A compacted answer's merged tokens: only the text after what this reader has.
                    entry = resume_view(stored, self.last_id)
                    self.last_id = entry.id
                    self.ready = len(entries) - index - 1
                    yield entry
                    if (until_end and entry.ends_answer) or (until_step_end and entry.type == "message_end"):
                        return
                now = time.monotonic()
                if entries:
                    last_sent = now
                    continue
                if from_log:
                    continue
                if stopping:
                    if flushed:
                        return
                    flushed = from_log = True
                    continue
                if now - last_sent >= self._heartbeat_s:
                    last_sent = now
                    yield None
                # Wait in memory, never in Redis: a cancel (client gone, a new resume) ends it at once;
                # the pod's keep-alive wheel wakes it when a keep-alive is due.
                if not self._stop.is_set():
                    _stop_if_cancelled(cid)
                    self._keepalive_at = last_sent + self._heartbeat_s
                    self._waiting_on = inbox
                    wheel.file(self)
                    await inbox.wake.wait()
                    _stop_if_cancelled(cid)
        finally:
            self._keepalive_at = self._waiting_on = None
            self._log.unsubscribe(inbox)

    def keep_alive_due(self) -> None:
        """Called by the keep-alive wheel: wake the follower if it still waits."""
        if self._waiting_on is not None:
            self._waiting_on.wake.set()

    def _gap(self, gap_id: int) -> LogEntry:
        """The events the client asked for were trimmed or expired: say so instead of skipping silently."""
        event = ErrorEvent(
            id=gap_id,
            conversation_id=self.conversation_id,
            code="events_expired",
            message="some events after your last event id are no longer kept; reload the conversation",
            retryable=False,
        )
        return LogEntry(gap_id, "error", event.to_json())


class KeepAliveWheel:
    """When each waiting follower of this pod (with one keep-alive interval) is due a keep-alive.

    Buckets of interval / KEEPALIVE_TICKS; a waiting follower is filed under the tick at or after
    its due time, at most once (its due time only moves later: when its bucket comes up it is woken
    if due, else filed again). One task runs the wheel while any follower is filed, and ends when
    none is, so an idle pod has no task of it.
    """

    def __init__(self, interval_s: float) -> None:
        self.tick_s = interval_s / KEEPALIVE_TICKS
        self._due: dict[int, list[Follower]] = {}
        self._filed = 0
        #: The last tick looked at: nothing is filed at or before it.
        self._done = 0
        self._next_stagger = 0
        self._task: asyncio.Task[None] | None = None

    def stagger(self) -> float:
        """How much earlier than a full interval a new stream's first keep-alive is due (round-robin)."""
        self._next_stagger = (self._next_stagger + 1) % KEEPALIVE_TICKS
        return self._next_stagger * self.tick_s

    def spread(self) -> list[int]:
        """Followers filed per coming tick, in tick order (how evenly keep-alives are spread)."""
        return [sum(1 for f in self._due[tick] if f._wheel_tick == tick) for tick in sorted(self._due)]

    @property
    def running(self) -> bool:
        return self._task is not None

    def file(self, follower: Follower) -> None:
        if follower._wheel_tick is not None or follower._keepalive_at is None:
            return  # filed under an earlier tick already: it is looked at again then
        if self._task is None:
            self._done = int(time.monotonic() / self.tick_s)
            self._task = asyncio.create_task(self._run(), name="keep-alive-wheel")
        tick = max(math.ceil(follower._keepalive_at / self.tick_s), self._done + 1)
        follower._wheel_tick = tick
        self._due.setdefault(tick, []).append(follower)
        self._filed += 1

    def _turn(self, upto: int, after: int) -> None:
        """Wake the due followers of ticks (after, upto]; file the rest again."""
        now = time.monotonic()
        for tick in range(after + 1, upto + 1):
            for follower in self._due.pop(tick, ()):
                if follower._wheel_tick != tick:
                    continue
                follower._wheel_tick = None
                self._filed -= 1
                due = follower._keepalive_at
                if due is None:
                    continue  # it stopped waiting for good
                if due <= now:
                    follower.keep_alive_due()
                else:
                    self.file(follower)

    async def _run(self) -> None:
        try:
            while self._filed:
                await asyncio.sleep((self._done + 1) * self.tick_s - time.monotonic())
                now = int(time.monotonic() / self.tick_s)
                if now > self._done:
                    done, self._done = self._done, now
                    self._turn(now, done)
        finally:
            self._task = None
            if not self._filed:
                self._due.clear()


#: One wheel per event loop and keep-alive interval (a pod has one interval: its setting).
_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, KeepAliveWheel]] = (
    weakref.WeakKeyDictionary()
)


def keep_alives(interval_s: float) -> KeepAliveWheel:
    """The running loop's keep-alive wheel for this interval."""
    wheels = _WHEELS.setdefault(asyncio.get_running_loop(), {})
    wheel = wheels.get(interval_s)
    if wheel is None:
        wheel = wheels[interval_s] = KeepAliveWheel(interval_s)
    return wheel


def _stop_if_cancelled(conversation_id: str) -> None:
    """End the follower when its task was asked to stop but no CancelledError ended this loop.

    Seen under load: a WebSocket starting a new turn awaited its old follower's cancelled task for
    ever, the task still counting the request (`cancelling()`) and the follower back in its wait.
    The CancelledError was lost on its way (a cancel that lands as the wait's own timeout expires
    can come out as TimeoutError, which this loop takes for "keep-alive due"). The request is
    honoured here, before and after each wait.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        log.info("follower of %s: a lost cancel request honoured", conversation_id)
        raise asyncio.CancelledError
