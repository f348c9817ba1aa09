"""Following one conversation's stream log for one client connection (SSE, WebSocket, OpenAI API).

Replays what the client has not seen (after its last event id), then follows live with XREAD
BLOCK. Reads are pulled in bounded batches and written with backpressure, so a slow client costs
at most one batch of memory. While following, the reader holds a watcher lease in Redis: an
answer nobody follows is stopped (chat/running_answers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from redis.exceptions import RedisError

from agent_contracts.events import ErrorEvent
from streaming_gateway.state.conversation_store import new_id
from streaming_gateway.state.stream_log import LogEntry, StreamLog

BATCH = 100
#: Longest XREAD BLOCK: an idle follower wakes this often (to refresh its leases, send keep-alives and
#: notice shutdown). Kept under the Redis client's 5 s socket timeout.
MAX_BLOCK_S = 3.0
WATCH_LEASE_S = 15.0


class AnswerNudge(Protocol):
    """What a follower needs of the running answers (chat.running_answers.RunningAnswers)."""

    def nudge(self, conversation_id: str) -> None: ...


class Follower:
    def __init__(
        self,
        log_: StreamLog,
        answers: AnswerNudge,
        conversation_id: str,
        *,
        heartbeat_s: float,
        stop: asyncio.Event,
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._log = log_
        self._answers = answers
        self.conversation_id = conversation_id
        self._heartbeat_s = heartbeat_s
        self._stop = stop
        self._refresh = refresh
        self._reader_id = new_id("reader")
        self.last_id = 0

    async def __aenter__(self) -> Follower:
        await self._log.watch(self.conversation_id, self._reader_id, WATCH_LEASE_S)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._log.unwatch(self.conversation_id, self._reader_id)
        self._answers.nudge(self.conversation_id)

    async def entries(
        self, after: int, *, until_end: bool, until_step_end: bool = False
    ) -> AsyncIterator[LogEntry | None]:
        """Log entries after `after`, in order; None when a keep-alive is due. Ends after the answer's
        end when until_end (after any message_end, a tool-call pause included, when until_step_end),
        or once caught up after `stop` is set."""
        self.last_id = after
        block_ms = int(min(self._heartbeat_s, MAX_BLOCK_S) * 1000)
        last_sent = last_lease = time.monotonic()
        first = True
        while True:
            stopping = self._stop.is_set()
            entries = await self._log.read(
                self.conversation_id, self.last_id, count=BATCH, block_ms=None if stopping else block_ms
            )
            if first and entries:
                first = False
                if self.last_id and entries[0].id > self.last_id + 1:
                    yield self._gap(entries[0].id - 1)
            for entry in entries:
                self.last_id = entry.id
                yield entry
                if (until_end and entry.ends_answer) or (until_step_end and entry.type == "message_end"):
                    return
            now = time.monotonic()
            if entries:
                last_sent = now
            elif stopping:
                return
            if now - last_sent >= self._heartbeat_s:
                last_sent = now
                yield None
            if now - last_lease >= WATCH_LEASE_S / 3:
                last_lease = now
                await self._log.watch(self.conversation_id, self._reader_id, WATCH_LEASE_S)
                if self._refresh is not None:
                    await self._refresh()

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
