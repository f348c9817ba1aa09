"""The gateway's online counters, added up in memory and written to Redis once per interval.

Every answered step adds to the per-version counters (online.py). Written one script per step,
that was a Redis round trip at the end of every answer; here a step only adds its increments to a
dict in memory, and `flush` writes what has been added, for every version, in one script run
(`OnlineMetrics.record_batch`), once a FLUSH_INTERVAL_S and on shutdown. Readers (`python -m
evaluation online`, bisect, the canary analysis) see an answer at most one interval later.

- **Nothing lost to a failed flush**: the batch is kept with its id and sent again at the next
  flush, before anything newer; its id makes a batch that did land (its reply was lost) count
  once. At most MAX_RETAINED batches wait (a Redis outage of about that many intervals); past
  that the oldest is dropped, with a warning.
- **Bounded**: per version the counters are a fixed set of names (online.py), and at most
  MAX_VERSIONS versions are added up between flushes (more is a flush at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque

from redis.exceptions import RedisError

from observability.online import PINNED, OnlineMetrics, stream_increments

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
#: Failed batches kept for the next flush (one per interval while Redis is away).
MAX_RETAINED = 120
#: Versions added up between two flushes before one is started early.
MAX_VERSIONS = 100

Counts = dict[str, dict[str, float]]  # version -> field (PINNED-prefixed if so) -> amount


class OnlineBatches:
    def __init__(
        self,
        online: OnlineMetrics,
        *,
        interval_s: float = FLUSH_INTERVAL_S,
        max_retained: int = MAX_RETAINED,
    ) -> None:
        self.online = online
        self._interval_s = interval_s
        self._counts: Counts = {}
        #: Batches whose flush failed, oldest first, each with its id.
        self._retained: deque[tuple[str, Counts]] = deque()
        self._max_retained = max_retained
        self._prefix = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._flushing = asyncio.Lock()
        self._early = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add_stream(
        self,
        version: str,
        *,
        ttft_s: float | None,
        tokens: int = 0,
        error_kind: str | None = None,
        pinned: bool = False,
    ) -> None:
        """One answered turn (as OnlineMetrics.record_stream), written with the next flush."""
        counts = self._counts.get(version)
        if counts is None:
            if len(self._counts) >= MAX_VERSIONS:
                self._early.set()
            counts = self._counts[version] = {}
        prefix = PINNED if pinned else ""
        for name, amount in stream_increments(ttft_s, tokens, error_kind).items():
            name = prefix + name
            counts[name] = counts.get(name, 0.0) + amount

    @property
    def pending(self) -> int:
        """Batches not written yet: the one being added up (if any) and those retained."""
        return len(self._retained) + (1 if self._counts else 0)

    async def flush(self) -> None:
        """Write the retained batches, then what was added up since the last flush, each in one
        script run. A failure keeps the batch (and those after it) for the next flush."""
        async with self._flushing:
            if self._counts:
                self._sequence += 1
                self._retained.append((f"{self._prefix}:{self._sequence}", self._counts))
                self._counts = {}
            while self._retained:
                batch_id, counts = self._retained[0]
                try:
                    await self.online.record_batch(batch_id, counts)
                except (RedisError, OSError) as exc:
                    waiting = len(self._retained)
                    log.warning("online metrics not written yet (%d batches wait): %s", waiting, exc)
                    break
                self._retained.popleft()
            while len(self._retained) > self._max_retained:
                _, counts = self._retained.popleft()
                log.error("online metrics of %s dropped after failed flushes", ", ".join(counts))

    def start(self) -> None:
        """Flush every interval (and at once when many versions are added up) until `close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="online-metrics-flush")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._early.wait(), self._interval_s)
            self._early.clear()
            await self.flush()

    async def close(self) -> None:
        """Stop the timer and write what is left (once: what fails now is dropped, with a warning)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._retained:
            log.error("online metrics of %d batches not written at shutdown", len(self._retained))
