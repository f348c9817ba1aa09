"""Orchestration instances kept in Redis: metadata, history, when each is next due, and a lease.

A finished instance is kept 7 days (as long as the outbox remembers an idempotency key), so a
message redelivered within that time still finds it and starts nothing.

Every history write checks the lease in the same Lua call, so a worker that lost its lease (it
stalled, another took over) can never append to an instance it no longer owns.

Each script touches one instance's keys only (its `{iid}` hash tag: one Redis Cluster slot); the
shared `due` and `failed` indexes are written in a second step. Interrupted between the two, an
instance is repaired by the next step that meets it: a create repeated by a redelivered start makes
a Running instance that is in no index due again, and a finished instance still found due is
taken off the index (`settle`) when the worker loads it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from action_bus.redis_streams import text
from agent_contracts.redis_connection import AnyRedis
from function_app.errors import LocalHostError

#: KEYS: meta, history; ARGV: name, input, created, parent id ('' = none), parent task id, events...
#: Returns 1 when created, else the existing instance's status.
_CREATE = """
if redis.call('HSETNX', KEYS[1], 'name', ARGV[1]) == 0 then return redis.call('HGET', KEYS[1], 'status') end
redis.call('HSET', KEYS[1], 'input', ARGV[2], 'status', 'Running', 'created', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'parent', ARGV[4], 'parent_task', ARGV[5]) end
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
return 1
"""

#: KEYS: lease, history, meta, inbox; ARGV: token, finished ('' = no, else 1), status, output, now,
#: custom status ('' = unchanged), events... Returns 0 when the lease is lost, else 1 + the number
#: of events waiting in the inbox (raised, or a sub-orchestration's end, while it ran): such an
#: instance stays due now, so none is overlooked.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 7, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], 'custom', ARGV[6]) end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[3], 'status', ARGV[3], 'output', ARGV[4], 'updated', ARGV[5])
  redis.call('EXPIRE', KEYS[3], 604800)
  redis.call('EXPIRE', KEYS[2], 604800)
end
return 1 + redis.call('LLEN', KEYS[4])
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

#: KEYS: meta, inbox; ARGV: event. Only a running instance takes events (the caller makes it due).
_RAISE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'Running' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

#: A sub-orchestration's end, told to its parent once (the parent's `notified` set remembers the
#: child). KEYS: parent meta, parent inbox, parent notified; ARGV: child id, event. Returns 1 when
#: queued now, 2 when queued before (the caller makes the parent due either way: a repeat after an
#: interruption repairs it), 0 when the parent is not running.
_NOTIFY = """
if redis.call('HGET', KEYS[1], 'status') ~= 'Running' then return 0 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 2 end
redis.call('EXPIRE', KEYS[3], 604800)
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

#: Continue-as-new: a fresh history with the new input. KEYS: lease, history, meta;
#: ARGV: token, input, events...
_RESTART = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[3], 'input', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'generations', 1)
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


class LeaseLost(LocalHostError):
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
            2,
            self._meta(iid),
            self._history(iid),
            name,
            input_json,
            f"{time.time():.3f}",
            parent[0] if parent else "",
            str(parent[1]) if parent else "",
            *[json.dumps(e) for e in first_events],
        )
        if created == 1:
            await self.redis.zadd(self.due_key, {iid: 0})
            return True
        if text(created) == "Running" and await self.redis.zscore(self.due_key, iid) is None:
            # A create interrupted before its second step (every Running instance is in `due`).
            await self.redis.zadd(self.due_key, {iid: 0}, nx=True)
        return False

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
        stamp = f"{time.time():.3f}"
        ok = await self.redis.eval(
            _APPEND,
            4,
            self._lease(iid),
            self._history(iid),
            self._meta(iid),
            self._inbox(iid),
            token,
            "1" if final_status else "",
            final_status or "",
            output,
            stamp,
            custom_status,
            *[json.dumps(e) for e in events],
        )
        if not ok:
            raise LeaseLost(iid)
        if final_status:
            await self.settle(iid, final_status, stamp)
            return
        waiting = int(ok) > 1
        # `+inf`: it waits for an external event (raise_event makes it due again).
        await self.redis.zadd(
            self.due_key, {iid: 0 if waiting else "+inf" if due_at == float("inf") else due_at or 0}
        )
        if not waiting and await self.redis.llen(self._inbox(iid)):
            # An event arrived between the script and the line above, and its own "due now" may
            # have come first: due now again (an event arriving after this check sets it itself).
            await self.redis.zadd(self.due_key, {iid: 0})

    async def settle(self, iid: str, status: str, stamp: str | None = None) -> None:
        """A finished instance leaves the due index; a Failed one is listed for the dead-letter
        command. Idempotent: the worker repeats it for a finished instance it still finds due."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if status == "Failed":
                pipe.zadd(self.failed_key, {iid: float(stamp or time.time())}, nx=True)
            pipe.zrem(self.due_key, iid)
            await pipe.execute()

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
        if not await self.redis.eval(_RAISE, 2, self._meta(iid), self._inbox(iid), json.dumps(event)):
            return False
        await self.redis.zadd(self.due_key, {iid: 0})
        return True

    async def notify_parent(self, parent_id: str, child_id: str, event: dict[str, Any]) -> bool:
        """Queue a sub-orchestration's end for its running parent, once per child; False when the
        parent is not running or was told already."""
        told = int(
            await self.redis.eval(
                _NOTIFY,
                3,
                self._meta(parent_id),
                self._inbox(parent_id),
                self._notified(parent_id),
                child_id,
                json.dumps(event),
            )
        )
        if told:
            await self.redis.zadd(self.due_key, {parent_id: 0})
        return told == 1

    async def restart(self, iid: str, token: str, input_json: str, events: list[dict[str, Any]]) -> None:
        """Continue-as-new: replace the history with `events` and the input with `input_json`."""
        ok = await self.redis.eval(
            _RESTART,
            3,
            self._lease(iid),
            self._history(iid),
            self._meta(iid),
            token,
            input_json,
            *[json.dumps(e) for e in events],
        )
        if not ok:
            raise LeaseLost(iid)
        await self.redis.zadd(self.due_key, {iid: 0})

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
