"""The per-conversation event log on a Redis stream: every producer appends, every client reads.

Entry ids are `0-<n>` with n from the conversation's atomic counter, so event ids are integers,
unique and strictly increasing per conversation however many events land in one millisecond
and whichever pod writes them. The payload is stored without its id; readers put the id in, so
a client on any pod sees the same bytes. Trimmed to a max length and expired after a TTL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from agent_contracts.events import MessageEndEvent
from streaming_gateway import rkeys

# KEYS: conversation hash, log stream. ARGV: maxlen, ttl, then (type, payload, finish) triples.
# Returns the last id appended, or 0 when the conversation no longer exists.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = 0
for i = 3, #ARGV, 3 do
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq,
             't', ARGV[i], 'e', ARGV[i + 1], 'f', ARGV[i + 2])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return seq
"""

#: What a producer hands to `append`: any agent_contracts event, its `id` ignored.
Event = Any


class ConversationGone(Exception):
    """The conversation was deleted (or expired) while something still wrote to its log."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} no longer exists")
        self.conversation_id = conversation_id


@dataclass(frozen=True)
class LogEntry:
    id: int
    type: str
    data: str  # the event's JSON, id included
    finish: str = ""

    @property
    def ends_answer(self) -> bool:
        """A message_end after which nothing more comes for this turn (not a tool-call pause)."""
        return self.type == "message_end" and self.finish != "tool_calls"


def _payload(event: Event) -> str:
    return event.model_dump_json(exclude={"id"}, exclude_none=True)


class StreamLog:
    def __init__(self, redis: aioredis.Redis, *, maxlen: int, ttl_s: int) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._append = redis.register_script(_APPEND)

    async def append(self, conversation_id: str, *events: Event) -> int:
        """Append events in order, atomically; returns the id of the last one."""
        args: list[Any] = [self._maxlen, self._ttl_s]
        for event in events:
            finish = event.finish_reason if isinstance(event, MessageEndEvent) else ""
            args += [event.type, _payload(event), finish]
        last = int(await self._append(keys=[rkeys.conversation(conversation_id), rkeys.event_log(conversation_id)],
                                      args=args))
        if last == 0:
            raise ConversationGone(conversation_id)
        return last

    async def last_id(self, conversation_id: str) -> int:
        return int(await self._redis.hget(rkeys.conversation(conversation_id), "seq") or 0)

    async def read(self, conversation_id: str, after: int, *, count: int = 100, block_ms: int | None = None) -> list[LogEntry]:
        """Entries with id > after, oldest first; waits up to block_ms for the first when given."""
        answer = await self._redis.xread({rkeys.event_log(conversation_id): f"0-{after}"}, count=count, block=block_ms)
        entries: list[LogEntry] = []
        for _key, items in answer or []:
            for entry_id, fields in items:
                n = int(entry_id.split("-", 1)[1])
                payload = fields["e"]
                entries.append(LogEntry(n, fields["t"], f'{{"id":{n},{payload[1:]}' if payload != "{}" else f'{{"id":{n}}}',
                                        fields.get("f", "")))
        return entries

    # Watchers: who follows this conversation's log right now (any pod). Producers stop an answer
    # nobody follows any more.
    async def watch(self, conversation_id: str, reader_id: str, lease_s: float) -> None:
        key = rkeys.watchers(conversation_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {reader_id: time.time() + lease_s})
            pipe.expire(key, int(lease_s) + 60)
            await pipe.execute()

    async def unwatch(self, conversation_id: str, reader_id: str) -> None:
        await self._redis.zrem(rkeys.watchers(conversation_id), reader_id)

    async def watcher_count(self, conversation_id: str) -> int:
        return int(await self._redis.zcount(rkeys.watchers(conversation_id), time.time(), "+inf"))
