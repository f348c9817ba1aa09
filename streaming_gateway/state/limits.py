"""Per-user limits kept in Redis, so every pod enforces the same numbers.

Requests per minute: a fixed one-minute window counter, counting HTTP requests and every
WebSocket frame alike. Once a user is over the limit, the pod remembers it until the window ends
and refuses without asking Redis, so a flood costs no Redis command per request. Concurrent
streams: a sorted set of leases (member = stream id, score = expiry), so a pod that dies without
cleaning up frees its slots when the leases run out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.typing import EncodableT

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

# KEYS: the request counter of this minute, the user's stream leases, the user's conversation index
# (all with the user's hash tag: one slot). ARGV: count the request (1/0), requests per minute, now,
# streams per user, stream id ('' for none), its lease's expiry, a new conversation's id ('' for
# none), its index score, conversations per user, index ttl s (set on every admitted turn).
# Returns {0} admitted, {1} over the rate limit, {2} the index is full, {3} no stream slot free. In
# the order the steps were taken one by one before: the request counts whatever follows; a refusal
# takes nothing else.
_ADMIT = """
if ARGV[1] == '1' then
  local count = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
  if count > tonumber(ARGV[2]) then return {1} end
end
if ARGV[7] ~= '' and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[9]) then return {2} end
if ARGV[5] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {3} end
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
  redis.call('EXPIRE', KEYS[2], math.ceil(ARGV[6] - ARGV[3]) + 60)
end
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[3], ARGV[8], ARGV[7]) end
-- Every admitted turn keeps the index as long as the conversation it answers (whose TTL the turn
-- renews): a user talking in one conversation for longer than the TTL keeps it listed and counted.
redis.call('EXPIRE', KEYS[3], ARGV[10])
return {0}
"""

# KEYS: the user's stream leases, conversation index. ARGV: stream id, conversation id ('' for none).
_UNDO = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
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

    @property
    def per_minute(self) -> int:
        return self._per_minute

    def check_remembered(self, user_id: str) -> None:
        """Refuse, without asking Redis, a user this pod saw over the limit in this window."""
        now = time.time()
        if self._over_until.get(user_id, 0.0) > now:
            raise self._limited((int(now // 60) + 1) * 60 - now)

    def over(self, user_id: str) -> RateLimited:
        """The user went over the limit in this window (counted elsewhere): remembered, and the error."""
        now = time.time()
        window_end = (int(now // 60) + 1) * 60
        self._remember(user_id, window_end, now)
        return self._limited(window_end - now)

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


@dataclass(eq=False)
class PendingCount:
    """A request whose count against the rate limit its turn's setup makes, in the user's one
    script (the middleware counts it by itself if the handler ends before that)."""

    counted: bool = False


@dataclass(frozen=True, slots=True)
class UserStep:
    """What a turn's user-keyed script does: count the request (`count`, unless counted already),
    take the stream slot `stream_id`, and put a new conversation in the user's index."""

    count: PendingCount | None = None
    stream_id: str | None = None
    new_conversation: str | None = None


class UserGate:
    """A turn's user-keyed steps (rate limit, stream slot, a new conversation's place in the user's
    index) in one script: the keys share the user's hash tag, so it is one command on a cluster too."""

    def __init__(
        self, redis: Redis, limiter: RateLimiter, *, streams_per_user: int, conversations_per_user: int
    ) -> None:
        self._limiter = limiter
        self._streams_per_user = streams_per_user
        self._conversations_per_user = conversations_per_user
        self._admit = redis.register_script(_ADMIT)
        self._undo = redis.register_script(_UNDO)

    async def admit(self, user_id: str, step: UserStep, *, index_ttl_s: int) -> bool:
        """Take the step; False when the user's conversation index is full (nothing taken then but
        the request's count). Raises RateLimited past the request rate or the stream slots."""
        script, keys, args = self.command(user_id, step, index_ttl_s=index_ttl_s)
        return self.outcome(user_id, await script(keys=keys, args=args))

    def command(
        self, user_id: str, step: UserStep, *, index_ttl_s: int
    ) -> tuple[AsyncScript, list[str], list[EncodableT]]:
        """The script, keys and arguments that take `step` (to send in a pipeline); `outcome` reads
        its reply. Raises RateLimited at once for a user this pod knows is over the limit."""
        now = time.time()
        count = step.count is not None and not step.count.counted
        if count and step.count is not None:
            step.count.counted = True  # by the script below, or refused as remembered
            self._limiter.check_remembered(user_id)
        args: list[EncodableT] = [
            1 if count else 0,
            self._limiter.per_minute,
            now,
            self._streams_per_user,
            step.stream_id or "",
            now + STREAM_LEASE_S,
            step.new_conversation or "",
            int(now * 1_000_000),
            self._conversations_per_user,
            index_ttl_s,
        ]
        return self._admit, self.keys(user_id, int(now // 60)), args

    def outcome(self, user_id: str, reply: Any) -> bool:
        """The admit script's reply: True admitted, False the index is full; raises the refusals."""
        code = int(reply[0])
        if code == 1:
            raise self._limiter.over(user_id)
        if code == 3:
            raise streams_full(self._streams_per_user)
        return code != 2

    @staticmethod
    def keys(user_id: str, window: int) -> list[str]:
        """The script's keys, all in the user's hash slot: this minute's counter, stream leases, index."""
        return [
            redis_keys.user_rate(user_id, window),
            redis_keys.user_streams(user_id),
            redis_keys.user_conversations(user_id),
        ]

    async def undo(self, user_id: str, step: UserStep) -> None:
        """Give back what `admit` took (the request stays counted)."""
        await self._undo(
            keys=[redis_keys.user_streams(user_id), redis_keys.user_conversations(user_id)],
            args=[step.stream_id or "", step.new_conversation or ""],
        )


def streams_full(per_user: int) -> RateLimited:
    return RateLimited(
        f"at most {per_user} concurrent streams per user; close one first",
        retry_after_s=5,
        limit="concurrent_streams",
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
            raise streams_full(self._per_user)
