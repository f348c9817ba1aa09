"""The leases this pod holds in Redis sorted sets (member -> expiry), renewed by one timer wheel.

Every open stream holds leases: its user's stream slot (state/limits.py) and, while it follows a
conversation, a watcher entry (running answers stop when nobody follows). Each is taken when the
stream opens and removed when it ends; in between this keeper renews it every third of its length,
so one failed renewal is harmless, and a lease this pod no longer renews (it died) runs out by
itself.

Renewing is the one periodic Redis work an idle stream costs, so it is kept small and even:

- **One timer wheel** for the pod, not a timer per lease: buckets of TICK_S, each lease in the
  bucket of its next renewal. A lease's first renewal is put in the next bucket of a round-robin
  over its period, so streams opened in a burst (a reconnect storm, a deploy) renew spread over the
  period instead of all in the same tick, and every tick renews about the same number of leases.
- **One script call per chunk** of a tick's leases on one Redis server (or, behind a cluster proxy,
  per hash slot): `ZADD XX` and `EXPIRE` run inside Redis, so the pod packs one command and parses
  one reply per CHUNK leases rather than two of each per lease. On a Redis Cluster the keys of a
  tick span many slots, so the commands are pipelined per node as before.

At 10,000 open streams that is about 3,000 renewals a second in a few commands every tick, instead
of 20,000 leases renewed in one burst of 40,000 pipelined commands every 5 s (which blocked the
event loop for hundreds of milliseconds under load and showed as the p99 TTFT of active streams).

A lease ends with `release`: its removal (`ZREM`) waits for the end of the event loop's current
turn and goes in one pipeline with every other removal asked for in it. A stream that ends gives
back its follower's watcher lease and its stream slot together, so they go in one round trip (on a
Redis Cluster the client's pipeline sends each node its part concurrently), and streams ending
together under load share one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, cast

from redis.crc import key_slot
from redis.exceptions import RedisError

from agent_contracts.redis_connection import is_cluster
from streaming_gateway.state.redis_replies import Redis
from streaming_gateway.state.task_stop import stop

log = logging.getLogger(__name__)

#: A lease is renewed this many times per its length: one failed renewal leaves two more.
RENEWALS_PER_LEASE = 3
#: The wheel's tick: renewals due within one tick go together.
TICK_S = 0.5
#: Leases per script call (or pipeline on a cluster): bounds the time Redis spends in one command.
CHUNK = 500
#: A lease set outlives its longest lease by this much (then Redis drops the empty key by itself).
KEY_GRACE_S = 60

# KEYS: lease sets, one per lease (repeats allowed). ARGV: now, grace, then member and lease seconds
# for each key in order. Only members still present are renewed (XX): a removed lease stays removed.
_RENEW = """
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local lease = tonumber(ARGV[2 * i + 2])
  redis.call('ZADD', key, 'XX', now + lease, ARGV[2 * i + 1])
  redis.call('EXPIRE', key, math.ceil(lease) + grace)
end
return #KEYS
"""

Lease = tuple[str, str]  # (sorted set key, member)

#: Lease removals in flight (a reference keeps each task alive until it is done).
_RELEASES: set[asyncio.Task[None]] = set()


def _settle(batch: list[tuple[Lease, asyncio.Future[None]]], failed: BaseException | None) -> None:
    for _lease, done in batch:
        if not done.done():
            if failed is None:
                done.set_result(None)
            else:
                done.set_exception(failed)


class LeaseKeeper:
    def __init__(self, redis: Redis, *, tick_s: float = TICK_S, by_slot: bool = False) -> None:
        """`by_slot`: one command may name keys of one hash slot only (a cluster proxy)."""
        self._redis = redis
        self._tick_s = tick_s
        self._by_slot = by_slot
        self._script = redis.register_script(_RENEW)
        #: Held leases -> lease length in seconds.
        self._leases: dict[Lease, float] = {}
        #: The wheel: tick number -> leases whose next renewal falls in it. A dropped lease is left
        #: in its bucket and skipped when the bucket comes up (no search on drop).
        self._due: dict[int, list[Lease]] = {}
        #: Renewal period in ticks, per lease length.
        self._periods: dict[float, int] = {}
        #: Round-robin position of the next first renewal, per period in ticks.
        self._spread: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        #: The last tick renewed: every lease is filed after it.
        self._done = 0
        self._closed = False
        #: Removals asked for in this turn of the event loop, each with the future its caller awaits.
        self._releasing: list[tuple[Lease, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._leases)

    def hold(self, key: str, member: str, lease_s: float) -> None:
        """Keep renewing a lease taken already (ZADD member to key with score now + lease_s)."""
        if lease_s < RENEWALS_PER_LEASE * self._tick_s:
            raise ValueError(f"a lease of {lease_s} s is too short to renew every {self._tick_s} s")
        lease = (key, member)
        known = lease in self._leases
        self._leases[lease] = lease_s
        if known:
            return  # already in the wheel
        if self._task is None and not self._closed:
            self._done = self._now_tick()
            self._task = asyncio.create_task(self._run(), name="lease-keeper")
        period = self._period(lease_s)
        offset = self._spread.get(period, 0)
        self._spread[period] = (offset + 1) % period
        self._due.setdefault(max(self._now_tick(), self._done) + 1 + offset, []).append(lease)

    def drop(self, key: str, member: str) -> None:
        """Stop renewing (the caller removes the lease itself, or lets it run out)."""
        self._leases.pop((key, member), None)

    def release(self, key: str, member: str) -> asyncio.Future[None]:
        """Stop renewing a lease and remove it: the future is done once Redis has removed it (its
        exception: why not; the lease then runs out by itself). The removal goes with the others
        asked for in this turn of the event loop."""
        self._leases.pop((key, member), None)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._releasing:
            loop.call_soon(self._send_releases)
        self._releasing.append(((key, member), done))
        return done

    def _send_releases(self) -> None:
        batch, self._releasing = self._releasing, []
        task = asyncio.create_task(self._remove(batch), name="lease-release")
        _RELEASES.add(task)
        task.add_done_callback(_RELEASES.discard)

    async def _remove(self, batch: list[tuple[Lease, asyncio.Future[None]]]) -> None:
        try:
            for start in range(0, len(batch), CHUNK):
                chunk = batch[start : start + CHUNK]
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for (key, member), _done in chunk:
                            pipe.zrem(key, member)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    _settle(chunk, exc)
                else:
                    _settle(chunk, None)
        finally:
            _settle(batch, RedisError("the lease removal was cancelled"))  # those not settled yet

    def spread(self) -> list[int]:
        """Leases due per coming tick, in tick order (how evenly the renewals are spread)."""
        return [sum(1 for lease in self._due[tick] if lease in self._leases) for tick in sorted(self._due)]

    async def renew(self) -> None:
        """Renew every held lease now (the wheel's schedule is unchanged)."""
        await self._send(list(self._leases.items()))

    def _period(self, lease_s: float) -> int:
        period = self._periods.get(lease_s)
        if period is None:
            period = self._periods[lease_s] = max(1, int(lease_s / RENEWALS_PER_LEASE / self._tick_s))
        return period

    def _now_tick(self) -> int:
        return int(time.monotonic() / self._tick_s)

    def _take_due(self, upto: int, after: int) -> list[tuple[Lease, float]]:
        """The held leases of buckets (after, upto], each put back in the bucket of its next renewal."""
        due: list[tuple[Lease, float]] = []
        held, periods = self._leases, self._periods
        for tick in range(after + 1, upto + 1):
            for lease in self._due.pop(tick, ()):
                lease_s = held.get(lease)
                if lease_s is None:
                    continue  # dropped
                due.append((lease, lease_s))
                period = periods.get(lease_s) or self._period(lease_s)
                self._due.setdefault(upto + period, []).append(lease)
        return due

    async def _send(self, leases: list[tuple[Lease, float]]) -> None:
        if not leases:
            return
        now = time.time()
        if is_cluster(self._redis):
            # The keys span many slots and nodes: plain commands, pipelined per node by the client.
            for start in range(0, len(leases), CHUNK):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (key, member), lease_s in leases[start : start + CHUNK]:
                        pipe.zadd(key, {member: now + lease_s}, xx=True)
                        pipe.expire(key, math.ceil(lease_s) + KEY_GRACE_S)
                    await pipe.execute()
            return
        calls: list[tuple[list[str], list[str | float]]] = []
        for chunk in self._chunks(leases):
            args: list[str | float] = [now, KEY_GRACE_S]
            for (_key, member), lease_s in chunk:
                args += [member, lease_s]
            calls.append(([key for (key, _member), _lease_s in chunk], args))
        if len(calls) == 1:  # the usual tick: one call (a pipeline would ask SCRIPT EXISTS first)
            await self._script(keys=calls[0][0], args=calls[0][1])
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # A plain pipeline: redis-py queues the call and loads the script before it runs.
                await self._script(keys=keys, args=args, client=cast(Any, pipe))
            await pipe.execute()

    def _chunks(self, leases: list[tuple[Lease, float]]) -> Iterable[list[tuple[Lease, float]]]:
        groups: dict[int, list[tuple[Lease, float]]] = {}
        if self._by_slot:
            for item in leases:
                groups.setdefault(key_slot(item[0][0].encode()), []).append(item)
        else:
            groups[0] = leases
        for group in groups.values():
            for start in range(0, len(group), CHUNK):
                yield group[start : start + CHUNK]

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep((self._done + 1) * self._tick_s - time.monotonic())
            now = self._now_tick()
            if now <= self._done:
                continue
            due = self._take_due(now, self._done)
            self._done = now
            try:
                await self._send(due)
            except (RedisError, OSError) as exc:
                log.warning("could not renew %d leases (they run out unless renewed): %s", len(due), exc)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            await stop(self._task)
            self._task = None
