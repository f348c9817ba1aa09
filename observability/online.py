"""Online metrics per agent config version, kept in Redis by the gateway, read by `python -m evaluation`.

Per version one hash of counters: streams and their errors by kind, time to first token (count,
sum and fixed histogram buckets), tokens, actions by outcome, and user feedback (count, sum, per
rating). Every update is one Lua script: of one version (an action, a rating), or of every
version a gateway pod served in the last second (its answered streams, added up in memory by
online_batches.py and written once a second). Cardinality is bounded: at
most MAX_VERSIONS versions are kept (the least recently written are dropped with their hash),
hashes expire after RETENTION_S without writes, error kinds and action outcomes come from
fixed sets, and feedback keeps only the last FEEDBACK_SAMPLES comments per version.

Traffic of pinned conversations (the client named the version: an operator, an evaluation run) is
counted in the same hash under PINNED-prefixed fields (`pinned_streams`, `pinned_feedback_count`,
...): operators still see it, but nothing that reads the plain counters (the canary analysis,
bisect, `evaluation metrics`) mistakes it for what users got.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent_contracts.redis_connection import AnyRedis
from observability.errors import InvalidFeedback

PREFIX = "online:{m}"  # one hash tag: the scripts touch the version hash and the index together
MAX_VERSIONS = 500
RETENTION_S = 90 * 24 * 3600
FEEDBACK_SAMPLES = 200
FEEDBACK_DEDUP_S = 30 * 24 * 3600
MAX_COMMENT_CHARS = 2000
MIN_RATING, MAX_RATING = 1, 5
#: How long a batch's done marker outlives it (a retried batch is recognised within this time).
BATCH_MARKER_TTL_S = 3600
#: Upper bounds (ms) of the time-to-first-token histogram buckets; the last bucket is +Inf.
TTFT_BUCKETS_MS = (100, 250, 500, 1000, 2000, 5000, 10000)
ERROR_KINDS = frozenset(
    {
        "upstream_error",
        "upstream_timeout",
        "upstream_unavailable",
        "upstream_rejected",
        "client_disconnected",
        "cancelled",
        "limit_exceeded",
        "invalid_tool_call",
        "actions_unavailable",
        "internal_error",
    }
)
ACTION_OUTCOMES = frozenset({"succeeded", "failed", "dead_lettered"})
#: Prefix of the counters of pinned conversations' traffic.
PINNED = "pinned_"


def versions_key() -> str:
    return f"{PREFIX}:versions"


def version_key(version: str) -> str:
    return f"{PREFIX}:v:{version}"


def feedback_key(version: str) -> str:
    return f"{PREFIX}:fb:{version}"


def feedback_seen_key(conversation_id: str, message_id: str) -> str:
    return f"{PREFIX}:fbseen:{conversation_id}:{message_id}"


# The scripts' shared part: past `max_versions` in the versions index, the oldest versions go with
# their counters and feedback (the hash and list under each prefix).
_EVICT_OLDEST = """
local function evict_oldest(index, max_versions, version_prefix, feedback_prefix)
  local extra = redis.call('ZCARD', index) - tonumber(max_versions)
  if extra > 0 then
    for _, old in ipairs(redis.call('ZRANGE', index, 0, extra - 1)) do
      redis.call('DEL', version_prefix .. old, feedback_prefix .. old)
      redis.call('ZREM', index, old)
    end
  end
end
"""

# KEYS: version hash, versions index. ARGV: version, now, retention, max versions, then field/increment pairs.
_RECORD = (
    _EVICT_OLDEST
    + """
for i = 5, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[2])
redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
evict_oldest(KEYS[2], ARGV[4], KEYS[3], KEYS[4])
return 1
"""
)

# KEYS: the batch's done marker, versions index, then one version hash per version. ARGV: now,
# retention, max versions, done marker ttl, version hash prefix, feedback prefix, then per version
# hash in order its version and its increments as JSON ({field: amount as a string}). A batch sent
# again (its reply was lost, then it was retried) finds its marker and changes nothing.
_RECORD_BATCH = (
    _EVICT_OLDEST
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = ARGV[1]
for i = 3, #KEYS do
  local version = ARGV[2 * i + 1]
  for name, amount in pairs(cjson.decode(ARGV[2 * i + 2])) do
    redis.call('HINCRBYFLOAT', KEYS[i], name, amount)
  end
  redis.call('HSETNX', KEYS[i], 'first_seen', now)
  redis.call('HSET', KEYS[i], 'last_seen', now)
  redis.call('EXPIRE', KEYS[i], ARGV[2])
  redis.call('ZADD', KEYS[2], now, version)
end
evict_oldest(KEYS[2], ARGV[3], ARGV[5], ARGV[6])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[4])
return 1
"""
)

# KEYS: version hash, versions index, feedback list, seen key. ARGV: version, now, retention, max versions,
# rating, entry, samples, dedup ttl, counter prefix. A second rating of the same message replaces the first.
_FEEDBACK = """
local before = redis.call('GET', KEYS[4])
local rating = tonumber(ARGV[5])
local p = ARGV[9]
if before then
  local old = tonumber(before)
  redis.call('HINCRBYFLOAT', KEYS[1], p .. 'feedback_sum', rating - old)
  redis.call('HINCRBYFLOAT', KEYS[1], p .. 'feedback_rating_' .. old, -1)
else
  redis.call('HINCRBYFLOAT', KEYS[1], p .. 'feedback_count', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], p .. 'feedback_sum', rating)
end
redis.call('HINCRBYFLOAT', KEYS[1], p .. 'feedback_rating_' .. rating, 1)
redis.call('SET', KEYS[4], rating, 'EX', ARGV[8])
redis.call('LPUSH', KEYS[3], ARGV[6])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[2])
redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if before then return 0 end
return 1
"""


@dataclass(frozen=True)
class VersionMetrics:
    """The aggregates of one version, with the derived numbers operators compare."""

    version: str
    counters: dict[str, float] = field(default_factory=dict)

    def _n(self, name: str) -> float:
        return self.counters.get(name, 0.0)

    @property
    def streams(self) -> int:
        return int(self._n("streams"))

    @property
    def pinned_streams(self) -> int:
        """Answers in pinned conversations: counted apart, in none of the numbers here."""
        return int(self._n(PINNED + "streams"))

    @property
    def pinned_feedback_count(self) -> int:
        return int(self._n(PINNED + "feedback_count"))

    @property
    def feedback_count(self) -> int:
        return int(self._n("feedback_count"))

    @property
    def feedback_mean(self) -> float | None:
        return self._n("feedback_sum") / self.feedback_count if self.feedback_count else None

    @property
    def ttft_count(self) -> int:
        return int(self._n("ttft_count"))

    @property
    def ttft_mean_ms(self) -> float | None:
        return self._n("ttft_sum_ms") / self.ttft_count if self.ttft_count else None

    def ttft_quantile_ms(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (inf when past the last bucket)."""
        if not self.ttft_count:
            return None
        rank, seen = q * self.ttft_count, 0.0
        for bound in TTFT_BUCKETS_MS:
            seen += self._n(f"ttft_le_{bound}")
            if seen >= rank:
                return float(bound)
        return math.inf

    @property
    def error_rate(self) -> float | None:
        return self._n("stream_errors") / self.streams if self.streams else None

    @property
    def actions_total(self) -> int:
        return int(sum(self._n(f"action_{outcome}") for outcome in ACTION_OUTCOMES))

    @property
    def action_success_rate(self) -> float | None:
        return self._n("action_succeeded") / self.actions_total if self.actions_total else None

    @property
    def tokens_per_stream(self) -> float | None:
        return self._n("tokens") / self.streams if self.streams else None

    def errors_by_kind(self) -> dict[str, int]:
        return {
            name.removeprefix("error_"): int(value)
            for name, value in self.counters.items()
            if name.startswith("error_") and value
        }

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "streams": self.streams,
            "error_rate": self.error_rate,
            "errors_by_kind": self.errors_by_kind(),
            "ttft_mean_ms": self.ttft_mean_ms,
            "ttft_p95_ms": self.ttft_quantile_ms(0.95),
            "tokens_per_stream": self.tokens_per_stream,
            "actions": self.actions_total,
            "action_success_rate": self.action_success_rate,
            "feedback_count": self.feedback_count,
            "feedback_mean": self.feedback_mean,
            "pinned_streams": self.pinned_streams,
            "pinned_feedback_count": self.pinned_feedback_count,
        }


#: Metrics bisect can follow: name -> (how to read it, how many samples it rests on, higher is better).
METRICS: dict[str, tuple[Any, Any, bool]] = {
    "feedback_mean": (lambda m: m.feedback_mean, lambda m: m.feedback_count, True),
    "ttft_mean_ms": (lambda m: m.ttft_mean_ms, lambda m: m.ttft_count, False),
    "ttft_p95_ms": (lambda m: m.ttft_quantile_ms(0.95), lambda m: m.ttft_count, False),
    "error_rate": (lambda m: m.error_rate, lambda m: m.streams, False),
    "action_success_rate": (lambda m: m.action_success_rate, lambda m: m.actions_total, True),
    "tokens_per_stream": (lambda m: m.tokens_per_stream, lambda m: m.streams, False),
}


class StreamBatches(Protocol):
    """Answered streams added up and written later (online_batches.OnlineBatches)."""

    def add_stream(
        self,
        version: str,
        *,
        ttft_s: float | None,
        tokens: int = 0,
        error_kind: str | None = None,
        pinned: bool = False,
    ) -> None: ...

    async def flush(self) -> None: ...


def stream_increments(ttft_s: float | None, tokens: int, error_kind: str | None) -> dict[str, float]:
    """The counters one answered turn adds (see OnlineMetrics.record_stream)."""
    increments: dict[str, float] = {"streams": 1, "tokens": max(0, tokens)}
    if ttft_s is not None:
        ms = max(0.0, ttft_s * 1000)
        increments.update({"ttft_count": 1, "ttft_sum_ms": round(ms, 3)})
        bucket = next((b for b in TTFT_BUCKETS_MS if ms <= b), None)
        increments[f"ttft_le_{bucket}" if bucket else "ttft_le_inf"] = 1
    if error_kind is not None:
        kind = error_kind if error_kind in ERROR_KINDS else "internal_error"
        increments.update({"stream_errors": 1, f"error_{kind}": 1})
    return increments


class OnlineMetrics:
    """Writes (gateway) and reads (operators, bisect) of the per-version aggregates."""

    def __init__(self, client: AnyRedis, *, max_versions: int = MAX_VERSIONS) -> None:
        self._redis = client
        self._max_versions = max_versions
        self._record = client.register_script(_RECORD)
        self._feedback = client.register_script(_FEEDBACK)
        self._record_batch = client.register_script(_RECORD_BATCH)
        #: Where a writer that answers many turns adds its streams (the gateway: one script a
        #: second, not one per answer); None: `record_stream` writes each at once.
        self.batches: StreamBatches | None = None

    async def _incr(self, version: str, increments: dict[str, float], *, pinned: bool = False) -> None:
        args: list[Any] = [version, int(time.time()), RETENTION_S, self._max_versions]
        prefix = PINNED if pinned else ""
        for name, amount in increments.items():
            args += [prefix + name, amount]
        await self._record(
            keys=[version_key(version), versions_key(), f"{PREFIX}:v:", f"{PREFIX}:fb:"], args=args
        )

    async def record_batch(self, batch_id: str, increments: dict[str, dict[str, float]]) -> bool:
        """Add several versions' `increments` (field names with their PINNED prefix if any) in one
        script run, at most once per `batch_id`: True when added now, False when that batch was
        added already (a retry of a batch whose reply was lost)."""
        keys = [f"{PREFIX}:batch:{batch_id}", versions_key()]
        args: list[Any] = [int(time.time()), RETENTION_S, self._max_versions, BATCH_MARKER_TTL_S]
        args += [f"{PREFIX}:v:", f"{PREFIX}:fb:"]
        for version, fields in increments.items():
            keys.append(version_key(version))
            args += [version, json.dumps({name: repr(amount) for name, amount in fields.items()})]
        return bool(int(await self._record_batch(keys=keys, args=args)))

    async def record_stream(
        self,
        version: str,
        *,
        ttft_s: float | None,
        tokens: int = 0,
        error_kind: str | None = None,
        pinned: bool = False,
    ) -> None:
        """One answered turn: its time to first token (None if none came), tokens, and error if any;
        `pinned` when the conversation's version was named by the client (counted apart). The
        gateway adds these to an OnlineBatches (online_batches.py) instead: one script a second."""
        await self._incr(version, stream_increments(ttft_s, tokens, error_kind), pinned=pinned)

    async def record_action(self, version: str, outcome: str, *, pinned: bool = False) -> None:
        """A final action outcome (succeeded, failed, dead_lettered); other statuses are ignored."""
        if outcome in ACTION_OUTCOMES:
            await self._incr(version, {f"action_{outcome}": 1}, pinned=pinned)

    async def record_feedback(
        self,
        version: str,
        *,
        conversation_id: str,
        message_id: str,
        rating: int,
        comment: str | None = None,
        pinned: bool = False,
    ) -> bool:
        """Count one rating (1-5); True when new, False when it replaced an earlier one for the message."""
        if isinstance(rating, bool) or not isinstance(rating, int) or not MIN_RATING <= rating <= MAX_RATING:
            raise InvalidFeedback("rating", f"must be an integer from {MIN_RATING} to {MAX_RATING}")
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise InvalidFeedback("comment", f"at most {MAX_COMMENT_CHARS} characters")
        now = int(time.time())
        entry = json.dumps(
            {
                "at": now,
                "conversation_id": conversation_id,
                "message_id": message_id,
                "rating": rating,
                "comment": comment,
                **({"pinned": True} if pinned else {}),
            }
        )
        created = await self._feedback(
            keys=[
                version_key(version),
                versions_key(),
                feedback_key(version),
                feedback_seen_key(conversation_id, message_id),
            ],
            args=[
                version,
                now,
                RETENTION_S,
                self._max_versions,
                rating,
                entry,
                FEEDBACK_SAMPLES,
                FEEDBACK_DEDUP_S,
                PINNED if pinned else "",
            ],
        )
        return bool(int(created))

    async def get(self, version: str) -> VersionMetrics:
        raw = await self._redis.hgetall(version_key(version))
        counters = {}
        for name, value in raw.items():
            name = name.decode() if isinstance(name, bytes) else name
            if name not in ("first_seen", "last_seen"):
                counters[name] = float(value)
        return VersionMetrics(version, counters)

    async def many(self, versions: list[str]) -> list[VersionMetrics]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for version in versions:
                pipe.hgetall(version_key(version))
            raws = await pipe.execute()
        return [
            VersionMetrics(
                version,
                {
                    (k.decode() if isinstance(k, bytes) else k): float(v)
                    for k, v in raw.items()
                    if (k.decode() if isinstance(k, bytes) else k) not in ("first_seen", "last_seen")
                },
            )
            for version, raw in zip(versions, raws, strict=False)
        ]

    async def versions(self) -> list[str]:
        """Versions with metrics, most recently written first."""
        members = await self._redis.zrevrange(versions_key(), 0, -1)  # without scores: plain members
        return [v.decode() if isinstance(v, bytes) else str(v) for v in members]

    async def recent_feedback(self, version: str, limit: int = 20) -> list[dict[str, Any]]:
        return [
            json.loads(raw) for raw in await self._redis.lrange(feedback_key(version), 0, max(0, limit - 1))
        ]
