"""A queue on a Redis stream: the local stand-in for a Service Bus queue, behaving like one where
the pipeline depends on it (tests/action_bus/test_broker_conformance.py checks both the same way):

- peek-lock: a received entry stays pending (locked) for `claim_idle_ms` (Service Bus's lock
  duration); `touch` renews the lock; after it expires another receiver gets the entry, with the
  delivery count raised; settling an entry whose lock another receiver took fails (`ack` False);
- abandon: the entry is delivered again at once (not after the lock duration), count raised;
- MaxDeliveryCount: an entry is delivered at most `max_deliveries` times, then it moves to the
  dead-letter stream with the reason `MaxDeliveryCountExceeded`, as Service Bus moves it to the
  dead-letter subqueue; `dead_letter` moves one there with the caller's reason;
- duplicate detection: a message id seen within `dedup_window_s` is dropped on send;
- scheduled enqueue: `send(..., enqueue_at=t)` keeps the message out of sight until `t`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from action_bus.ports import BusUnavailable
from agent_contracts.redis_connection import AnyRedis

log = logging.getLogger(__name__)

#: Set the dedup marker and append the entry in one step, so a crash cannot leave one without the other.
_SEND_ONCE = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[1], '*', 'mid', ARGV[1], 'body', ARGV[3], 'props', ARGV[4])
end
return false
"""

#: Several messages in one step (KEYS: stream, then one dedup key per message; ARGV: window, then
#: id, body, props per message): all are appended or, if Redis fails, none is. Answers 1/0 per message.
_SEND_ALL_ONCE = """
local out = {}
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 3
  if redis.call('SET', KEYS[i], ARGV[a], 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'mid', ARGV[a], 'body', ARGV[a + 1], 'props', ARGV[a + 2])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

#: The same, for a message to appear at a later time: it waits in a sorted set until due.
_SCHEDULE_ONCE = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('ZADD', KEYS[3], ARGV[5], cjson.encode({mid=ARGV[1], body=ARGV[3], props=ARGV[4]}))
end
return false
"""

#: Move scheduled messages that are due onto the stream (KEYS: stream, schedule; ARGV: now, limit).
_PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  local m = cjson.decode(raw)
  redis.call('XADD', KEYS[1], '*', 'mid', m.mid, 'body', m.body, 'props', m.props)
  redis.call('ZREM', KEYS[2], raw)
end
return #due
"""

#: Settle only an entry this consumer still holds (KEYS: stream; ARGV: group, id, consumer).
_SETTLE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def text(value: Any) -> str:
    """Redis replies as str or bytes depending on the client's decode_responses."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def consumer_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Delivery:
    """One received entry: settle it with ack() or dead_letter() by delivery_id."""

    delivery_id: str
    message_id: str
    body: str
    properties: dict[str, str] = field(default_factory=dict)
    delivery_count: int = 1


@dataclass(frozen=True)
class DeadEntry:
    dead_id: str
    message_id: str
    body: str
    reason: str
    delivery_count: int
    dead_lettered_at: float
    description: str = ""
    properties: dict[str, str] = field(default_factory=dict)


class StreamQueue:
    """A named queue on one Redis stream with one consumer group."""

    def __init__(
        self,
        redis: AnyRedis,
        name: str,
        group: str,
        consumer: str | None = None,
        *,
        max_deliveries: int | None = 10,
        claim_idle_ms: int = 30_000,
        dedup_window_s: int = 600,
    ) -> None:
        if max_deliveries is not None and max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.redis = redis
        self.name = name
        self.group = group
        self.consumer = consumer or consumer_name(group)
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.dedup_window_s = dedup_window_s
        # One hash tag per queue keeps all of its keys in one Redis Cluster slot (the Lua script needs it).
        self.key = f"bus:{{{name}}}"
        self.dead_key = f"bus:{{{name}}}:dead"
        self.scheduled_key = f"bus:{{{name}}}:scheduled"
        self._group_ready = False

    def _dedup_key(self, message_id: str) -> str:
        return f"bus:{{{self.name}}}:dedup:{message_id}"

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def send(
        self,
        message_id: str,
        body: str,
        properties: dict[str, str] | None = None,
        *,
        enqueue_at: float | None = None,
    ) -> bool:
        """Append one message (at `enqueue_at`, epoch seconds, when given); False when the same
        message id was sent within the dedup window."""
        props = json.dumps(properties or {})
        try:
            if enqueue_at is not None and enqueue_at > time.time():
                entry = await self.redis.eval(
                    _SCHEDULE_ONCE,
                    3,
                    self.key,
                    self._dedup_key(message_id),
                    self.scheduled_key,
                    message_id,
                    self.dedup_window_s,
                    body,
                    props,
                    f"{enqueue_at:.3f}",
                )
            else:
                entry = await self.redis.eval(
                    _SEND_ONCE,
                    2,
                    self.key,
                    self._dedup_key(message_id),
                    message_id,
                    self.dedup_window_s,
                    body,
                    props,
                )
        except REDIS_DOWN as exc:
            raise BusUnavailable(f"redis stream {self.name}: {exc}") from exc
        if entry is None:
            log.info("queue %s: dropped duplicate message %s", self.name, message_id)
            return False
        return True

    async def send_all(self, messages: list[tuple[str, str]]) -> list[bool]:
        """Append several (message id, body) at once, all or none (one script on one hash slot);
        per message, False when its id was sent within the dedup window."""
        if not messages:
            return []
        ids = [message_id for message_id, _ in messages]
        args: list[str] = []
        for message_id, body in messages:
            args.extend((message_id, body, "{}"))
        try:
            sent = await self.redis.eval(
                _SEND_ALL_ONCE,
                1 + len(messages),
                self.key,
                *[self._dedup_key(i) for i in ids],
                self.dedup_window_s,
                *args,
            )
        except REDIS_DOWN as exc:
            raise BusUnavailable(f"redis stream {self.name}: {exc}") from exc
        for message_id, fresh in zip(ids, sent, strict=True):
            if not fresh:
                log.info("queue %s: dropped duplicate message %s", self.name, message_id)
        return [bool(fresh) for fresh in sent]

    async def scheduled_count(self) -> int:
        return int(await self.redis.zcard(self.scheduled_key))

    async def receive(self, count: int = 10, wait_s: float = 1.0) -> list[Delivery]:
        """Up to `count` entries: first those a crashed consumer left idle, then new ones."""
        try:
            await self.ensure_group()
            await self.redis.eval(_PROMOTE_DUE, 2, self.key, self.scheduled_key, f"{time.time():.3f}", 100)
            raw: list[tuple[Any, Any]] = []
            claimed: Any = await self.redis.xautoclaim(
                self.key, self.group, self.consumer, self.claim_idle_ms, start_id="0-0", count=count
            )
            raw.extend(claimed[1])
            if claimed[2]:  # deleted while pending: nothing left to deliver
                await self.redis.xack(self.key, self.group, *claimed[2])
            if len(raw) < count:
                block = None if raw else max(1, int(wait_s * 1000))
                fresh: Any = await self.redis.xreadgroup(
                    self.group, self.consumer, {self.key: ">"}, count=count - len(raw), block=block
                )
                for _stream, entries in fresh or []:
                    raw.extend(entries)
            deliveries: list[Delivery] = []
            for entry_id, fields in raw:
                delivery = await self._to_delivery(text(entry_id), fields)
                if delivery is not None:
                    deliveries.append(delivery)
            return deliveries
        except REDIS_DOWN as exc:
            raise BusUnavailable(f"redis stream {self.name}: {exc}") from exc
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or its group vanished under us: Redis restarted without its data, failed
            # over to an empty replica, or was flushed. The next receive makes the group again;
            # whatever the lost stream held is gone with it and cannot be delivered.
            log.warning("queue %s: consumer group %s is gone (%s); recreating it", self.name, self.group, exc)
            self._group_ready = False
            return []

    async def _to_delivery(self, entry_id: str, fields: Any) -> Delivery | None:
        if not fields:  # deleted after it was read
            await self.redis.xack(self.key, self.group, entry_id)
            return None
        data = {text(k): text(v) for k, v in fields.items()}
        pending = await self.redis.xpending_range(self.key, self.group, entry_id, entry_id, 1)
        count = int(pending[0]["times_delivered"]) if pending else 1
        delivery = Delivery(
            delivery_id=entry_id,
            message_id=data.get("mid", entry_id),
            body=data.get("body", ""),
            properties=json.loads(data.get("props", "{}")),
            delivery_count=count,
        )
        if self.max_deliveries is not None and count > self.max_deliveries:
            # Recorded with the deliveries actually made, as Service Bus's dead-lettered copy has them.
            await self.dead_letter(
                replace(delivery, delivery_count=count - 1),
                MAX_DELIVERY_REASON,
                f"delivered {self.max_deliveries} times without being settled (the limit)",
            )
            return None
        return delivery

    async def touch(self, delivery_ids: list[str]) -> None:
        """Renew the locks of entries this consumer still works on, so no one reclaims them."""
        if delivery_ids:
            ids: list[int | bytes | str | memoryview] = list(delivery_ids)
            await self.redis.xclaim(self.key, self.group, self.consumer, 0, ids, justid=True)

    async def ack(self, delivery_id: str) -> bool:
        """Complete an entry; False when this consumer no longer holds it (its lock expired and
        another receiver took it, or it was settled already): it is then not settled here."""
        settled = await self.redis.eval(_SETTLE, 1, self.key, self.group, delivery_id, self.consumer)
        if not settled:
            log.info("queue %s: %s not completed: lock lost", self.name, delivery_id)
        return bool(settled)

    async def abandon(self, delivery_id: str) -> None:
        """Give the entry back for immediate redelivery (its delivery count rises on the next receive)."""
        await self.redis.xclaim(
            self.key, self.group, self.consumer, 0, [delivery_id], idle=self.claim_idle_ms + 1, justid=True
        )

    async def dead_letter(self, delivery: Delivery, reason: str, description: str = "") -> None:
        log.warning("queue %s: dead-lettering %s (%s)", self.name, delivery.message_id, reason)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.dead_key,
                {
                    "mid": delivery.message_id,
                    "body": delivery.body,
                    "props": json.dumps(delivery.properties),
                    "reason": reason,
                    "description": description,
                    "deliveries": str(delivery.delivery_count),
                    "at": f"{time.time():.3f}",
                },
            )
            pipe.xack(self.key, self.group, delivery.delivery_id)
            pipe.xdel(self.key, delivery.delivery_id)
            await pipe.execute()

    async def dead_entries(self, count: int = 1000) -> list[DeadEntry]:
        entries: Any = await self.redis.xrange(self.dead_key, count=count)
        result = []
        for entry_id, fields in entries:
            data = {text(k): text(v) for k, v in fields.items()}
            result.append(
                DeadEntry(
                    dead_id=text(entry_id),
                    message_id=data.get("mid", ""),
                    body=data.get("body", ""),
                    reason=data.get("reason", ""),
                    delivery_count=int(data.get("deliveries", "0")),
                    dead_lettered_at=float(data.get("at", "0")),
                    description=data.get("description", ""),
                    properties=json.loads(data.get("props", "{}")),
                )
            )
        return result

    async def requeue_dead(self, dead_id: str) -> bool:
        """Move one dead entry back to the queue (after a fix); its delivery count starts again."""
        entries: Any = await self.redis.xrange(self.dead_key, dead_id, dead_id)
        if not entries:
            return False
        data = {text(k): text(v) for k, v in entries[0][1].items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.key,
                {"mid": data.get("mid", ""), "body": data.get("body", ""), "props": data.get("props", "{}")},
            )
            pipe.xdel(self.dead_key, dead_id)
            await pipe.execute()
        return True

    async def purge_dead(self) -> int:
        """Drop every dead entry; how many there were."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.dead_key)
            pipe.delete(self.dead_key)
            count, _ = await pipe.execute()
        return int(count)

    async def depth(self) -> int:
        return int(await self.redis.xlen(self.key))
