"""Shared fixtures: real services on free loopback ports, started once per session.

The suite never uses the machine's own Redis (another project's data may live there): it starts
its own redis-server, flushed before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from local_stack import processes
from scripted_upstream import create_upstream_app

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


@pytest.fixture(scope="session")
def redis_service(output_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.Service]:
    service = processes.redis_server(
        data_dir=tmp_path_factory.mktemp("redis"), log_path=output_dir / "redis.log"
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture
def redis_url(redis_service: processes.Service) -> str:
    """URL of the suite's Redis, flushed for this test (restarted first if a test stopped it)."""
    redis_service.start()
    url = f"redis://127.0.0.1:{redis_service.port}/0"
    with redis.Redis.from_url(url) as client:
        client.flushall()
    return url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    """The scripted OpenAI-compatible upstream on a free port, reached over real HTTP."""
    server = TestServer(create_upstream_app(), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def upstream_base_url(upstream: TestServer) -> str:
    return str(upstream.make_url("/v1"))
