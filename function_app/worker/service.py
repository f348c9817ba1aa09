"""The local worker's two loops: intake (bus messages -> started orchestrations, then ack) and
execution (advance due orchestrations). Run by `python -m function_app.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from action_bus.local import ACTIONS_GROUP
from action_bus.ports import BusUnavailable
from action_bus.redis_streams import REDIS_DOWN, StreamQueue
from function_app.app import build_app
from function_app.errors import OrchestrationStartFailed, StoreError
from function_app.runtime import Runtime
from function_app.starter import start_from_message
from function_app.worker.engine import Engine, RedisStarter, registered_functions
from function_app.worker.instances import InstanceStore

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.2


class Worker:
    def __init__(self, redis: aioredis.Redis, runtime: Runtime, *, consumer: str | None = None) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.queue = StreamQueue(
            redis,
            settings.servicebus_actions_queue,
            ACTIONS_GROUP,
            consumer,
            max_deliveries=settings.worker_max_deliveries,
            claim_idle_ms=settings.worker_claim_idle_ms,
        )
        self.store = InstanceStore(redis)
        orchestrators, activities = registered_functions(build_app())
        self.engine = Engine(self.store, orchestrators, activities, lease_ms=settings.worker_lease_ms)
        self.starter = RedisStarter(self.store)

    async def intake_once(self, wait_s: float = 1.0) -> int:
        """Start orchestrations for the messages waiting; each is acked only once its start is stored."""
        handled = 0
        for delivery in await self.queue.receive(10, wait_s):
            try:
                outcome = await start_from_message(
                    delivery.body, delivery.message_id, self.starter, self.runtime.dead_letters
                )
            except (OrchestrationStartFailed, StoreError) as exc:
                log.warning(
                    "message %s not started (delivery %d), left for redelivery: %s",
                    delivery.message_id,
                    delivery.delivery_count,
                    exc,
                )
                continue
            await self.queue.ack(delivery.delivery_id)
            handled += 1
            log.info("message %s: %s", delivery.message_id, outcome)
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._intake_loop(stop), self._execution_loop(stop))

    async def _intake_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.intake_once(wait_s=0.5)
            except (BusUnavailable, *REDIS_DOWN) as exc:
                log.warning("intake: redis unavailable (%s)", exc)
                await _sleep_or_stop(stop, 1.0)

    async def _execution_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                ran = await self.engine.run_due()
            except REDIS_DOWN as exc:
                log.warning("execution: redis unavailable (%s)", exc)
                ran = 0
            if not ran:
                await _sleep_or_stop(stop, IDLE_POLL_S)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
