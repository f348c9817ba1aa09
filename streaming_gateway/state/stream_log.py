"""The per-conversation event log on a Redis stream: every producer appends, every client reads.

Entry ids are `0-<n>` with n from the conversation's counter (`seq`), so event ids are integers,
unique and strictly increasing per conversation however many events land in one millisecond
and whichever pod writes them. While a producing step owns the counter (LogWriter with `own`) it
gives the ids itself, and other writers' entries wait until it lets them go (_WRITE below).
The payload is stored without its id; readers put the id in, so a client on any pod sees the
same bytes. Trimmed to a max length and expired after a TTL.

A producer writes its tokens through a `LogWriter`: one append in flight at a time, and the
tokens that arrive meanwhile go together in the next one, so a fast model costs one round trip
per burst instead of one per token, and a slow one still gets each token written at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
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
from streaming_gateway.state.script_calls import ScriptCalls

log = logging.getLogger(__name__)

__all__ = [
    "Claim",
    "ConversationGone",
    "LogEntry",
    "LogWriter",
    "StreamLog",
    "Subscription",
    "TurnEnd",
]

# Every write to the log is this one script. KEYS: conversation hash, log stream, owner, deferred
# list[, messages, turn lock][, wake channel]. ARGV: 1 maxlen, 2 log ttl, 3 the writer's owner token
# ('' for a plain writer), 4 op ('' plain, 'claim', 'keep', 'release'), 5 the owner lease in ms,
# 6 the id of the first fixed triple, 7 how many triples have fixed ids, 8 the turn id this write
# ends ('' for none), 9 the answer's message JSON ('' for none), 10 the conversation ttl, 11 now,
# then (type, payload, finish) triples from 12: the fixed ones at first, first + 1, ... (ids their
# owner has assigned and may have shown), the others with ids from the conversation's counter.
# Returns {status, last id of these entries, the log's last id}: status 1 written, 2 a release that
# ran before (its reply lost), 0 no conversation (the lock is freed all the same), -1 the ids are
# not this writer's to give (another owner, or an id it fixed holds another entry), -2 deferred (a
# producer owns the ids: the entries wait in the deferred list until it lets them go).
_WRITE = """
local token, op = ARGV[3], ARGV[4]
local ends = ARGV[8] ~= ''
local wake = KEYS[ends and 7 or 5]
local function finish_turn()
  if ends and redis.call('GET', KEYS[6]) == ARGV[8] then redis.call('DEL', KEYS[6]) end
end
local function save_message()
  if ends and ARGV[9] ~= '' then
    redis.call('RPUSH', KEYS[5], ARGV[9])
    redis.call('HSET', KEYS[1], 'updated_at', ARGV[11])
    redis.call('EXPIRE', KEYS[1], ARGV[10])
    redis.call('EXPIRE', KEYS[5], ARGV[10])
  end
end
local owner = redis.call('GET', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if owner and owner == token then redis.call('DEL', KEYS[3]) end
  finish_turn()
  return {0, 0, 0}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local top = seq
if owner and owner ~= token then
  if token ~= '' then return {-1, 0, seq} end
  for i = 12, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
  redis.call('EXPIRE', KEYS[4], ARGV[2])
  save_message()
  finish_turn()
  return {-2, 0, seq}
end
if op == 'release' and redis.call('HGET', KEYS[1], 'released') == token then return {2, seq, seq} end
local function add(id, t, e, f)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. id, 't', t, 'e', e, 'f', f)
end
local first, fixed = tonumber(ARGV[6]), tonumber(ARGV[7])
if fixed > 0 and first > seq + 1 then return {-1, 0, seq} end
for k = 0, fixed - 1 do
  local id, i = first + k, 12 + 3 * k
  if id <= seq then
    local found = redis.call('XRANGE', KEYS[2], '0-' .. id, '0-' .. id)[1]
    if not found or found[2][2] ~= ARGV[i] or found[2][4] ~= ARGV[i + 1] then return {-1, 0, seq} end
  else
    add(id, ARGV[i], ARGV[i + 1], ARGV[i + 2])
    seq = id
  end
end
local last = first + fixed - 1
if op ~= 'keep' then
  local items = redis.call('LRANGE', KEYS[4], 0, -1)
  if #items > 0 then redis.call('DEL', KEYS[4]) end
  for i = 1, #items - 2, 3 do
    seq = seq + 1
    add(seq, items[i], items[i + 1], items[i + 2])
  end
end
for i = 12 + 3 * fixed, #ARGV, 3 do
  seq = seq + 1
  add(seq, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  last = seq
end
if op == 'claim' or op == 'keep' then
  redis.call('SET', KEYS[3], token, 'PX', ARGV[5])
  if op == 'claim' then redis.call('HSET', KEYS[1], 'owner', token) end
elseif op == 'release' then
  if owner then redis.call('DEL', KEYS[3]) end
  redis.call('HSET', KEYS[1], 'released', token)
  redis.call('HDEL', KEYS[1], 'owner')
end
if seq ~= top then
  redis.call('HSET', KEYS[1], 'seq', seq)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  if wake then redis.pcall('SPUBLISH', wake, seq) end
end
save_message()
finish_turn()
return {1, last, seq}
"""

#: How long a producer's claim on the ids lasts without a write; each of its writes renews it.
OWNER_LEASE_S = 30.0
#: A producer shows entries before they are persisted only this long after its last write was
#: sent: well inside the lease, so no other writer can have taken an id it shows.
SHOW_EARLY_S = OWNER_LEASE_S / 2


def step_token(turn_id: str, step_id: str) -> str:
    """The owner token of a turn's continuation step: unique per step (a release is recognised by
    it) and naming its turn, so a cancel on any pod can tell that turn's model is running (the first
    step's token is the turn id itself: its begin_turn took the ids)."""
    return f"{turn_id}/{step_id}"


def owned_by_turn(owner: str | None, turn_id: str) -> bool:
    """Whether the log's owner (the owner key's value) is a step of `turn_id`."""
    return owner is not None and (owner == turn_id or owner.startswith(f"{turn_id}/"))


def _conflict(conversation_id: str) -> RedisError:
    """A producer's ids were not its own any more (its lease lapsed and another writer appended, or
    Redis lost acknowledged writes): entries it showed may not be in the log under those ids."""
    return RedisError(f"log ids of {conversation_id} shown early were taken by another writer")


#: (type, payload, finish) of one event as stored.
Triple = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Claim:
    """The log's ids taken for a producer by another script than _WRITE (a turn's `begin_turn`,
    state/conversation_store.py), exactly as _WRITE's `claim` takes them: its owner token, the log's
    last id then, and when that script was sent (monotonic: the show window starts there)."""

    token: str
    top: int
    sent: float


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


def triple(event: Event) -> Triple:
    """An event as the log stores it: type, payload without the id, finish reason."""
    finish = event.finish_reason if isinstance(event, MessageEndEvent) else ""
    return (event.type, _payload(event), finish)


def entries_of(first: int, triples: Sequence[Triple]) -> list[LogEntry]:
    """Stored triples as the entries a reader of the log gets, from id `first` on."""
    return [
        entry_from_fields(f"0-{first + i}", {"t": kind, "e": payload, "f": finish})
        for i, (kind, payload, finish) in enumerate(triples)
    ]


@dataclass(frozen=True, slots=True)
class Written:
    """A write's answer (see _WRITE): status, the last id of its entries, the log's last id."""

    status: int
    last: int
    top: int


class StreamLog:
    def __init__(self, redis: Redis, *, maxlen: int, ttl_s: int, by_slot: bool = False) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        #: The token appends' script runs on a few connections held for it (script_calls).
        self._scripts = ScriptCalls(redis)
        self._write = self._scripts.script(_WRITE)
        #: This pod's followers of any conversation, fed by the appends made here and by one reader.
        self.hub = LogHub(redis, by_slot=by_slot)
        #: The pod's watcher and stream-slot leases, renewed together.
        self.leases = LeaseKeeper(redis, by_slot=by_slot)

    async def append(self, conversation_id: str, *events: Event, end: TurnEnd | None = None) -> int:
        """Append events in order, atomically; returns the id of the last one. With `end`, the same
        script saves the answer's message first and frees the turn's lock after (TurnEnd). While a
        producer owns the conversation's ids (LogWriter) the events wait and are appended when it
        lets them go (before its answer's end); then the log's last id now is returned."""
        return await self.append_stored(conversation_id, [triple(event) for event in events], end=end)

    async def append_stored(
        self, conversation_id: str, triples: Sequence[Triple], *, end: TurnEnd | None = None
    ) -> int:
        """`append` for events already in their stored form."""
        written = await self.write(conversation_id, triples, end=end)
        if written.status == -2:
            return written.top
        if self.hub.follows(conversation_id):
            # Persisted: the local followers get these entries now, with the ids the log gave them.
            self.hub.publish(conversation_id, entries_of(written.last - len(triples) + 1, triples))
        return written.last

    async def write(
        self,
        conversation_id: str,
        triples: Sequence[Triple],
        *,
        token: str = "",
        op: str = "",
        first: int = 0,
        fixed: int = 0,
        end: TurnEnd | None = None,
    ) -> Written:
        """One run of the write script (_WRITE). Raises ConversationGone when the conversation no
        longer exists; a Redis failure also makes the conversation's local followers re-read."""
        cid = conversation_id
        keys = [
            redis_keys.conversation(cid),
            redis_keys.event_log(cid),
            redis_keys.log_owner(cid),
            redis_keys.log_deferred(cid),
        ]
        ends: list[Any] = ["", "", 0, ""]
        if end is not None:
            keys += [redis_keys.messages(cid), redis_keys.busy(cid)]
            ends = [end.turn_id, end.message, end.conversation_ttl_s, end.now]
        wake = self.hub.wake_channel(cid)
        keys += [wake] if wake is not None else []
        lease_ms = int(OWNER_LEASE_S * 1000)
        args: list[Any] = [self._maxlen, self._ttl_s, token, op, lease_ms, first, fixed, *ends]
        for stored in triples:
            args += stored
        try:
            status, last, top = (int(n) for n in await self._write(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            # Its local followers read the log themselves: they end (resumably) if Redis is down.
            self.hub.fail(cid, exc)
            raise
        if status == 0:
            raise ConversationGone(cid)
        return Written(status, last, top)

    def writer(
        self,
        conversation_id: str,
        *,
        max_batch: int,
        own: bool = False,
        claimed: Claim | None = None,
        token: str | None = None,
    ) -> LogWriter:
        """A coalescing writer for one producer of this conversation (see LogWriter); `own`: it
        claims the conversation's ids and hands entries to local followers before persisting them,
        with `token` as the owner (default: a random one; see `step_token`); `claimed`: it owns them
        already (its turn's begin_turn took them), no claim is sent."""
        return LogWriter(self, conversation_id, max_batch=max_batch, own=own, claimed=claimed, token=token)

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
        await self._scripts.close()

    # Watchers: who follows this conversation's log right now (any pod). Running answers stop one
    # nobody follows any more.
    async def watch(self, conversation_id: str, reader_id: str, lease_s: float) -> None:
        key = redis_keys.watchers(conversation_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {reader_id: time.time() + lease_s})
            pipe.expire(key, int(lease_s) + 60)
            await pipe.execute()

    async def watcher_count(self, conversation_id: str) -> int:
        return int(await self._redis.zcount(redis_keys.watchers(conversation_id), time.time(), "+inf"))


@dataclass(slots=True)
class _Out:
    """One event given to a writer, as stored; its id once assigned (0 before) and its entry once shown."""

    stored: Triple
    id: int = 0
    entry: LogEntry | None = None


#: Releases of writers whose producer ended without its last write (a reference keeps each alive).
_RELEASING: set[asyncio.Task[int]] = set()


def resumable_ahead(ids_ahead: bool, max_batch: int) -> int:
    """How far past the log's last id a client may resume: 0, or while a producer owns the ids
    (`ids_ahead`) twice its largest batch. An owning writer shows at most the one batch whose
    append is in flight before the log has it (a failed append ends its writing), so a cursor a
    client was shown is always within this; one further on was never shown to anyone."""
    return 2 * max_batch if ids_ahead else 0


class LogWriter:
    """One producer's events into one conversation's log, in order, with one append in flight.

    `write` hands the event over and returns: when no append is in flight one starts at once
    with it; otherwise it waits in the buffer and the next append carries everything buffered.
    The buffer is bounded: at `max_batch` events `write` waits until the append in flight is
    done and the buffer taken (backpressure on the model stream). A failed append is raised by
    the next `write` or `flush`; the events given after it are dropped with it, never written
    out of order. The appends run in their own task: a cancel of the producer never cuts one.

    An owning writer (`own`, the engine's: its producer holds the turn lock) first claims the
    conversation's ids (one script, sent at once, while the model request goes out), unless they
    were `claimed` for it already (a turn's first step: its begin_turn took them, with the turn id
    as the token, so the step sends no claim of its own). From then on
    it gives each batch its ids itself and hands it to this pod's followers as its append is sent,
    not when it returns: the first token of a burst reaches them at once, and the ones arriving
    meanwhile go with the next append, in one hand-off, as before. Other writers' entries wait in
    the conversation's deferred list meanwhile (_WRITE), and `end`, the producer's last write,
    appends them before its own last events and lets the ids go.
    Its appends carry the ids it gave; one whose reply was lost is sent again by `end` and the
    script recognises what is already there, so every entry shown ends up in the log under the id
    shown. Entries are shown early only within SHOW_EARLY_S of the last write sent, well inside the
    claim's lease; otherwise (a silent model, a claim refused) they are shown once persisted.
    """

    def __init__(
        self,
        log_: StreamLog,
        conversation_id: str,
        *,
        max_batch: int,
        own: bool = False,
        claimed: Claim | None = None,
        token: str | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._log = log_
        self._cid = conversation_id
        self._max_batch = max_batch
        self._buffer: list[_Out] = []
        self._pump: asyncio.Task[None] | None = None
        self._taken = asyncio.Event()
        self._failure: BaseException | None = None
        #: The size of each append this writer made, in order (for tests and diagnostics).
        self.batches: list[int] = []
        #: Entries handed to this pod's followers before their append returned (tests, diagnostics).
        self.shown_early = 0
        self._token = (token or uuid.uuid4().hex) if own else ""
        #: True while this writer owns the conversation's ids (claimed, not yet released).
        self._owned = False
        self._claim: asyncio.Task[None] | None = None
        self._next = 0
        #: Until when (monotonic) entries may be shown before they are persisted.
        self._show_until = 0.0
        if claimed is not None:
            self._token = claimed.token
            self._took(claimed.top, claimed.sent)
        elif own:
            self._claim = asyncio.create_task(self._take_ids(), name=f"log-claim:{conversation_id}")
        #: Entries with their ids given (maybe shown) that no append has confirmed yet.
        self._unconfirmed: list[_Out] = []

    async def _take_ids(self) -> None:
        sent = time.monotonic()
        try:
            written = await self._log.write(self._cid, [], token=self._token, op="claim")
        except (RedisError, OSError, ConversationGone) as exc:
            # The appends will meet the same; this writer writes as a plain one.
            log.debug("claim of %s's ids failed: %s", self._cid, exc)
            return
        if written.status != 1:
            log.info("%s's ids are another producer's: this answer's entries wait for its end", self._cid)
            return
        self._took(written.top, sent)

    def _took(self, top: int, sent: float) -> None:
        """The ids are this writer's: the next follows `top`, the log's last; the claim was sent at `sent`."""
        self._owned = True
        self._next = top + 1
        self._show_until = sent + SHOW_EARLY_S

    async def write(self, event: Event) -> None:
        """Queue one event; starts an append when none is in flight. Raises an earlier append's failure."""
        self._raise_failure()
        self._buffer.append(_Out(triple(event)))
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

    def _assign(self, outs: list[_Out]) -> None:
        """Give these entries their ids and show them to this pod's followers now."""
        for out in outs:
            out.id = self._next
            self._next += 1
        self._unconfirmed += outs
        self.shown_early += len(outs)
        hub = self._log.hub
        if hub.follows(self._cid):
            for out in outs:
                out.entry = entries_of(out.id, [out.stored])[0]
            hub.publish(self._cid, [out.entry for out in outs if out.entry is not None])

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

    async def end(self, *events: Event, end: TurnEnd | None = None) -> int:
        """The producer's last write, after its appends have settled: the entries it showed whose
        append failed or went unanswered (again: the script keeps what is there already), the
        entries other writers deferred meanwhile, then `events`, and with `end` the turn's end
        (TurnEnd); the ids are let go. Returns the last id. Raises what the write raises: calling
        it again with the same events is safe (a release that ran is recognised). Without owned
        ids it is a plain `append`."""
        while self._pump is not None:
            await asyncio.wait({self._pump})
        if self._claim is not None and not self._claim.done():
            await asyncio.wait({self._claim})
        triples = [triple(event) for event in events]
        if not self._owned:
            return await self._log.append_stored(self._cid, triples, end=end)
        fixed = list(self._unconfirmed)
        written = await self._log.write(
            self._cid,
            [out.stored for out in fixed] + triples,
            token=self._token,
            op="release",
            first=fixed[0].id if fixed else 0,
            fixed=len(fixed),
            end=end,
        )
        self._owned = False
        self._unconfirmed = []
        if written.status == -1:
            if fixed:
                self._conflict(len(fixed))
            return await self._log.append_stored(self._cid, triples, end=end)
        if written.status == 2:
            return written.top  # an earlier try ran; its entries reach followers from the log
        hub = self._log.hub
        if hub.follows(self._cid):
            if fixed:
                hub.publish(self._cid, entries_of(fixed[0].id, [out.stored for out in fixed]))
            hub.publish(self._cid, entries_of(written.last - len(triples) + 1, triples))
        return written.last

    def discard(self) -> None:
        """The producer ended without `end` (its conversation gone, an unexpected error): let the
        ids go in the background, so other writers' entries are not held until the lease lapses."""
        if not self._owned and (self._claim is None or self._claim.done()):
            return
        task = asyncio.create_task(self._release_quietly(), name=f"log-release:{self._cid}")
        _RELEASING.add(task)
        task.add_done_callback(_RELEASING.discard)

    async def _release_quietly(self) -> int:
        try:
            return await self.end()
        except (RedisError, OSError, ConversationGone) as exc:
            log.debug("release of %s's ids failed (its lease lapses): %s", self._cid, exc)
            return 0

    @property
    def buffered(self) -> int:
        """Events given but not yet sent (the append in flight not counted)."""
        return len(self._buffer)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _conflict(self, shown: int) -> None:
        """Entries were shown under ids the log does not hold for them: the followers re-read it."""
        log.error("%s: %d entries shown early lost their ids to another writer", self._cid, shown)
        self._owned = False
        self._log.hub.fail(self._cid, _conflict(self._cid))

    async def _run(self) -> None:
        try:
            if self._claim is not None and not self._claim.done():
                await asyncio.wait({self._claim})
            while self._buffer:
                batch, self._buffer = self._buffer, []
                self._taken.set()
                if self._owned:
                    await self._send(batch)
                else:
                    await self._log.append_stored(self._cid, [out.stored for out in batch])
                self.batches.append(len(batch))
        except BaseException as exc:  # kept for the producer: its next write or flush raises it
            self._failure = exc
            self._buffer.clear()
            self._show_until = 0.0
            if not isinstance(exc, Exception):
                raise
        finally:
            self._pump = None
            self._taken.set()

    async def _send(self, batch: list[_Out]) -> None:
        """One append of an owning writer. Within the show window the batch gets its ids here and
        goes to this pod's followers as the append is sent, in one hand-off (one client write per
        batch, as when it was handed over after the append); otherwise its entries take their ids
        from the counter and are shown once persisted."""
        sent = time.monotonic()
        fresh = batch
        if sent < self._show_until:
            self._assign(batch)
            fresh = []
        fixed = len(batch) - len(fresh)
        written = await self._log.write(
            self._cid,
            [out.stored for out in batch],
            token=self._token,
            op="keep",
            first=batch[0].id if fixed else 0,
            fixed=fixed,
        )
        if written.status == -1:
            if fixed:
                self._conflict(fixed)
                raise _conflict(self._cid)
            self._owned = False  # nothing of it was shown: written as a plain writer's
            await self._log.append_stored(self._cid, [out.stored for out in batch])
            return
        self._show_until = sent + SHOW_EARLY_S
        if fresh:
            first = written.last - len(fresh) + 1
            for i, out in enumerate(fresh):
                out.id = first + i
            self._next = written.last + 1
        confirmed = batch[-1].id
        self._unconfirmed = [out for out in self._unconfirmed if out.id > confirmed]
        hub = self._log.hub
        if hub.follows(self._cid):
            # Followers that missed the early hand-off (a slow client re-reading the log, a gap)
            # get the persisted entries now; the others have them already (log_hub skips them).
            hub.publish(
                self._cid,
                [out.entry or entries_of(out.id, [out.stored])[0] for out in batch],
            )
