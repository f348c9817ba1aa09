"""Bookkeeping of assistant steps that wait for action results, shared by every pod.

A step records its tool calls in order; each final action update stores that call's result; when
every call has one, exactly one pod wins the continuation guard (SET NX) and continues the model,
however many times an update is delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis, text_fields

# KEYS: step, results. ARGV: tool call id, content. Returns 1 once every call of the step has a result.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local expected = tonumber(redis.call('HGET', KEYS[1], 'expected'))
if redis.call('HLEN', KEYS[2]) >= expected then return 1 end
return 0
"""


@dataclass(frozen=True)
class PendingCall:
    tool_call_id: str
    name: str
    action_id: str


@dataclass(frozen=True)
class StepInfo:
    conversation_id: str
    step_id: str
    turn_id: str
    round: int
    tool_call_ids: list[str]


@dataclass(frozen=True)
class ActionInfo:
    conversation_id: str
    step_id: str
    tool_call_id: str
    name: str


class PendingSteps:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._record = redis.register_script(_RECORD)

    async def register(
        self,
        cid: str,
        step_id: str,
        turn_id: str,
        round_: int,
        calls: list[PendingCall],
        local_results: dict[str, str],
    ) -> None:
        """Record the step before any action is queued, so the fastest update finds it.

        Two steps: the step (its conversation's hash slot, atomic), then each action's pointer to
        it (a key of its own; on a cluster spread over the nodes). A crash between queues nothing,
        so an unfinished registration only expires."""
        step_key, results_key = redis_keys.step(cid, step_id), redis_keys.step_results(cid, step_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                step_key,
                mapping={
                    "turn_id": turn_id,
                    "round": round_,
                    "expected": len(calls),
                    "calls": json.dumps([call.tool_call_id for call in calls]),
                },
            )
            pipe.expire(step_key, self._ttl_s)
            for call in calls:
                if call.tool_call_id in local_results:
                    pipe.hset(results_key, call.tool_call_id, local_results[call.tool_call_id])
            pipe.expire(results_key, self._ttl_s)
            await pipe.execute()
        queued = [call for call in calls if call.tool_call_id not in local_results]
        if not queued:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in queued:
                key = redis_keys.action(call.action_id)
                pipe.hset(
                    key,
                    mapping={
                        "conversation_id": cid,
                        "step_id": step_id,
                        "tool_call_id": call.tool_call_id,
                        "name": call.name,
                    },
                )
                pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def action(self, action_id: str) -> ActionInfo | None:
        fields = text_fields(await self._redis.hgetall(redis_keys.action(action_id)))
        if not fields:
            return None
        return ActionInfo(
            fields["conversation_id"], fields["step_id"], fields["tool_call_id"], fields["name"]
        )

    async def first_sighting(self, action_id: str, marker: str) -> bool:
        """True the first time this (status, attempt) of the action is seen: duplicates are dropped."""
        key = redis_keys.action_seen(action_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, marker)
            pipe.expire(key, self._ttl_s)
            added, _ = await pipe.execute()
        return bool(added)

    async def record_result(self, cid: str, step_id: str, tool_call_id: str, content: str) -> bool:
        """Store a final result; True when the step now has all of them."""
        done = await self._record(
            keys=[redis_keys.step(cid, step_id), redis_keys.step_results(cid, step_id)],
            args=[tool_call_id, content],
        )
        return int(done) == 1

    async def claim_continuation(self, cid: str, step_id: str) -> bool:
        return bool(
            await self._redis.set(redis_keys.step_continued(cid, step_id), "1", nx=True, ex=self._ttl_s)
        )

    async def info(self, cid: str, step_id: str) -> StepInfo | None:
        fields = text_fields(await self._redis.hgetall(redis_keys.step(cid, step_id)))
        if not fields:
            return None
        return StepInfo(cid, step_id, fields["turn_id"], int(fields["round"]), json.loads(fields["calls"]))

    async def results(self, cid: str, step_id: str) -> dict[str, str]:
        return text_fields(await self._redis.hgetall(redis_keys.step_results(cid, step_id)))
