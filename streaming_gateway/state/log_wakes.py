"""The pod's log reader on a Redis Cluster: sharded pub/sub wakes, one connection per node.

A cluster refuses a command naming keys of two hash slots, even on one node, so one `XREAD BLOCK`
over every followed conversation (the single-server reader) is impossible there; blocking per slot
costs a connection per followed slot (thousands at 10,000 streams per pod). Instead:

- Every append on a cluster also `SPUBLISH`es the new last id on the conversation's wake channel
  (redis_keys.log_wake), inside the append script. The channel carries the conversation's hash tag,
  so it lives in the log's slot: Redis 7.0 does not check that a script's SPUBLISH goes to its own
  slot (a channel of another slot is published on the wrong node, silently), the tag makes it so.
  With nobody subscribed a publish costs the node a dictionary lookup.
- One sharded-pub/sub connection per primary node (`_Node`) `SSUBSCRIBE`s the wake channels of the
  conversations local clients follow whose slot that node owns (one SSUBSCRIBE per slot: a cluster
  refuses channels of two slots in one). A wake whose id is past what the pod has seen makes the
  conversation due; one task reads every due conversation without blocking, one XREAD per slot
  in a pipeline per node, and hands the entries to the hub (log_hub.LogHub._deliver).

So a pod holds O(nodes) connections whatever it follows: one subscriber and the cluster client's
pooled connection per node.

Nothing is lost when a wake is: the read starts from the pod's last seen id, so it takes everything
since, and a follower still fills any gap from the log itself (log_hub.Subscription). A
subscription confirmed, a node's connection re-made, or a slot moved makes the conversations
concerned due at once (an append between the follower's own read and the subscription has no
wake). Topology changes arrive as a MOVED reply to SSUBSCRIBE, as an SUNSUBSCRIBE the node sends
when it loses the slot (a migration, a failover), or as a broken connection; each refreshes the
cluster's slot map and moves the subscriptions to the owning nodes. A quiet connection is pinged,
and one that does not answer is re-made. A slow safety poll (SAFETY_POLL_S) reads every followed
conversation anyway: a wake lost any other way (a pod of an older version that does not publish, a
subscriber dropped by the node's output buffer limit) delays a follower, never strands it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from streaming_gateway.state import redis_keys
from streaming_gateway.state.task_stop import stop

log = logging.getLogger(__name__)

#: Every followed conversation is read this often even without a wake.
SAFETY_POLL_S = 15.0
#: A subscriber connection silent this long is pinged; silent as long again, it is re-made.
KEEPALIVE_S = 10.0
#: The wait after a failed read or a failed connection, doubling up to MAX_BACKOFF_S.
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0
#: The subscriber connections' client name (CLIENT LIST shows them per node).
CLIENT_NAME = "gw-log-wakes"


class LogHub(Protocol):
    """What the reader needs of the pod's hub (log_hub.LogHub; not imported: it imports this)."""

    _cursor: dict[str, int]

    def _targets(self, conversations: Iterable[str]) -> dict[str, str]: ...

    def _deliver(self, key: str, items: list[tuple[str, dict[str, str]]]) -> None: ...

    def _fail(self, conversations: Iterable[str], exc: BaseException) -> None: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterReader:
    """The followed conversations' wake subscriptions, per node, and the reads they trigger."""

    def __init__(self, hub: LogHub, redis: RedisCluster, *, batch: int) -> None:
        self._hub = hub
        self._redis = redis
        #: Entries per stream per read (the followers' buffer bound).
        self._batch = batch
        #: Followed conversations by wake channel.
        self._channels: dict[str, str] = {}
        #: One subscriber per node that owns a followed conversation's slot, by node name.
        self._nodes: dict[str, _Node] = {}
        self._due: set[str] = set()
        self._due_changed = asyncio.Event()
        self._topology_changed = asyncio.Event()
        self._refresh = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # --- what the hub asks --------------------------------------------------------------------
    def follow(self, conversation_id: str) -> None:
        self._channels[redis_keys.log_wake(conversation_id)] = conversation_id
        self._start()
        self._topology_changed.set()

    def unfollow(self, conversation_id: str) -> None:
        self._channels.pop(redis_keys.log_wake(conversation_id), None)
        self._topology_changed.set()

    def poke(self, conversation_id: str) -> None:
        """Read this conversation now (a local producer ended: whatever came from elsewhere meanwhile)."""
        self.make_due([conversation_id])

    def make_due(self, conversations: list[str] | set[str]) -> None:
        self._due.update(conversations)
        self._due_changed.set()

    def moved(self) -> None:
        """A node reported a slot it no longer owns: refresh the slot map and resubscribe."""
        self._refresh = True
        self._topology_changed.set()

    def connections(self) -> int:
        """Subscriber connections open now (one per node with followed conversations)."""
        return sum(1 for node in self._nodes.values() if node.connected)

    def _start(self) -> None:
        if not self._tasks and not self._closed:
            self._tasks = [
                asyncio.create_task(self._place(), name="log-wakes-subscriptions"),
                asyncio.create_task(self._read(), name="log-wakes-reader"),
            ]

    # --- subscriptions per node ---------------------------------------------------------------
    async def _place(self) -> None:
        """Keep each node's subscriber subscribed to the channels of the slots it owns."""
        backoff = MIN_BACKOFF_S
        while not self._closed:
            self._topology_changed.clear()
            try:
                if self._refresh:
                    self._refresh = False
                    await self._redis.nodes_manager.initialize()
                await self._redis.initialize()
                wanted: dict[str, dict[str, str]] = defaultdict(dict)
                for channel, cid in self._channels.items():
                    node = self._redis.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
                    wanted[node.name][channel] = cid
                    if node.name not in self._nodes:
                        self._nodes[node.name] = _Node(self, node.connection_class, node.connection_kwargs)
                for name, node_ in list(self._nodes.items()):
                    if not wanted.get(name):
                        del self._nodes[name]
                        await node_.close()
                    else:
                        node_.want(wanted[name])
                backoff = MIN_BACKOFF_S
            except (RedisError, OSError) as exc:
                log.warning("log wakes: subscriptions not placed (the safety poll reads meanwhile): %s", exc)
                self._refresh = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            await self._topology_changed.wait()

    # --- reads ---------------------------------------------------------------------------------
    async def _read(self) -> None:
        """Read every due conversation from the pod's last seen id, without blocking, then wait for
        the next wake (or the safety poll)."""
        hub = self._hub
        backoff = MIN_BACKOFF_S
        while not self._closed:
            if not self._due:
                self._due_changed.clear()
                try:
                    async with asyncio.timeout(SAFETY_POLL_S):
                        await self._due_changed.wait()
                except TimeoutError:
                    self._due.update(self._channels.values())
            due, self._due = self._due, set()
            targets = hub._targets(due)
            if not targets:
                continue
            by_slot: dict[int, dict[str, str]] = defaultdict(dict)
            for key, after in targets.items():
                by_slot[key_slot(key.encode())][key] = after
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for streams in by_slot.values():
                        pipe.xread(streams, count=self._batch)  # type: ignore[arg-type]
                    answers: list[Any] = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("log wakes: cannot read Redis (its followers re-read the log): %s", exc)
                hub._fail(targets_conversations(targets), exc)
                self.moved()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self.make_due(targets_conversations(targets))
                continue
            backoff = MIN_BACKOFF_S
            for answer in answers:
                for key, items in answer or []:
                    hub._deliver(key, items)
                    if len(items) >= self._batch:  # more may be waiting: read on
                        self.make_due([key[len(_LOG_PREFIX) : -len(_LOG_SUFFIX)]])

    def woken(self, channel: str, last_id: int | None) -> None:
        cid = self._channels.get(channel)
        if cid is not None and (last_id is None or last_id > self._hub._cursor.get(cid, last_id)):
            self.make_due([cid])

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            await stop(task)
        self._tasks = []
        for node in self._nodes.values():
            await node.close()
        self._nodes.clear()


_LOG_PREFIX, _LOG_SUFFIX = f"{redis_keys.PREFIX}:conv:{{", "}:log"


def targets_conversations(targets: dict[str, str]) -> set[str]:
    return {key[len(_LOG_PREFIX) : -len(_LOG_SUFFIX)] for key in targets}


class _Node:
    """One node's sharded-pub/sub connection and the wake channels it should be subscribed to.

    A task owns the connection: it sends the SSUBSCRIBE/SUNSUBSCRIBE differences (one command per
    slot) and reads what the node sends. A plain `Connection` of our own, on RESP2, without
    retries: a reconnect must be seen (the conversations then become due), not hidden."""

    def __init__(
        self, reader: ClusterReader, connection_class: type[Connection], kwargs: dict[str, Any]
    ) -> None:
        self._reader = reader
        self._kwargs = {
            # The cluster client's maintenance notifications need RESP3; this connection is RESP2.
            **{key: value for key, value in kwargs.items() if "maint" not in key},
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "client_name": CLIENT_NAME,
        }
        self._connection_class = connection_class
        self.name = f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._wanted: dict[str, str] = {}
        #: Channels sent to the node (SSUBSCRIBE) on the current connection and not unsubscribed.
        self._sent: set[str] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def want(self, channels: dict[str, str]) -> None:
        self._wanted = channels
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"log-wakes:{self.name}")

    async def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            connection = self._connection_class(**self._kwargs)
            listener: asyncio.Task[None] | None = None
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                self.connected = True
                self._sent = set()
                listener = asyncio.create_task(self._listen(connection), name=f"log-wakes-listen:{self.name}")
                while True:
                    self._changed.clear()
                    await self._sync(connection)
                    changed = asyncio.create_task(self._changed.wait())
                    try:
                        await asyncio.wait({changed, listener}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        await stop(changed)
                    if listener.done():
                        listener.result()  # raises what ended it
                        break
                backoff = MIN_BACKOFF_S
            except (RedisError, OSError) as exc:
                log.warning("log wakes: subscriber on %s lost (%s); resubscribing", self.name, exc)
            finally:
                self.connected = False
                if listener is not None:
                    await stop(listener)
                with contextlib.suppress(RedisError, OSError):
                    await connection.disconnect()
            # Whatever was published while no subscription stood is read now; the node may be gone.
            self._reader.make_due(set(self._wanted.values()))
            self._reader.moved()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _sync(self, connection: Connection) -> None:
        add = [c for c in self._wanted if c not in self._sent]
        drop = [c for c in self._sent if c not in self._wanted]
        for command, channels in (("SSUBSCRIBE", add), ("SUNSUBSCRIBE", drop)):
            by_slot: dict[int, list[str]] = defaultdict(list)
            for channel in channels:
                by_slot[key_slot(channel.encode())].append(channel)
            for group in by_slot.values():
                await connection.send_command(command, *group, check_health=False)
        self._sent.update(add)
        self._sent.difference_update(drop)

    async def _listen(self, connection: Connection) -> None:
        """Read the node's messages: wakes, subscription confirmations, unsubscriptions, MOVED."""
        pinged = False
        while True:
            try:
                message = await connection.read_response(timeout=KEEPALIVE_S, disconnect_on_error=False)
            except ResponseError as exc:
                if "unknown command" in str(exc).lower():  # Redis before 7.0: no sharded pub/sub
                    log.error("log wakes: %s refuses SSUBSCRIBE (Redis 7.0 or later is needed)", self.name)
                    return
                # MOVED: the slot has moved; the next placement corrects it.
                log.info("log wakes: %s on %s", exc, self.name)
                self._reader.moved()
                continue
            if message is None:
                if pinged:
                    raise ConnectionError(f"{self.name} did not answer a ping in {KEEPALIVE_S} s")
                await connection.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            kind = _text(message[0]) if isinstance(message, list) and message else ""
            if kind == "smessage":
                channel, data = _text(message[1]), _text(message[2])
                self._reader.woken(channel, int(data) if data.isdigit() else None)
            elif kind == "ssubscribe":
                # The subscription stands from here: read once for what came before it.
                self._reader.woken(_text(message[1]), None)
            elif kind == "sunsubscribe":
                channel = _text(message[1])
                if channel in self._wanted and channel in self._sent:
                    # Not asked for: the node gave up the slot (a migration or a failover).
                    self._sent.discard(channel)
                    self._reader.woken(channel, None)
                    self._reader.moved()

    async def close(self) -> None:
        if self._task is not None:
            await stop(self._task)
            self._task = None
