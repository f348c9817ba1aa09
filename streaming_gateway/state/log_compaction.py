"""Compaction of a conversation's stream log once its answers have ended.

An answer of n tokens leaves n token entries in the log (kept GATEWAY_EVENT_LOG_TTL_SECONDS for
resume), each a full stream entry: about 270 bytes per token in Redis. Once an answer has ended,
every run of consecutive token entries of one message is replaced by one token entry carrying the
run's whole text, at the id of the run's last token. Every other entry keeps its id and bytes, so
ids stay unique and increasing and the order of events is unchanged.

What a reader gets stays exactly once and in order whatever its position:

- a reader whose last id is before the run gets the merged entry: the whole text, once;
- a reader whose last id is inside the run (it saw some of those tokens, as separate events) gets
  the merged entry cut to the text after its last id (`resume_view`): the merged entry keeps
  where each replaced token ended (field `c`: the run's first id and each token's end, in bytes of
  UTF-8 text);
- a reader at or after the run's last id never sees it.

Clients see a token event whose text may be several tokens long: nothing new to handle (the SSE,
WebSocket, OpenAI-compatible and web clients all append a token's text).

The rewrite is one Lua script on the conversation's hash slot: it reads the log after the last
compacted id (the conversation's `cmp` field) up to its end, checks every entry it would merge,
and only then writes: the entries from the first merged token on are deleted, the stream's last
id is set back (XSETID) and they are added again, merged, with their ids. A script that stops
before its writes (a token entry not as this gateway writes them, Redis out of memory at the first
write) leaves the log as it was; once writing, Redis runs it to the end, and replicas and the AOF
get its effects in one transaction.

Compaction runs a while after the end (GATEWAY_LOG_COMPACT_DELAY_SECONDS), from a timer on the pod
that produced the answer: a client reading the answer live, or resuming soon after a drop, gets it
token by token as it was streamed. A pod that stops before its timers fire leaves those logs
whole (they expire with their TTL); the next answer's compaction in the conversation covers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from streaming_gateway.state import redis_keys
from streaming_gateway.state.log_hub import LogEntry
from streaming_gateway.state.redis_replies import Redis

log = logging.getLogger(__name__)

#: Entries after the last compacted id one compaction may read and rewrite; beyond this the log is
#: left whole (the script's time is bounded: Redis runs nothing else meanwhile).
MAX_REWRITE = 20_000

# KEYS: conversation hash, log stream. ARGV: max entries to rewrite.
# Returns {status, entries replaced, runs merged}: status 1 done, 0 nothing to do, -1 no
# conversation, -2 too many entries (the mark moves past them), -3 XSETID refused (nothing written).
# Every check comes before the first write.
_COMPACT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0} end
local mark = tonumber(redis.call('HGET', KEYS[1], 'cmp') or '0')
local limit = tonumber(ARGV[1])
local items = redis.call('XRANGE', KEYS[2], '0-' .. (mark + 1), '+', 'COUNT', limit + 1)
if #items == 0 then return {0, 0, 0} end
local function field(fields, name)
  for j = 1, #fields, 2 do if fields[j] == name then return fields[j + 1] end end
  return nil
end
local function seq(id) return tonumber(string.match(id, '^0%-(%d+)$')) end
if #items > limit then
  redis.call('HSET', KEYS[1], 'cmp', seq(items[#items][1]))
  return {-2, 0, 0}
end
-- Only what precedes the last end of an answer (not a tool-call pause) is finished.
local stop = 0
for i = #items, 1, -1 do
  local fields = items[i][2]
  if field(fields, 't') == 'message_end' and field(fields, 'f') ~= 'tool_calls' then stop = i break end
end
if stop == 0 then return {0, 0, 0} end
local token_keys = {conversation_id = true, message_id = true, type = true, text = true}
local function token(i)
  local fields = items[i][2]
  if field(fields, 't') ~= 'token' or field(fields, 'c') then return nil end
  local event = cjson.decode(field(fields, 'e'))  -- raises on an entry not written by the gateway
  for k, v in pairs(event) do
    if not token_keys[k] or type(v) ~= 'string' then error('unexpected token entry ' .. items[i][1]) end
  end
  if event.type ~= 'token' or not event.text then error('unexpected token entry ' .. items[i][1]) end
  return event
end
local runs, run = {}, nil
for i = 1, stop - 1 do
  local event = token(i)
  local id = seq(items[i][1])
  if event and run and run.mid == (event.message_id or '') and id == run.last + 1 then
    run.to, run.last = i, id
    run.texts[#run.texts + 1] = event.text
  else
    if run and run.to > run.from then runs[#runs + 1] = run end
    run = nil
    if event then
      run = {from = i, to = i, first = id, last = id, mid = event.message_id or '',
             cid = event.conversation_id, texts = {event.text}}
    end
  end
end
if run and run.to > run.from then runs[#runs + 1] = run end
local done = seq(items[stop][1])
if #runs == 0 then
  redis.call('HSET', KEYS[1], 'cmp', done)
  return {0, 0, 0}
end
-- The stream's last id goes back below the first merged token, so the entries can be added again.
-- Redis 7 needs MAXDELETEDID to go below a deleted id; Redis 6 has no such option nor check.
local top = items[#items][1]
local modern = redis.pcall('XSETID', KEYS[2], top, 'MAXDELETEDID', '0-0')
if type(modern) == 'table' and modern.err then
  local plain = redis.pcall('XSETID', KEYS[2], top)
  if type(plain) == 'table' and plain.err then return {-3, 0, 0} end
  modern = false
end
local first = runs[1].from
local ids = {}
for i = first, #items do
  ids[#ids + 1] = items[i][1]
  if #ids == 500 then redis.call('XDEL', KEYS[2], unpack(ids)) ids = {} end
end
if #ids > 0 then redis.call('XDEL', KEYS[2], unpack(ids)) end
local back = '0-' .. (seq(items[first][1]) - 1)
if modern then redis.call('XSETID', KEYS[2], back, 'MAXDELETEDID', '0-0')
else redis.call('XSETID', KEYS[2], back) end
local r, i = 1, first
while i <= #items do
  local current = runs[r]
  if current and i == current.from then
    local ends, total = {}, 0
    for k = 1, #current.texts do
      total = total + #current.texts[k]
      ends[k] = total
    end
    local payload = '{"conversation_id":' .. cjson.encode(current.cid)
    if current.mid ~= '' then payload = payload .. ',"message_id":' .. cjson.encode(current.mid) end
    payload = payload .. ',"type":"token","text":' .. cjson.encode(table.concat(current.texts)) .. '}'
    redis.call('XADD', KEYS[2], '0-' .. current.last, 't', 'token', 'e', payload, 'f', '',
               'c', current.first .. ':' .. table.concat(ends, ','))
    i = current.to + 1
    r = r + 1
  else
    redis.call('XADD', KEYS[2], items[i][1], unpack(items[i][2]))
    i = i + 1
  end
end
redis.call('HSET', KEYS[1], 'cmp', done)
-- A stream's newest node is allocated at 4 KB whatever it holds; a stream restored from its dump
-- has every node at its size (about 2 KB for an answer instead of 4.8). Where DUMP or RESTORE is
-- not allowed the log stays compacted at the larger size (RESTORE replaces only what it loaded).
local ttl = redis.call('PTTL', KEYS[2])
local dump = redis.pcall('DUMP', KEYS[2])
if type(dump) == 'string' then redis.pcall('RESTORE', KEYS[2], ttl > 0 and ttl or 0, dump, 'REPLACE') end
return {1, #items - first + 1, #runs}
"""


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one compaction did: `status` as the script returns it, entries rewritten, runs merged."""

    status: int
    rewritten: int
    merged: int


def first_id(entry: LogEntry) -> int:
    """The first event id an entry stands for: a merged entry's run starts before its own id."""
    if not entry.spans:
        return entry.id
    return int(entry.spans.split(":", 1)[0])


def resume_view(entry: LogEntry, after: int) -> LogEntry:
    """The entry as a reader whose last id is `after` must get it: a merged entry whose run began
    at or before `after` carries only the text of the tokens after it."""
    if not entry.spans:
        return entry
    head, _, tail = entry.spans.partition(":")
    start = int(head)
    if after < start:
        return entry
    ends = [int(end) for end in tail.split(",")]
    cut = ends[after - start]
    event = json.loads(entry.data)
    event["text"] = event["text"].encode()[cut:].decode()
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return LogEntry(entry.id, entry.type, data, entry.finish)


class LogCompactor:
    """Compacts conversations' logs: at once (`compact`) or a while after an answer's end (`schedule`)."""

    def __init__(self, redis: Redis, *, delay_s: float, enabled: bool = True) -> None:
        self._redis = redis
        self._script = redis.register_script(_COMPACT)
        self._delay_s = delay_s
        self._enabled = enabled
        #: One timer per conversation: an end while one waits is covered by its run. Timers, not
        #: sleeping tasks: thousands of answers ending within the delay cost a heap entry each.
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def compact(self, conversation_id: str) -> Compaction:
        """Merge the token runs of the conversation's ended answers not compacted yet."""
        status, rewritten, merged = await self._script(
            keys=[redis_keys.conversation(conversation_id), redis_keys.event_log(conversation_id)],
            args=[MAX_REWRITE],
        )
        result = Compaction(int(status), int(rewritten), int(merged))
        if result.status == -2:
            log.warning("log of %s has over %d entries to compact: left whole", conversation_id, MAX_REWRITE)
        elif result.status == -3:
            log.warning("log of %s not compacted: this Redis refuses XSETID", conversation_id)
        return result

    def schedule(self, conversation_id: str) -> None:
        """An answer of this conversation ended: compact its log after the delay."""
        if not self._enabled or conversation_id in self._pending:
            return
        self._pending[conversation_id] = asyncio.get_running_loop().call_later(
            self._delay_s, self._due, conversation_id
        )

    @property
    def pending(self) -> int:
        """Compactions waiting for their time or running."""
        return len(self._pending) + len(self._running)

    def _due(self, conversation_id: str) -> None:
        # From here a new end schedules another run: this one may read the log before it.
        del self._pending[conversation_id]
        task = asyncio.create_task(self._run(conversation_id), name=f"compact:{conversation_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, conversation_id: str) -> None:
        try:
            await self.compact(conversation_id)
        except (RedisError, OSError) as exc:
            # The log stays whole (the script writes all or nothing); the next end tries again.
            log.warning("log of %s not compacted: %s", conversation_id, exc)

    async def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError):
                await task
