"""A queue on a Redis stream: the local stand-in for a Service Bus queue.

One consumer group per queue; each entry goes to one consumer, stays pending until acked, and is
reclaimed with XAUTOCLAIM by another consumer once it has been idle longer than `claim_idle_ms`
(its consumer crashed). Redis counts deliveries per entry; past `max_deliveries` an entry moves to
the dead-letter stream with a reason, as Service Bus moves a message to its dead-letter subqueue.
A message id seen within the duplicate-detection window is dropped on send, as Service Bus does.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from action_bus.ports import BusUnavailable

log = logging.getLogger(__name__)

#: Set the dedup marker and append the entry in one step, so a crash cannot leave one without the other.
_SEND_ONCE = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[1], '*', 'mid', ARGV[1], 'body', ARGV[3], 'props', ARGV[4])
end
return false
"""

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


class StreamQueue:
    """A named queue on one Redis stream with one consumer group."""

    def __init__(
        self,
        redis: aioredis.Redis,
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

    async def send(self, message_id: str, body: str, properties: dict[str, str] | None = None) -> bool:
        """Append one message; False when the same message id was sent within the dedup window."""
        try:
            entry = await self.redis.eval(
                _SEND_ONCE,
                2,
                self.key,
                self._dedup_key(message_id),
                message_id,
                self.dedup_window_s,
                body,
                json.dumps(properties or {}),
            )
        except REDIS_DOWN as exc:
            raise BusUnavailable(f"redis stream {self.name}: {exc}") from exc
        if entry is None:
            log.info("queue %s: dropped duplicate message %s", self.name, message_id)
            return False
        return True

    async def receive(self, count: int = 10, wait_s: float = 1.0) -> list[Delivery]:
        """Up to `count` entries: first those a crashed consumer left idle, then new ones."""
        try:
            await self.ensure_group()
            raw: list[tuple[Any, Any]] = []
            claimed = await self.redis.xautoclaim(
                self.key, self.group, self.consumer, self.claim_idle_ms, start_id="0-0", count=count
            )
            raw.extend(claimed[1])
            if claimed[2]:  # deleted while pending: nothing left to deliver
                await self.redis.xack(self.key, self.group, *claimed[2])
            if len(raw) < count:
                block = None if raw else max(1, int(wait_s * 1000))
                fresh = await self.redis.xreadgroup(
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
            await self.dead_letter(delivery, f"delivered {count} times; the limit is {self.max_deliveries}")
            return None
        return delivery

    async def touch(self, delivery_ids: list[str]) -> None:
        """Reset the idle time of entries this consumer still works on, so no one reclaims them."""
        if delivery_ids:
            await self.redis.xclaim(self.key, self.group, self.consumer, 0, delivery_ids, justid=True)

    async def ack(self, delivery_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, self.group, delivery_id)
            pipe.xdel(self.key, delivery_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        log.warning("queue %s: dead-lettering %s (%s)", self.name, delivery.message_id, reason)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.dead_key,
                {
                    "mid": delivery.message_id,
                    "body": delivery.body,
                    "props": json.dumps(delivery.properties),
                    "reason": reason,
                    "deliveries": str(delivery.delivery_count),
                    "at": f"{time.time():.3f}",
                },
            )
            pipe.xack(self.key, self.group, delivery.delivery_id)
            pipe.xdel(self.key, delivery.delivery_id)
            await pipe.execute()

    async def dead_entries(self, count: int = 1000) -> list[DeadEntry]:
        entries = await self.redis.xrange(self.dead_key, count=count)
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
                )
            )
        return result

    async def requeue_dead(self, dead_id: str) -> bool:
        """Move one dead entry back to the queue (after a fix); its delivery count starts again."""
        entries = await self.redis.xrange(self.dead_key, dead_id, dead_id)
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

    async def depth(self) -> int:
        return int(await self.redis.xlen(self.key))
