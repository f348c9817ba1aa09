"""The web client's own fixtures: the gateway as `make dev` runs it, and the local action worker.

The browser and its pages (`browser`, `page`, `phone_page`), the gateway fixtures and the function
app's (the Cosmos DB server, the sample tickets backend, the runtime) come from tests/fixtures
(pytest_plugins).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from function_app.runtime import Runtime
from function_app.worker.service import Worker
from tests.fixtures.gateway import Gateway, StartGateway


@pytest.fixture
async def web_gateway(start_gateway: StartGateway) -> Gateway:
    """The gateway with the local dev token endpoint enabled, as `make dev` runs it; an answer whose
    client dropped keeps going for 10 s (room to reconnect), as in production."""
    # Heartbeat 5 s (the gateway tests use 0.3 s): a pong late by more than half the heartbeat
    # closes the WebSocket, which a loaded CI machine's browser can be.
    return await start_gateway(
        GATEWAY_DEV_TOKEN_ENDPOINT="true", GATEWAY_ORPHAN_GRACE_SECONDS="10", GATEWAY_HEARTBEAT_SECONDS="5"
    )


@pytest.fixture
async def worker(runtime: Runtime, aredis: aioredis.Redis) -> AsyncIterator[Worker]:
    """The local action worker (the function app's orchestrator and activities) running in-process."""
    stop = asyncio.Event()
    running = Worker(aredis, runtime)
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, timeout=10)
