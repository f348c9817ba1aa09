"""Fixtures shared by the log tests of this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_contracts.redis_connection import AnyRedis, connect
from streaming_gateway.state.stream_log import StreamLog


@pytest.fixture
async def pod(aredis: AnyRedis) -> AsyncIterator[StreamLog]:
    """This pod's stream log (and so its hub)."""
    log = StreamLog(aredis, maxlen=10_000, ttl_s=600)
    yield log
    await log.close()


@pytest.fixture
async def other_pod(redis_url: str) -> AsyncIterator[StreamLog]:
    """Another pod's stream log: its own Redis client and hub; its appends reach this pod only via Redis."""
    client = await connect(redis_url, decode_responses=True)
    log = StreamLog(client, maxlen=10_000, ttl_s=600)
    yield log
    await log.close()
    await client.aclose()
