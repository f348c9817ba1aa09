"""Per-user limits kept in Redis, so every pod enforces the same numbers.

Requests per minute: a fixed one-minute window counter, counting HTTP requests and every
WebSocket frame alike. Once a user is over the limit, the pod remembers it until the window ends
and refuses without asking Redis, so a flood costs no Redis command per request. Concurrent
streams: a sorted set of leases (member = stream id, score = expiry), so a pod that dies without
cleaning up frees its slots when the leases run out.
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


#: Users remembered as over the limit, per pod; past this many, the ended windows are forgotten.
MAX_REMEMBERED = 10_000


class RateLimiter:
    def __init__(self, redis: Redis, per_minute: int) -> None:
        self._redis = redis
        self._per_minute = per_minute
        #: user -> the end of the window in which they went over the limit (a window's count only grows).
        self._over_until: dict[str, float] = {}

    async def hit(self, user_id: str) -> None:
        """Count one request (or WebSocket frame); raises RateLimited (with the seconds to wait)
        past the limit."""
        now = time.time()
        window = int(now // 60)
        window_end = (window + 1) * 60
        if self._over_until.get(user_id, 0.0) > now:
            raise self._limited(window_end - now)
        key = redis_keys.user_rate(user_id, window)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        if count > self._per_minute:
            self._remember(user_id, window_end, now)
            raise self._limited(window_end - now)

    def _limited(self, seconds_left: float) -> RateLimited:
        retry_after = int(seconds_left) + 1
        return RateLimited(
            f"more than {self._per_minute} requests in a minute; retry in {retry_after} s",
            retry_after_s=retry_after,
            limit="requests_per_minute",
        )

    def _remember(self, user_id: str, until: float, now: float) -> None:
        if len(self._over_until) >= MAX_REMEMBERED:
            self._over_until = {user: end for user, end in self._over_until.items() if end > now}
            if len(self._over_until) >= MAX_REMEMBERED:
                return  # that many users over the limit at once: keep counting them in Redis
        self._over_until[user_id] = until


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
