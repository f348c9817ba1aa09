"""The client streams open on this pod: per-user slots, metrics, and a stop signal for shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from streaming_gateway.errors import RateLimited, Unavailable
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import new_id
from streaming_gateway.state.leases import LeaseKeeper
from streaming_gateway.state.limits import STREAM_LEASE_S, StreamSlots

log = logging.getLogger(__name__)


@dataclass(eq=False)
class StreamHandle:
    transport: str
    user_id: str
    stream_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: The stream's slot: "held" (taken, its lease renewed) or "pending" (its turn's setup takes it,
    #: state/turn_setup.py; given back at the end in case the setup took it and then failed).
    slot: str = "held"


class StreamRegistry:
    def __init__(self, slots: StreamSlots, metrics: GatewayMetrics, leases: LeaseKeeper) -> None:
        self._slots = slots
        self._metrics = metrics
        self._leases = leases
        self._open: weakref.WeakSet[StreamHandle] = weakref.WeakSet()
        self._idle = asyncio.Event()
        self._idle.set()
        self.shutting_down = False

    def __len__(self) -> int:
        return len(self._open)

    @contextlib.asynccontextmanager
    async def open(
        self, transport: str, user_id: str, *, slot_by_turn: bool = False
    ) -> AsyncIterator[StreamHandle]:
        """An open stream of `user_id`, holding one of the user's stream slots; with `slot_by_turn`
        the slot is taken by the stream's turn setup (in the user's one script), which calls
        `slot_taken` once it has."""
        if self.shutting_down:
            raise Unavailable(
                "the gateway is shutting down; reconnect", code="shutting_down", retry_after_s=1
            )
        handle = StreamHandle(transport, user_id, new_id("stream"))
        lease_key = redis_keys.user_streams(user_id)
        if slot_by_turn:
            handle.slot = "pending"
        else:
            try:
                await self._slots.acquire(user_id, handle.stream_id)
            except RateLimited as exc:
                self._metrics.rate_limit_rejections.labels(exc.limit).inc()
                raise
            self._leases.hold(lease_key, handle.stream_id, STREAM_LEASE_S)
        self._open.add(handle)
        self._idle.clear()
        gauge = self._metrics.active_streams.labels(transport)
        gauge.inc()
        started = time.monotonic()
        try:
            yield handle
        finally:
            # The slot is given back in one round trip with the removals asked for meanwhile: the
            # follower's watcher lease, given back as it ended just before (state/leases.py).
            released = self._leases.release(lease_key, handle.stream_id)
            self._open.discard(handle)
            if not self._open:
                self._idle.set()
            gauge.dec()
            self._metrics.stream_duration.labels(transport).observe(time.monotonic() - started)
            try:  # a pending slot too: its setup may have taken it and failed before giving it back
                await released
            except (RedisError, OSError) as exc:
                log.warning("stream slot %s not released (its lease expires): %s", handle.stream_id, exc)

    def slot_taken(self, handle: StreamHandle) -> None:
        """The turn's setup took the stream's slot (`open(slot_by_turn=True)`): renew its lease."""
        if handle.slot == "pending":
            handle.slot = "held"
            self._leases.hold(redis_keys.user_streams(handle.user_id), handle.stream_id, STREAM_LEASE_S)

    async def stop_all(self, timeout_s: float, wake: Callable[[], None] | None = None) -> None:
        """Ask every open stream to end resumably, and wait (bounded) until they have. `wake` rouses
        followers waiting for entries, so they see the stop at once."""
        for handle in list(self._open):
            handle.stop.set()
        if wake is not None:
            wake()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
