"""Per-user limits kept in Redis, so every pod enforces the same numbers.

Requests per minute: a fixed one-minute window counter. Concurrent streams: a sorted set of
leases (member = stream id, score = expiry), so a pod that dies without cleaning up frees its
slots when the leases run out.
"""

from __future__ import annotations

import time

from streaming_gateway.errors import RateLimited
from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis

# KEYS: the user's lease set. ARGV: now, limit, stream id, expiry. Returns 1 when a slot was taken.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[4] - ARGV[1]) + 60)
return 1
"""

#: A stream's slot lease; renewed while the stream is open by the pod's LeaseKeeper (state/leases.py).
STREAM_LEASE_S = 30.0


class RateLimiter:
    def __init__(self, redis: Redis, per_minute: int) -> None:
        self._redis = redis
        self._per_minute = per_minute

    async def hit(self, user_id: str) -> None:
        """Count one request; raises RateLimited (with the seconds to wait) past the limit."""
        now = time.time()
        window = int(now // 60)
        key = redis_keys.user_rate(user_id, window)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        if count > self._per_minute:
            retry_after = int((window + 1) * 60 - now) + 1
            raise RateLimited(
                f"more than {self._per_minute} requests in a minute; retry in {retry_after} s",
                retry_after_s=retry_after,
                limit="requests_per_minute",
            )


class StreamSlots:
    def __init__(self, redis: Redis, per_user: int) -> None:
        self._redis = redis
        self._per_user = per_user
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, user_id: str, stream_id: str) -> None:
        now = time.time()
        taken = await self._acquire(
            keys=[redis_keys.user_streams(user_id)],
            args=[now, self._per_user, stream_id, now + STREAM_LEASE_S],
        )
        if not taken:
            raise RateLimited(
                f"at most {self._per_user} concurrent streams per user; close one first",
                retry_after_s=5,
                limit="concurrent_streams",
            )

    async def release(self, user_id: str, stream_id: str) -> None:
        await self._redis.zrem(redis_keys.user_streams(user_id), stream_id)
