"""The leases this pod holds in Redis sorted sets (member -> expiry), renewed together.

Every open stream holds leases: its user's stream slot (state/limits.py) and, while it follows a
conversation, a watcher entry (running answers stop when nobody follows). Each is taken when the
stream opens and removed when it ends; in between this keeper renews them all in one pipelined
round trip per interval, so an idle stream costs no Redis command of its own. A lease this pod
no longer renews (it died) runs out by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from streaming_gateway.state.redis_replies import Redis

log = logging.getLogger(__name__)

#: Renewal interval; every lease is at least three intervals long, so one failed renewal is harmless.
RENEW_EVERY_S = 5.0
#: Commands per pipeline: many thousands of streams renew in a few bounded round trips.
CHUNK = 2000
#: A lease set outlives its longest lease by this much (then Redis drops the empty key by itself).
KEY_GRACE_S = 60


class LeaseKeeper:
    def __init__(self, redis: Redis, *, every_s: float = RENEW_EVERY_S) -> None:
        self._redis = redis
        self._every_s = every_s
        #: (sorted set key, member) -> lease length in seconds.
        self._leases: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._leases)

    def hold(self, key: str, member: str, lease_s: float) -> None:
        """Keep renewing a lease taken already (ZADD member to key with score now + lease_s)."""
        if lease_s < 3 * self._every_s:
            raise ValueError(f"a lease of {lease_s} s is too short to renew every {self._every_s} s")
        self._leases[(key, member)] = lease_s
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="lease-keeper")

    def drop(self, key: str, member: str) -> None:
        """Stop renewing (the caller removes the lease itself, or lets it run out)."""
        self._leases.pop((key, member), None)

    async def renew(self) -> None:
        """Renew every held lease now: only members still present (XX), so a removed one stays removed."""
        now = time.time()
        leases = list(self._leases.items())
        for start in range(0, len(leases), CHUNK):
            ttls: dict[str, float] = {}
            async with self._redis.pipeline(transaction=False) as pipe:
                for (key, member), lease_s in leases[start : start + CHUNK]:
                    pipe.zadd(key, {member: now + lease_s}, xx=True)
                    ttls[key] = max(ttls.get(key, 0.0), lease_s)
                for key, lease_s in ttls.items():
                    pipe.expire(key, int(lease_s) + KEY_GRACE_S)
                await pipe.execute()

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._every_s)
            if not self._leases:
                continue
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("could not renew %d leases (they run out unless renewed): %s", len(self), exc)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
