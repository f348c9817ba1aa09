"""Smoke: one action through the local worker in-process."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from action_bus.local import RedisStreamsActionBus
from function_app.runtime import Runtime
from function_app.worker.service import Worker
from tests.function_app.helpers import make_request


async def test_smoke(runtime: Runtime, aredis: aioredis.Redis, backend: TestServer) -> None:
    """x"""
    bus = RedisStreamsActionBus(aredis, runtime.settings.servicebus_actions_queue)
    request = make_request()
    await bus.publish(request)
    worker = Worker(aredis, runtime)
    assert await worker.intake_once(0.1) == 1
    for _ in range(50):
        await worker.engine.run_due()
        got = await runtime.results.read(request.conversation_id, str(request.action_id))
        if got and got[0].status.is_final:
            break
        await asyncio.sleep(0.05)
    print(got)
    assert got[0].status.value == "succeeded"
