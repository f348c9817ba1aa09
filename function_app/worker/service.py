"""The local worker's two loops: intake (bus messages -> started orchestrations, then ack) and
execution (advance due orchestrations). Run by `python -m function_app.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from action_bus.local import ACTIONS_GROUP
from action_bus.ports import BusUnavailable
from action_bus.redis_streams import REDIS_DOWN, Delivery, StreamQueue
from agent_contracts.redis_connection import AnyRedis
from function_app.accept import accept_message
from function_app.app import build_app
from function_app.errors import OrchestrationStartFailed, StoreError
from function_app.orchestration import ORCHESTRATOR_VERSION
from function_app.runtime import Runtime
from function_app.worker.engine import Engine, RedisStarter, registered_functions
from function_app.worker.instances import InstanceStore

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.2


class Worker:
    def __init__(
        self,
        redis: AnyRedis,
        runtime: Runtime,
        *,
        consumer: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.sleep = sleep
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
        self.engine = Engine(
            self.store,
            orchestrators,
            activities,
            lease_ms=settings.worker_lease_ms,
            version=ORCHESTRATOR_VERSION,
        )
        self.starter = RedisStarter(self.store, ORCHESTRATOR_VERSION)

    async def intake_once(self, wait_s: float = 1.0) -> int:
        """Start orchestrations for the messages waiting, concurrently; each is completed once its
        start is stored (or re-sent for later), and abandoned, as the Functions host does when the
        trigger raises, only when every back-off is spent."""
        deliveries = await self.queue.receive(10, wait_s)
        outcomes = await asyncio.gather(*(self._accept(delivery) for delivery in deliveries))
        return sum(outcomes)

    async def _accept(self, delivery: Delivery) -> bool:
        try:
            outcome = await accept_message(
                delivery.body,
                delivery.message_id,
                delivery.properties,
                self.starter,
                self.runtime.dead_letters,
                self.runtime.scheduler,
                sleep=self.sleep,
            )
        except (OrchestrationStartFailed, StoreError) as exc:
            log.warning(
                "message %s not started (delivery %d), abandoned: %s",
                delivery.message_id,
                delivery.delivery_count,
                exc,
            )
            await self.queue.abandon(delivery.delivery_id)
            return False
        await self.queue.ack(delivery.delivery_id)
        log.info("message %s: %s", delivery.message_id, outcome)
        return True

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
                await self.engine.run_continuously(stop)
            except REDIS_DOWN as exc:
                log.warning("execution: redis unavailable (%s)", exc)
                await _sleep_or_stop(stop, IDLE_POLL_S)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
