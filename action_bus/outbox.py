"""The gateway's outbox: an accepted action is in Redis before the client hears so, and a relay
moves it to the bus, retrying while the bus is down, so a bus outage loses nothing.

Accepted requests wait on a Redis stream with a consumer group ("relay"): with several gateway
pods each request goes to one relay; a relay that dies leaves its entries pending and another
reclaims them once idle. The rare re-publish after such a crash carries the same message id, so
the bus's duplicate detection drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from pydantic import ValidationError

from action_bus.ports import ActionBus, ActionBusError, BusUnavailable
from action_bus.redis_streams import REDIS_DOWN, Delivery, StreamQueue
from agent_contracts import ActionRequest
from agent_contracts.redis_connection import AnyRedis

log = logging.getLogger(__name__)

#: How long an idempotency key is remembered: a client retrying within it gets no second action.
ACCEPTED_KEY_TTL_S = 7 * 24 * 3600


class OutboxUnavailable(BusUnavailable):
    """The outbox's Redis could not be reached: the request was NOT accepted."""


class Outbox:
    def __init__(
        self,
        redis: AnyRedis,
        bus: ActionBus,
        *,
        name: str = "outbox",
        batch: int = 50,
        claim_idle_ms: int = 30_000,
        backoff_s: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.bus = bus
        self.queue = StreamQueue(
            redis,
            name,
            "relay",
            max_deliveries=None,
            claim_idle_ms=claim_idle_ms,
            dedup_window_s=ACCEPTED_KEY_TTL_S,
        )
        self.batch = batch
        self.backoff_s = backoff_s
        #: Counters for metrics and tests: publishes done, and attempts that found the bus down.
        self.published = 0
        self.bus_failures = 0

    async def accept(self, request: ActionRequest) -> bool:
        """Store the request durably; False when its idempotency key was already accepted."""
        return (await self.accept_all([request]))[0]

    async def accept_all(self, requests: list[ActionRequest]) -> list[bool]:
        """Store a step's requests durably in one write: all of them or, when Redis fails, none. A
        step half accepted would end in an error the client answers by sending the message again,
        and the model's new tool calls (new idempotency keys) would repeat the half already taken.
        Per request, False when its idempotency key was already accepted."""
        try:
            return await self.queue.send_all([(r.idempotency_key, r.to_json()) for r in requests])
        except BusUnavailable as exc:
            raise OutboxUnavailable(str(exc)) from exc

    async def pending(self) -> int:
        """Requests accepted and not yet on the bus."""
        return await self.queue.depth()

    async def run_relay(self, stop: asyncio.Event) -> None:
        """Publish accepted requests until `stop` is set; each entry leaves the outbox only once published."""
        delay = self.backoff_s[0]
        backlog: list[Delivery] = []
        while not stop.is_set():
            try:
                if not backlog:
                    backlog = await self.queue.receive(self.batch, wait_s=0.5)
                    continue
                await self._publish_backlog(backlog)
                delay = self.backoff_s[0]
            except BusUnavailable as exc:
                self.bus_failures += 1
                log.warning("outbox relay: bus unavailable (%s); retrying in %.1fs", exc, delay)
                await self._wait(stop, delay)
                delay = min(delay * 2, self.backoff_s[1])
                if backlog:
                    await self._keep(backlog)
            except REDIS_DOWN as exc:
                log.warning("outbox relay: redis unavailable (%s); retrying in %.1fs", exc, delay)
                await self._wait(stop, delay)
                delay = min(delay * 2, self.backoff_s[1])

    async def _publish_backlog(self, backlog: list[Delivery]) -> None:
        while backlog:
            delivery = backlog[0]
            try:
                request = ActionRequest.model_validate_json(delivery.body)
            except ValidationError as exc:
                await self.queue.dead_letter(delivery, f"unreadable outbox entry: {exc.error_count()} errors")
                backlog.pop(0)
                continue
            try:
                await self.bus.publish(request)
            except BusUnavailable:
                raise
            except ActionBusError as exc:  # refused for good (e.g. too large): keep it, visibly
                await self.queue.dead_letter(delivery, str(exc))
                backlog.pop(0)
                continue
            self.published += 1
            await self.queue.ack(delivery.delivery_id)
            backlog.pop(0)
            log.info("outbox relay: published action %s (%s)", request.action_id, request.name)

    async def _keep(self, backlog: list[Delivery]) -> None:
        """Still ours: reset idle time so other relays do not take entries we are about to retry."""
        with contextlib.suppress(*REDIS_DOWN):
            await self.queue.touch([d.delivery_id for d in backlog])

    @staticmethod
    async def _wait(stop: asyncio.Event, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay * (0.8 + 0.4 * random.random()))  # noqa: S311 (jitter)
