"""A step's actions reach the outbox all or none: when the outbox's connection drops mid-step, the
client's retry (the error says to send the message again) does not leave a second copy of an action
the failed attempt had already accepted under the model's earlier tool-call ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from action_bus.factory import create_update_source
from action_bus.local import RedisStreamsActionBus
from action_bus.outbox import Outbox
from local_stack import processes
from streaming_gateway.app import create_app
from streaming_gateway.contexts import bus_ctx
from streaming_gateway.keys import outbox_key, redis_key, settings_key, update_source_key
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from tests.fixtures.gateway import Gateway
from tests.gateway.helpers import data, read_until
from tests.gateway.sse_client import SseParser

TWO_TICKETS = {
    "match": "tickets",
    "reply": "",
    "tool_calls": [
        {"name": "create_ticket", "arguments": {"title": "Printer on fire", "priority": "high"}},
        {"name": "create_ticket", "arguments": {"title": "Toner empty", "priority": "low"}},
    ],
}


class DropsOneOutboxWrite(aioredis.Redis):
    """A real Redis client whose connection drops (an injected ConnectionError) once, on the
    `drop_at`-th write to the outbox stream: with 2, between two writes if a step makes two."""

    outbox_writes = 0
    drop_at = 2

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "EVAL" and len(args) > 3 and args[3] == "bus:{outbox}" and "'NX'" in str(args[1]):
            type(self).outbox_writes += 1
            if type(self).outbox_writes == type(self).drop_at:
                raise RedisConnectionError("injected: connection dropped before the write")
        return await super().execute_command(*args, **options)


@pytest.fixture
def outbox_redis(tmp_path: Path) -> Iterator[processes.Service]:
    service = processes.redis_server(data_dir=tmp_path)
    service.start()
    yield service
    service.stop()


@pytest.mark.parametrize("drop_at", [1, 2])
async def test_a_retried_step_after_an_outbox_failure_accepts_each_action_once(
    gateway_env: dict[str, str], outbox_redis: processes.Service, script, drop_at: int
) -> None:
    """Two tool calls in one step; the outbox connection drops once, on its first or second write:
    after the client sends the message again whenever told to, exactly two actions were accepted."""
    await script([TWO_TICKETS])
    url = f"redis://127.0.0.1:{outbox_redis.port}/0"
    DropsOneOutboxWrite.outbox_writes, DropsOneOutboxWrite.drop_at = 0, drop_at

    async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
        client = DropsOneOutboxWrite.from_url(url, decode_responses=True)
        source = create_update_source(app[redis_key], app[settings_key])
        # The relay publishes to a bus with no consumer: the outbox's accepted keys stay countable.
        app[outbox_key] = Outbox(client, RedisStreamsActionBus(client, "actions"))
        app[update_source_key] = source
        yield
        await source.close()
        await client.aclose()

    app = create_app(Settings.from_env(gateway_env), GatewayMetrics())
    app.cleanup_ctx[app.cleanup_ctx.index(bus_ctx)] = outbox_ctx
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            gateway = Gateway(server, session, GatewayMetrics())
            cid = await gateway.create_conversation()
            endings = []
            for _ in range(3):
                async with asyncio.timeout(60):
                    async with gateway.request(
                        "POST",
                        f"/v1/conversations/{cid}/messages",
                        json={"content": "open two tickets"},
                        headers={"Accept": "text/event-stream"},
                    ) as response:
                        events = await read_until(response, SseParser(), lambda e, _: e.type == "message_end")
                endings.append(data(events[-1])["finish_reason"])
                if endings[-1] != "error":
                    break
    finally:
        await server.close()

    probe = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        accepted = [key async for key in probe.scan_iter("bus:{outbox}:dedup:*")]
    finally:
        await probe.aclose()
    assert endings == (["error", "tool_calls"] if drop_at == 1 else ["tool_calls"])
    assert len(accepted) == 2, (endings, accepted)
