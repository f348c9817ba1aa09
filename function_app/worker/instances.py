"""Orchestration instances kept in Redis: metadata, history, when each is next due, and a lease.

A finished instance is kept 7 days (as long as the outbox remembers an idempotency key), so a
message redelivered within that time still finds it and starts nothing.

Every history write checks the lease in the same Lua call, so a worker that lost its lease (it
stalled, another took over) can never append to an instance it no longer owns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from action_bus.redis_streams import text
from agent_contracts.redis_connection import AnyRedis

#: ARGV: name, input, created, parent id ('' = none), parent task id, events...
_CREATE = """
if redis.call('HSETNX', KEYS[1], 'name', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'input', ARGV[2], 'status', 'Running', 'created', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'parent', ARGV[4], 'parent_task', ARGV[5]) end
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('ZADD', KEYS[3], 0, KEYS[4])
return 1
"""

#: KEYS: lease, history, due, meta, failed, inbox; ARGV: token, iid, due_at ('' = finished, '+inf' =
#: waits for an event), status, output, now, custom status ('' = unchanged), events... A Failed
#: instance is also indexed, so the dead-letter command can list it. An instance with events in its
#: inbox (raised, or a sub-orchestration's end, while it ran) stays due now, so none is overlooked.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 8, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], 'custom', ARGV[7]) end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HSET', KEYS[4], 'status', ARGV[4], 'output', ARGV[5], 'updated', ARGV[6])
  if ARGV[4] == 'Failed' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2]) end
  redis.call('EXPIRE', KEYS[4], 604800)
  redis.call('EXPIRE', KEYS[2], 604800)
elseif redis.call('LLEN', KEYS[6]) > 0 then
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
end
return 1
"""

#: Events raised from outside wait in an inbox; the lease holder moves them into the history.
#: KEYS: lease, inbox, history; ARGV: token.
_TAKE_INBOX = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for _, item in ipairs(items) do redis.call('RPUSH', KEYS[3], item) end
redis.call('DEL', KEYS[2])
return #items
"""

#: KEYS: meta, inbox, due; ARGV: iid, event. Only a running instance takes events.
_RAISE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'Running' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
"""

#: A sub-orchestration's end, told to its parent once (the parent's `notified` set remembers the
#: child). KEYS: parent meta, parent inbox, due, parent notified; ARGV: parent id, child id, event.
_NOTIFY = """
if redis.call('HGET', KEYS[1], 'status') ~= 'Running' then return 0 end
if redis.call('SADD', KEYS[4], ARGV[2]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[4], 604800)
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
"""

#: Continue-as-new: a fresh history with the new input. KEYS: lease, history, meta, due;
#: ARGV: token, iid, input, events...
_RESTART = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[3], 'input', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'generations', 1)
redis.call('ZADD', KEYS[4], 0, ARGV[2])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(RuntimeError):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"lease on {instance_id} lost")
        self.instance_id = instance_id


@dataclass(frozen=True)
class Instance:
    instance_id: str
    name: str
    input_json: str
    status: str
    history: list[dict[str, Any]]
    output: str | None = None
    custom_status: str | None = None
    #: A sub-orchestration's parent instance and the parent's task id for it.
    parent_id: str | None = None
    parent_task: int | None = None
    #: How many times it continued as new (part of its children's default ids).
    generation: int = 0


class InstanceStore:
    def __init__(self, redis: AnyRedis, prefix: str = "durable") -> None:
        self.redis = redis
        self.prefix = prefix
        self.due_key = f"{prefix}:due"
        self.failed_key = f"{prefix}:failed"

    def _meta(self, iid: str) -> str:
        return f"{self.prefix}:{{{iid}}}:meta"

    def _history(self, iid: str) -> str:
        return f"{self.prefix}:{{{iid}}}:history"

    def _lease(self, iid: str) -> str:
        return f"{self.prefix}:{{{iid}}}:lease"

    def _inbox(self, iid: str) -> str:
        return f"{self.prefix}:{{{iid}}}:inbox"

    def _notified(self, iid: str) -> str:
        return f"{self.prefix}:{{{iid}}}:notified"

    async def create(
        self,
        iid: str,
        name: str,
        input_json: str,
        first_events: list[dict[str, Any]],
        parent: tuple[str, int] | None = None,
    ) -> bool:
        """Record a new instance with its first events and make it due now; False if it exists.
        `parent`: the parent instance and its task id, for a sub-orchestration."""
        created = await self.redis.eval(
            _CREATE,
            4,
            self._meta(iid),
            self._history(iid),
            self.due_key,
            iid,
            name,
            input_json,
            f"{time.time():.3f}",
            parent[0] if parent else "",
            str(parent[1]) if parent else "",
            *[json.dumps(e) for e in first_events],
        )
        return bool(created)

    async def exists(self, iid: str) -> bool:
        return bool(await self.redis.exists(self._meta(iid)))

    async def load(self, iid: str) -> Instance | None:
        meta = {text(k): text(v) for k, v in (await self.redis.hgetall(self._meta(iid))).items()}
        if not meta:
            return None
        history = [json.loads(text(e)) for e in await self.redis.lrange(self._history(iid), 0, -1)]
        return Instance(
            iid,
            meta["name"],
            meta["input"],
            meta["status"],
            history,
            meta.get("output"),
            meta.get("custom"),
            parent_id=meta.get("parent"),
            parent_task=int(meta["parent_task"]) if meta.get("parent_task") else None,
            generation=int(meta.get("generations", 0)),
        )

    async def append(
        self,
        iid: str,
        token: str,
        events: list[dict[str, Any]],
        *,
        due_at: float | None = None,
        final_status: str | None = None,
        output: str = "",
        custom_status: str = "",
    ) -> None:
        """Append events (and reschedule, or finish the instance) if we still hold its lease;
        `due_at` infinite means it waits for an external event."""
        if final_status:
            due = ""
        elif due_at is not None and due_at == float("inf"):
            due = "+inf"
        else:
            due = f"{due_at if due_at is not None else 0:.3f}"
        ok = await self.redis.eval(
            _APPEND,
            6,
            self._lease(iid),
            self._history(iid),
            self.due_key,
            self._meta(iid),
            self.failed_key,
            self._inbox(iid),
            token,
            iid,
            due,
            final_status or "",
            output,
            f"{time.time():.3f}",
            custom_status,
            *[json.dumps(e) for e in events],
        )
        if not ok:
            raise LeaseLost(iid)

    async def take_inbox(self, iid: str, token: str) -> int:
        """Move raised events into the history (lease holder only); how many there were."""
        moved = await self.redis.eval(
            _TAKE_INBOX, 3, self._lease(iid), self._inbox(iid), self._history(iid), token
        )
        if moved is None:
            raise LeaseLost(iid)
        return int(moved)

    async def raise_event(self, iid: str, event: dict[str, Any]) -> bool:
        """Queue an external event for a running instance and make it due; False if it is not running."""
        return bool(
            await self.redis.eval(
                _RAISE, 3, self._meta(iid), self._inbox(iid), self.due_key, iid, json.dumps(event)
            )
        )

    async def notify_parent(self, parent_id: str, child_id: str, event: dict[str, Any]) -> bool:
        """Queue a sub-orchestration's end for its running parent, once per child; False when the
        parent is not running or was told already."""
        return bool(
            await self.redis.eval(
                _NOTIFY,
                4,
                self._meta(parent_id),
                self._inbox(parent_id),
                self.due_key,
                self._notified(parent_id),
                parent_id,
                child_id,
                json.dumps(event),
            )
        )

    async def restart(self, iid: str, token: str, input_json: str, events: list[dict[str, Any]]) -> None:
        """Continue-as-new: replace the history with `events` and the input with `input_json`."""
        ok = await self.redis.eval(
            _RESTART,
            4,
            self._lease(iid),
            self._history(iid),
            self._meta(iid),
            self.due_key,
            token,
            iid,
            input_json,
            *[json.dumps(e) for e in events],
        )
        if not ok:
            raise LeaseLost(iid)

    async def failed(self, limit: int = 1000) -> list[Instance]:
        """Failed instances not yet replayed, oldest first."""
        found = []
        for iid in await self.redis.zrange(self.failed_key, 0, limit - 1):
            instance = await self.load(text(iid))
            if instance is not None:
                found.append(instance)
        return found

    async def forget_failed(self, iid: str) -> bool:
        """Take a Failed instance off the list (it was replayed); its history stays until it expires."""
        return bool(await self.redis.zrem(self.failed_key, iid))

    async def due(self, now: float, limit: int = 20) -> list[str]:
        return [
            text(i) for i in await self.redis.zrangebyscore(self.due_key, "-inf", now, start=0, num=limit)
        ]

    async def next_due_at(self) -> float | None:
        first = await self.redis.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def acquire(self, iid: str, token: str, lease_ms: int) -> bool:
        return bool(await self.redis.set(self._lease(iid), token, nx=True, px=lease_ms))

    async def renew(self, iid: str, token: str, lease_ms: int) -> bool:
        return bool(await self.redis.eval(_RENEW, 1, self._lease(iid), token, lease_ms))

    async def release(self, iid: str, token: str) -> None:
        await self.redis.eval(_RELEASE, 1, self._lease(iid), token)
