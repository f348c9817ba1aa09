"""The per-conversation event log on a Redis stream: every producer appends, every client reads.

Entry ids are `0-<n>` with n from the conversation's atomic counter, so event ids are integers,
unique and strictly increasing per conversation however many events land in one millisecond
and whichever pod writes them. The payload is stored without its id; readers put the id in, so
a client on any pod sees the same bytes. Trimmed to a max length and expired after a TTL.

A producer writes its tokens through a `LogWriter`: one append in flight at a time, and the
tokens that arrive meanwhile go together in the next one, so a fast model costs one round trip
per burst instead of one per token, and a slow one still gets each token written at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from agent_contracts.events import (
    ActionStatusEvent,
    ErrorEvent,
    MessageEndEvent,
    TokenEvent,
    ToolCallEvent,
)
from streaming_gateway.errors import ConversationGone
from streaming_gateway.state import redis_keys
from streaming_gateway.state.leases import LeaseKeeper
from streaming_gateway.state.log_hub import LogEntry, LogHub, Subscription, entry_from_fields
from streaming_gateway.state.redis_replies import Redis, stream_reply

__all__ = ["ConversationGone", "LogEntry", "LogWriter", "StreamLog", "Subscription", "TurnEnd"]

# Appends the (type, payload, finish) triples from ARGV[FIRST] on, with ids from the conversation's
# counter; `seq` is the id of the last one.
_XADD_EVENTS = """
local last = redis.call('HINCRBY', KEYS[1], 'seq', (#ARGV - FIRST + 1) / 3)
local seq = last - (#ARGV - FIRST + 1) / 3
for i = FIRST, #ARGV, 3 do
  seq = seq + 1
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq,
             't', ARGV[i], 'e', ARGV[i + 1], 'f', ARGV[i + 2])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
"""

# On a cluster the last key is the log's wake channel (log_wakes): the new last id is published on
# it for the pods that follow the conversation. WAKE is that key's index. A pcall: a Redis without
# SPUBLISH (before 7.0) refuses it and the append goes on.
_PUBLISH_WAKE = """
if KEYS[WAKE] then redis.pcall('SPUBLISH', KEYS[WAKE], seq) end
"""

# KEYS: conversation hash, log stream[, wake channel]. ARGV: maxlen, ttl, then (type, payload,
# finish) triples. Returns the last id appended, or 0 when the conversation no longer exists.
_APPEND = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
"""
    + _XADD_EVENTS.replace("FIRST", "3")
    + _PUBLISH_WAKE.replace("WAKE", "3")
    + """
return seq
"""
)

# The last append of a turn, in one round trip: the answer's message saved, the events appended,
# the turn lock freed. KEYS: conversation hash, log stream, messages, turn lock[, wake channel].
# ARGV: maxlen, log ttl, message JSON ('' for none), conversation ttl, now, turn id, then the
# triples. Returns the last id, or 0 when the conversation no longer exists (its lock is freed all
# the same).
_END_TURN = (
    """
local function release()
  if redis.call('GET', KEYS[4]) == ARGV[6] then redis.call('DEL', KEYS[4]) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then release() return 0 end
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[3])
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
"""
    + _XADD_EVENTS.replace("FIRST", "7")
    + _PUBLISH_WAKE.replace("WAKE", "5")
    + """
release()
return seq
"""
)


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """What the last append of a turn does besides: save the answer's message (JSON, '' for none;
    with the conversation's TTL and `now` as its update time) and free the turn's lock if the turn
    still holds it."""

    turn_id: str
    message: str
    conversation_ttl_s: int
    now: str


#: What a producer hands to `append`: any agent_contracts event, its `id` ignored.
Event = TokenEvent | ToolCallEvent | ActionStatusEvent | MessageEndEvent | ErrorEvent


def _payload(event: Event) -> str:
    return event.model_dump_json(exclude={"id"}, exclude_none=True)


class StreamLog:
    def __init__(self, redis: Redis, *, maxlen: int, ttl_s: int, by_slot: bool = False) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._append = redis.register_script(_APPEND)
        self._end_turn = redis.register_script(_END_TURN)
        #: This pod's followers of any conversation, fed by the appends made here and by one reader.
        self.hub = LogHub(redis, by_slot=by_slot)
        #: The pod's watcher and stream-slot leases, renewed together.
        self.leases = LeaseKeeper(redis, by_slot=by_slot)

    async def append(self, conversation_id: str, *events: Event, end: TurnEnd | None = None) -> int:
        """Append events in order, atomically; returns the id of the last one. With `end`, the same
        script saves the answer's message first and frees the turn's lock after (TurnEnd)."""
        triples: list[Any] = []
        for event in events:
            finish = event.finish_reason if isinstance(event, MessageEndEvent) else ""
            triples += [event.type, _payload(event), finish]
        keys = [redis_keys.conversation(conversation_id), redis_keys.event_log(conversation_id)]
        wake = self.hub.wake_channel(conversation_id)
        try:
            if end is None:
                keys += [wake] if wake is not None else []
                answer = await self._append(keys=keys, args=[self._maxlen, self._ttl_s, *triples])
            else:
                keys += [redis_keys.messages(conversation_id), redis_keys.busy(conversation_id)]
                keys += [wake] if wake is not None else []
                ends: list[Any] = [end.message, end.conversation_ttl_s, end.now, end.turn_id]
                answer = await self._end_turn(keys=keys, args=[self._maxlen, self._ttl_s, *ends, *triples])
            last = int(answer)
        except (RedisError, OSError) as exc:
            # Its local followers read the log themselves: they end (resumably) if Redis is down.
            self.hub.fail(conversation_id, exc)
            raise
        if last == 0:
            raise ConversationGone(conversation_id)
        if self.hub.follows(conversation_id):
            # Persisted: the local followers get these entries now, with the ids the log gave them.
            first = last - len(events) + 1
            self.hub.publish(
                conversation_id,
                [
                    entry_from_fields(f"0-{first + i}", {"t": kind, "e": payload, "f": finish})
                    for i, (kind, payload, finish) in enumerate(zip(*[iter(triples)] * 3, strict=True))
                ],
            )
        return last

    def writer(self, conversation_id: str, *, max_batch: int) -> LogWriter:
        """A coalescing writer for one producer of this conversation (see LogWriter)."""
        return LogWriter(self, conversation_id, max_batch=max_batch)

    async def last_id(self, conversation_id: str) -> int:
        return int(await self._redis.hget(redis_keys.conversation(conversation_id), "seq") or 0)

    async def read(
        self, conversation_id: str, after: int, *, count: int = 100, block_ms: int | None = None
    ) -> list[LogEntry]:
        """Entries with id > after, oldest first; waits up to block_ms for the first when given."""
        answer: Any = await self._redis.xread(
            {redis_keys.event_log(conversation_id): f"0-{after}"}, count=count, block=block_ms
        )
        return [
            entry_from_fields(entry_id, fields)
            for _key, items in stream_reply(answer)
            for entry_id, fields in items
        ]

    def subscribe(self, conversation_id: str, after: int) -> Subscription:
        """Entries of this conversation after `after` as they are appended on this pod or read by
        the pod's reader (see log_hub); `unsubscribe` when done."""
        return self.hub.subscribe(conversation_id, after)

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)

    async def close(self) -> None:
        await self.hub.close()
        await self.leases.close()

    # Watchers: who follows this conversation's log right now (any pod). Running answers stop one
    # nobody follows any more.
    async def watch(self, conversation_id: str, reader_id: str, lease_s: float) -> None:
        key = redis_keys.watchers(conversation_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {reader_id: time.time() + lease_s})
            pipe.expire(key, int(lease_s) + 60)
            await pipe.execute()

    async def unwatch(self, conversation_id: str, reader_id: str) -> None:
        await self._redis.zrem(redis_keys.watchers(conversation_id), reader_id)

    async def watcher_count(self, conversation_id: str) -> int:
        return int(await self._redis.zcount(redis_keys.watchers(conversation_id), time.time(), "+inf"))


class LogWriter:
    """One producer's events into one conversation's log, in order, with one append in flight.

    `write` hands the event over and returns: when no append is in flight one starts at once
    with it; otherwise it waits in the buffer and the next append carries everything buffered.
    The buffer is bounded: at `max_batch` events `write` waits until the append in flight is
    done and the buffer taken (backpressure on the model stream). A failed append is raised by
    the next `write` or `flush`; the events given after it are dropped with it, never written
    out of order. The appends run in their own task: a cancel of the producer never cuts one.
    """

    def __init__(self, log_: StreamLog, conversation_id: str, *, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._log = log_
        self._cid = conversation_id
        self._max_batch = max_batch
        self._buffer: list[Event] = []
        self._pump: asyncio.Task[None] | None = None
        self._taken = asyncio.Event()
        self._failure: BaseException | None = None
        #: The size of each append this writer made, in order (for tests and diagnostics).
        self.batches: list[int] = []

    async def write(self, event: Event) -> None:
        """Queue one event; starts an append when none is in flight. Raises an earlier append's failure."""
        self._raise_failure()
        self._buffer.append(event)
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name=f"log-writer:{self._cid}")
        # Yield once per event: a new append goes out now, before the producer reads on (the first
        # token never waits), and a producer with many chunks already received does not hold the
        # loop while it parses them all (other streams' first tokens would wait behind it).
        await asyncio.sleep(0)
        while len(self._buffer) >= self._max_batch and self._pump is not None:
            self._taken.clear()
            await self._taken.wait()
        self._raise_failure()

    async def flush(self) -> None:
        """Wait until every event written so far is in the log; raises what an append failed with.
        Cancelling the wait leaves the appends running."""
        while self._pump is not None:
            await asyncio.wait({self._pump})
        self._raise_failure()

    async def settle(self) -> BaseException | None:
        """Like flush, for a producer that is ending anyway: returns the failure instead of raising it."""
        while self._pump is not None:
            await asyncio.wait({self._pump})
        return self._failure

    @property
    def buffered(self) -> int:
        """Events given but not yet sent (the append in flight not counted)."""
        return len(self._buffer)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _run(self) -> None:
        try:
            while self._buffer:
                batch, self._buffer = self._buffer, []
                self._taken.set()
                await self._log.append(self._cid, *batch)
                self.batches.append(len(batch))
        except BaseException as exc:  # kept for the producer: its next write or flush raises it
            self._failure = exc
            self._buffer.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._pump = None
            self._taken.set()
