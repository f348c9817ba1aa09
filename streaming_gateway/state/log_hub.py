"""One log reader per pod: every local follower of a conversation is fed from here, not by its own
`XREAD BLOCK`.

Two sources feed the followers of this pod:

- **Local hand-off**: every append made on this pod (`StreamLog.append`) hands the entries it just
  persisted to the local followers of that conversation, with the ids the log gave them. No read
  of the log is needed for an answer produced here.
- **The pod's readers**: `XREAD BLOCK` over every conversation that local clients follow and no
  local producer is writing (a remote pod's answer, an action update, a cancel from elsewhere), its
  entries fanned out to the followers; one reader task and connection per SHARD_SIZE conversations,
  so re-issuing a read when the set changes stays cheap however many streams are open.

So an idle open stream costs no Redis connection and no Redis command of its own.

The log stays the single source of truth: a `Subscription` only buffers entries that continue its
follower's position. When the next buffered id is not the one after the follower's last (a gap:
two appends handed over out of order, a write the reader has not seen yet) or the buffer overflowed
(a slow client; it is bounded at one batch), the follower reads the log itself from its last id,
so every event is delivered exactly once and in order whichever way it arrived.

A follower waits on an asyncio event, never in a Redis read: cancelling it is immediate whatever
Redis does. When an append or the reader fails to reach Redis, the followers concerned are told to
read the log themselves: when Redis is down that read fails and they end as before (a resumable
close); when it was one bad connection (the first command after a Redis restart fails on a pooled
connection from before it) they carry on. The reader retries with backoff, at once when a follower
arrives (a client resuming after an outage is read for without waiting out the backoff).

On a Redis Cluster one command may name keys of one hash slot only, so no XREAD can span the
followed conversations; blocking per slot would cost a connection per followed slot. There the
readers are replaced by log_wakes.ClusterReader: every append also publishes its last id on the
conversation's sharded pub/sub channel, one subscriber connection per node listens to the channels
of the conversations followed here, and a wake makes a non-blocking read of just those logs (one
XREAD per slot, pipelined per node), with a slow safety poll for wakes lost. O(nodes) connections
per pod whatever it follows. Behind a cluster proxy (REDIS_MODE=proxy: one endpoint, cluster rules
on keys, sharded pub/sub not assumed) the XREAD BLOCK readers stay, one per followed hash slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_contracts.redis_connection import is_cluster
from streaming_gateway.state import redis_keys
from streaming_gateway.state.log_wakes import ClusterReader
from streaming_gateway.state.redis_replies import Redis
from streaming_gateway.state.task_stop import stop

log = logging.getLogger(__name__)

#: Entries per stream per read, and each follower's buffer: a slow client costs at most this many.
BATCH = 100
#: The reader's longest XREAD BLOCK; under the client's 5 s socket timeout.
READ_BLOCK_MS = 2000
#: Conversations per reader (one connection and one XREAD each).
SHARD_SIZE = 250
#: The wake stream: subscribing to a conversation the reader is not yet reading adds an entry here,
#: which ends the reader's blocked XREAD (it names this stream too) so the next one includes it.
WAKE_MAXLEN = 16
WAKE_TTL_S = 3600
#: The reader's wait after a failed read, doubling up to MAX_BACKOFF_S (a new follower cuts it short).
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event of a conversation's log: its id, type, JSON (id included) and finish reason; a
    merged token run's spans (state/log_compaction.py)."""

    id: int
    type: str
    data: str
    finish: str = ""
    spans: str = ""

    @property
    def ends_answer(self) -> bool:
        """A message_end after which nothing more comes for this turn (not a tool-call pause)."""
        return self.type == "message_end" and self.finish != "tool_calls"


def entry_from_fields(entry_id: str, fields: dict[str, str]) -> LogEntry:
    """A stream entry as stored by the append script: the id goes into the payload here."""
    n = int(entry_id.split("-", 1)[1])
    payload = fields["e"]
    data = f'{{"id":{n},{payload[1:]}' if payload != "{}" else f'{{"id":{n}}}'
    return LogEntry(n, fields["t"], data, fields.get("f", ""), fields.get("c", ""))


class Subscription:
    """One follower's inbox: the entries that continue its position, bounded; woken on arrival."""

    __slots__ = ("_entries", "conversation_id", "overflowed", "tail", "wake")

    def __init__(self, conversation_id: str, after: int) -> None:
        self.conversation_id = conversation_id
        #: The highest id buffered or known consumed: older arrivals are duplicates.
        self.tail = after
        self._entries: list[LogEntry] = []
        #: Set when the follower must read the log itself (a slow client, or Redis may be down).
        self.overflowed = False
        self.wake = asyncio.Event()

    def offer(self, entries: Sequence[LogEntry]) -> None:
        if self.overflowed or not entries or entries[-1].id <= self.tail:
            return  # nothing new (a producer's persisted entries it was shown before): no wake
        for entry in entries:
            if entry.id <= self.tail:
                continue
            if self._entries and entry.id != self.tail + 1:
                # A hole inside the buffer (entries written elsewhere between two hand-offs): the
                # follower reads the log from where it is (take checks only the buffer's head).
                self.recheck()
                return
            if len(self._entries) >= BATCH:
                # A slow client: drop the buffer; its follower re-reads the log from where it is.
                self.overflowed = True
                self._entries.clear()
                break
            self._entries.append(entry)
            self.tail = entry.id
        self.wake.set()

    def recheck(self) -> None:
        """Something failed to reach Redis: the follower reads the log itself, which tells whether
        it is down (the read raises and the follower ends resumably) or not (it carries on)."""
        self.overflowed = True
        self._entries.clear()
        self.wake.set()

    def take(self, last_id: int) -> list[LogEntry] | None:
        """The buffered entries after last_id, in order; None when the follower must read the log
        (the buffer overflowed, a recheck, or the next entry is not last_id + 1)."""
        self.wake.clear()
        entries, self._entries = self._entries, []
        if self.overflowed:
            self.overflowed = False
            self.tail = last_id
            return None
        fresh = [e for e in entries if e.id > last_id]
        if fresh and fresh[0].id != last_id + 1:
            self.tail = last_id
            return None
        return fresh

    def caught_up(self, last_id: int) -> None:
        """The follower read the log up to last_id itself: buffered entries at or before it are old."""
        self.tail = max(self.tail, last_id)
        self._entries = [e for e in self._entries if e.id > last_id]


class LogHub:
    """The pod's followers by conversation, the local hand-off, and the reader task."""

    def __init__(self, redis: Redis, *, block_ms: int = READ_BLOCK_MS, by_slot: bool = False) -> None:
        self._redis = redis
        #: Group reads by hash slot although the client is a plain one (REDIS_MODE=proxy).
        self._by_slot = by_slot
        self._block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        #: Per followed conversation: the highest id this pod has seen (read or handed over).
        self._cursor: dict[str, int] = {}
        #: Conversations a local producer writes: the hand-off feeds their followers, the reader skips them.
        self._local: dict[str, int] = {}
        #: Each followed conversation's reader; readers take SHARD_SIZE conversations each.
        self._shard_of: dict[str, _Reader] = {}
        self._readers: list[_Reader] = []
        #: On a Redis Cluster (not behind a proxy): the sharded pub/sub reader (log_wakes).
        self._wakes: ClusterReader | None = None
        self._closed = False

    # --- followers ---------------------------------------------------------------------------------
    def subscribe(self, conversation_id: str, after: int, *, quiet: bool = False) -> Subscription:
        """An inbox for entries after `after`. `quiet`: for a turn about to start on this pod, whose
        producer's appends feed it: the reader is not woken to read the conversation now (it is
        when the producer ends, see local_producer)."""
        sub = Subscription(conversation_id, after)
        subs = self._subs.get(conversation_id)
        if subs is None:
            self._subs[conversation_id] = {sub}
            self._cursor[conversation_id] = after
            self._assign(conversation_id, wake=not quiet)
        else:
            subs.add(sub)
            # The reader keeps its position: this follower catches up from the log by itself.
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.conversation_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.conversation_id]
            del self._cursor[sub.conversation_id]
            reader = self._shard_of.pop(sub.conversation_id, None)
            if reader is not None:
                reader.conversations.discard(sub.conversation_id)
            elif self._wakes is not None:
                self._wakes.unfollow(sub.conversation_id)
            # The reader's XREAD in flight may still name it; what it brings back has nobody to go to.

    def seen(self, conversation_id: str, last_id: int) -> None:
        """The conversation's log is known up to last_id (a turn starts after it): the reader
        need not read what comes before."""
        if conversation_id in self._cursor and last_id > self._cursor[conversation_id]:
            self._cursor[conversation_id] = last_id

    def wake_all(self) -> None:
        """Rouse every waiting follower (shutdown: they notice their stop and end once caught up)."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wake.set()

    def follows(self, conversation_id: str) -> bool:
        return conversation_id in self._subs

    def followed(self) -> int:
        """Conversations with at least one local follower."""
        return len(self._subs)

    # --- local producers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def local_producer(self, conversation_id: str) -> Iterator[None]:
        """While a producer on this pod writes a conversation, its appends reach the local followers
        through the hand-off and the reader leaves it out; afterwards the reader reads it again from
        the last id seen (a write from elsewhere meanwhile arrives then, or fills a gap at once)."""
        self._local[conversation_id] = self._local.get(conversation_id, 0) + 1
        try:
            yield
        finally:
            left = self._local[conversation_id] - 1
            if left:
                self._local[conversation_id] = left
            else:
                del self._local[conversation_id]
                # On the next loop pass: a follower that has just been handed the answer's end has
                # left by then, and a conversation nobody follows needs no new read.
                asyncio.get_running_loop().call_soon(self._read_again, conversation_id)

    def _read_again(self, conversation_id: str) -> None:
        if conversation_id in self._local or self._closed:
            return
        reader = self._shard_of.get(conversation_id)
        if reader is not None:
            reader.changed()
        elif self._wakes is not None and conversation_id in self._subs:
            self._wakes.poke(conversation_id)

    def publish(self, conversation_id: str, entries: Sequence[LogEntry]) -> None:
        """Entries just persisted to the conversation's log (or just read from it): to its local followers."""
        subs = self._subs.get(conversation_id)
        if not subs or not entries:
            return
        if entries[-1].id > self._cursor[conversation_id]:
            self._cursor[conversation_id] = entries[-1].id
        for sub in subs:
            sub.offer(entries)

    # --- the readers ------------------------------------------------------------------------------
    def wake_channel(self, conversation_id: str) -> str | None:
        """The channel an append publishes its last id on for the cluster reader (None: no reader
        listens for one, on a single server or behind a proxy)."""
        if self._by_slot or not is_cluster(self._redis):
            return None
        return redis_keys.log_wake(conversation_id)

    def _assign(self, conversation_id: str, *, wake: bool = True) -> None:
        """Give a newly followed conversation to a reader with room (a new one when all are full);
        on a cluster to the sharded pub/sub reader (which subscribes whether or not `wake`: it reads
        only once the subscription stands); behind a proxy, to one reading its hash slot."""
        if not self._by_slot and is_cluster(self._redis):
            if self._wakes is None:
                self._wakes = ClusterReader(self, cast(RedisCluster, self._redis), batch=BATCH)
            if not self._closed:
                self._wakes.follow(conversation_id)
            return
        by_slot = self._by_slot or is_cluster(self._redis)
        slot = key_slot(redis_keys.event_log(conversation_id).encode()) if by_slot else None
        reader = next(
            (r for r in self._readers if r.slot == slot and len(r.conversations) < SHARD_SIZE), None
        )
        if reader is None:
            reader = _Reader(self, len(self._readers), slot, conversation_id)
            self._readers.append(reader)
        reader.conversations.add(conversation_id)
        self._shard_of[conversation_id] = reader
        if wake and not self._closed:
            reader.changed()

    def _targets(self, conversations: Iterable[str]) -> dict[str, str]:
        return {
            redis_keys.event_log(cid): f"0-{self._cursor[cid]}"
            for cid in conversations
            if cid not in self._local and cid in self._cursor
        }

    def _deliver(self, key: str, items: list[tuple[str, dict[str, str]]]) -> None:
        cid = key[len(_LOG_PREFIX) : -len(_LOG_SUFFIX)]
        if cid in self._subs:
            self.publish(cid, [entry_from_fields(entry_id, fields) for entry_id, fields in items])

    def _fail(self, conversations: Iterable[str], exc: BaseException) -> None:
        """The reader could not read these conversations: their followers read the log themselves."""
        for cid in list(conversations):
            self.fail(cid, exc)

    def fail(self, conversation_id: str, exc: BaseException) -> None:
        """Writing or reading this conversation's log failed (`exc`): its followers read the log
        themselves and end resumably if their own read fails too, as it does while Redis is down.
        One failed command is not proof of an outage: after a Redis restart the first command on a
        pooled connection fails while the next ones work, and a follower that resumed meanwhile
        must not be ended by a producer's retry that hit it."""
        log.debug("log of %s failed (%s): its followers re-read it", conversation_id, exc)
        for sub in self._subs.get(conversation_id, ()):
            sub.recheck()

    def wake_connections(self) -> int:
        """The cluster reader's subscriber connections open now (one per node; 0 elsewhere)."""
        return self._wakes.connections() if self._wakes is not None else 0

    async def close(self) -> None:
        self._closed = True
        for reader in self._readers:
            await reader.close()
        if self._wakes is not None:
            await self._wakes.close()


_LOG_PREFIX, _LOG_SUFFIX = f"{redis_keys.PREFIX}:conv:{{", "}:log"


class _Reader:
    """One `XREAD BLOCK` loop on its own connection over up to SHARD_SIZE followed conversations.

    Bounded shards keep a re-issued XREAD cheap (a new follower, a local producer's end) however
    many streams the pod holds: 10,000 idle streams are 40 connections, not 10,000, and a change
    re-sends 250 keys, not 10,000. Each reader's XREAD also names its wake stream: an entry added
    there ends the blocked read at once, race-free (the read asks for ids after the last seen)."""

    def __init__(self, hub: LogHub, index: int, slot: int | None, first: str) -> None:
        self._hub = hub
        self.conversations: set[str] = set()
        #: The cluster hash slot of every conversation here (None on a single server).
        self.slot = slot
        # On a cluster the wake stream shares the slot: it carries the first conversation's tag.
        tag = f"{{{first}}}:" if slot is not None else ""
        self._wake_key = f"{redis_keys.PREFIX}:hub:{tag}{uuid.uuid4().hex}:{index}"
        self._wake_seen = "0-0"
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waking: asyncio.Task[None] | None = None
        self._wake_again = False

    def changed(self) -> None:
        """The conversations to read changed: re-issue the XREAD (start the loop if it is not running)."""
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="log-hub-reader")
            return
        if self._waking is not None:
            self._wake_again = True
            return
        self._waking = asyncio.create_task(self._wake(), name="log-hub-wake")

    async def _wake(self) -> None:
        redis = self._hub._redis
        try:
            while True:
                self._wake_again = False
                try:
                    async with redis.pipeline(transaction=False) as pipe:
                        pipe.xadd(self._wake_key, {"w": "1"}, maxlen=WAKE_MAXLEN, approximate=True)
                        pipe.expire(self._wake_key, WAKE_TTL_S)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    log.debug("log hub wake not sent (the reader re-reads within its block): %s", exc)
                if not self._wake_again:
                    return
        finally:
            self._waking = None

    def _connect(self) -> Redis:
        """This reader's own connection, held for its life; on a cluster the client itself, which
        takes a connection to the slot's node for each read."""
        redis = self._hub._redis
        return redis if is_cluster(redis) else cast(Any, redis).client()

    async def _release(self, connection: Redis | None) -> None:
        if connection is not None and connection is not self._hub._redis:
            with contextlib.suppress(RedisError, OSError):
                await connection.aclose()

    async def _run(self) -> None:
        hub = self._hub
        connection: Redis | None = None
        backoff = MIN_BACKOFF_S
        try:
            while not hub._closed:
                targets = hub._targets(self.conversations)
                self._changed.clear()
                if not targets:
                    await self._changed.wait()
                    continue
                targets[self._wake_key] = self._wake_seen
                try:
                    connection = connection or self._connect()
                    answer: Any = await connection.xread(cast(Any, targets), count=BATCH, block=hub._block_ms)
                except RedisTimeoutError as exc:
                    # Slow, not gone (an overloaded host): read again; nobody is failed for it.
                    log.warning("log hub read timed out; reading again: %s", exc)
                    continue
                except (RedisError, OSError) as exc:
                    log.warning("log hub cannot read Redis (its followers re-read the log): %s", exc)
                    hub._fail(self.conversations, exc)
                    await self._release(connection)
                    connection = None
                    # A new follower (a client resuming once Redis is back) cuts the wait short.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await self._changed.wait()
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                backoff = MIN_BACKOFF_S
                for key, items in answer or []:
                    if key == self._wake_key:
                        self._wake_seen = items[-1][0]
                    else:
                        hub._deliver(key, items)
        finally:
            await self._release(connection)

    async def close(self) -> None:
        for task in (self._task, self._waking):
            if task is not None:
                await stop(task)
        self._task = self._waking = None
