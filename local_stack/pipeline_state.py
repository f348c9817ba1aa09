"""What a restart of `make dev` keeps, made consistent.

The Cosmos DB stand-in keeps its documents in memory (action results, dead letters): they are gone
after a restart. The local worker's orchestration instances live in Redis, which may outlive the
stack (a Redis that was already running is used as it is). An instance resumed after a restart would
read and write documents that no longer exist. So, before the worker starts against a fresh
stand-in, the instances go too, and every action that was still running is reported to its
conversation as failed, with the reason, so that no turn waits for it and nothing fails silently.

What outlives a restart (in Redis): conversations and their stream logs, the gateway's outbox, and
bus messages no worker has started yet (they run, from the start, once the worker is up). What does
not: results, dead letters and tickets (in the stand-ins' memory), and with them the orchestration
instances.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pydantic import ValidationError
from redis.exceptions import RedisError

from action_bus.local import RedisUpdateSink
from agent_contracts import ActionRequest
from agent_contracts.actions import ActionResult, ActionStatus, utcnow
from agent_contracts.redis_connection import AnyRedis, connect_from_env
from function_app.worker.instances import InstanceStore
from local_stack.errors import LocalStackError

log = logging.getLogger("local_stack")

RESTART_REASON = (
    "the local stack restarted while this action ran; its result store (the in-memory Cosmos DB stand-in) "
    "starts empty, so the action was stopped. Ask again to retry it"
)
SCAN_BATCH = 500


class PipelineStateError(LocalStackError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"the action pipeline's local state could not be cleared: {detail}")


@dataclass(frozen=True)
class Cleared:
    instances: int
    unfinished: int
    reported: int


async def clear(redis_url: str, *, updates_queue: str | None = None, prefix: str = "durable") -> Cleared:
    """Delete every orchestration instance and report the unfinished ones as failed; log what was done."""
    client = await connect_from_env(redis_url)
    try:
        cleared = await clear_with(client, updates_queue=updates_queue or "action-updates", prefix=prefix)
    except (RedisError, OSError) as exc:
        raise PipelineStateError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        await client.aclose()
    log.info(
        "the Cosmos DB stand-in starts empty, so the action pipeline's local state in Redis was cleared: "
        "%d orchestration instances deleted, %d of them unfinished, "
        "%d reported to their conversations as failed",
        cleared.instances,
        cleared.unfinished,
        cleared.reported,
    )
    return cleared


async def clear_with(redis: AnyRedis, *, updates_queue: str, prefix: str = "durable") -> Cleared:
    store = InstanceStore(redis, prefix)
    unfinished = [_text(member) for member in await redis.zrange(store.due_key, 0, -1)]
    sink = RedisUpdateSink(redis, updates_queue)
    reported = 0
    for instance_id in unfinished:
        instance = await store.load(instance_id)
        request = _request_of(instance_id, instance.input_json if instance else None)
        if request is None:
            continue
        failed = ActionResult.queued_for(request).model_copy(
            update={
                "status": ActionStatus.failed,
                "error": RESTART_REASON,
                "updated_at": utcnow(),
                "completed_at": utcnow(),
            }
        )
        await sink.publish_update(failed)
        reported += 1
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=SCAN_BATCH)]
    instances = sum(1 for key in keys if _text(key).endswith(":meta"))
    for start in range(0, len(keys), SCAN_BATCH):
        await redis.delete(*keys[start : start + SCAN_BATCH])
    return Cleared(instances=instances, unfinished=len(unfinished), reported=reported)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _request_of(instance_id: str, input_json: str | None) -> ActionRequest | None:
    if input_json is None:
        log.warning("orchestration %s had no stored input: deleted without a report", instance_id)
        return None
    try:
        return ActionRequest.model_validate(json.loads(input_json))
    except (ValueError, ValidationError) as exc:
        log.warning(
            "orchestration %s: its input is not an action request (%s): deleted without a report",
            instance_id,
            exc,
        )
        return None
