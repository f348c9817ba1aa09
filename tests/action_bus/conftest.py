"""A second redis-server for the bus side, so a test can take the bus down while the outbox's
Redis stays up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from local_stack import processes


@pytest.fixture
def bus_redis_service(output_dir: Path, tmp_path: Path) -> Iterator[processes.Service]:
    service = processes.redis_server(data_dir=tmp_path, log_path=output_dir / "bus-redis.log")
    service.start()
    yield service
    service.stop()


@pytest.fixture
async def bus_redis(bus_redis_service: processes.Service) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{bus_redis_service.port}/0",
        decode_responses=True,
        socket_connect_timeout=1,
        socket_timeout=2,
    )
    yield client
    await client.aclose()
