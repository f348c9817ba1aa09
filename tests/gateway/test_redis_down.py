"""Redis down: /readyz says so (503), API calls answer a clear 503 JSON error, nothing crashes,
and the gateway recovers when Redis is back; an outbox that cannot take an action ends the turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from action_bus.factory import create_update_source
from action_bus.local import RedisStreamsActionBus
from action_bus.outbox import Outbox
from local_stack import processes
from streaming_gateway.app import create_app
from streaming_gateway.contexts import bus_ctx
from streaming_gateway.keys import outbox_key, redis_key, settings_key, update_source_key
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from tests.fixtures.gateway import Gateway, StartGateway


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[processes.Service]:
    """A Redis only this test uses, so stopping it disturbs no other test."""
    service = processes.redis_server(data_dir=tmp_path)
    service.start()
    yield service
    service.stop()


async def test_redis_down_gives_503_and_recovers(
    start_gateway: StartGateway, own_redis: processes.Service, script
) -> None:
    """Every Redis-backed call answers 503 state_unavailable while Redis is down; health stays up."""
    await script([{"match": "", "reply": "ok"}])
    gateway = await start_gateway(REDIS_URL=f"redis://127.0.0.1:{own_redis.port}/0")
    cid = await gateway.create_conversation()
    own_redis.stop()

    async with gateway.request("GET", "/readyz", user=None) as response:
        assert response.status == 503
        assert (await response.json())["checks"]["redis"].startswith("failing")
    async with gateway.request("GET", "/healthz", user=None) as response:
        assert response.status == 200
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/conversations", {"json": {}}),
        ("GET", "/v1/conversations", {}),
        ("GET", f"/v1/conversations/{cid}", {}),
        ("POST", f"/v1/conversations/{cid}/messages", {"json": {"content": "hi"}}),
        ("GET", f"/v1/conversations/{cid}/events", {"headers": {"Accept": "text/event-stream"}}),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": "default", "messages": [{"role": "user", "content": "x"}]}},
        ),
    ]
    for method, path, kwargs in requests:
        async with gateway.request(method, path, **kwargs) as response:
            assert response.status == 503, (method, path)
            assert response.headers["Retry-After"]
            error = (await response.json())["error"]
            assert error["code"] == "state_unavailable" and "unavailable" in error["message"]

    own_redis.start()  # without persistence: an empty Redis, as after a failover to a fresh node
    async with gateway.request("GET", "/readyz", user=None) as response:
        assert response.status == 200
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as response:
        assert response.status == 200
        assert (await response.json())["content"] == "ok"


def outbox_on(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """bus_ctx with the outbox (and its relay) on its own Redis at `url`: the gateway's state stays
    up while the outbox is down, the one failure this test is about."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=1)
        source = create_update_source(app[redis_key], app[settings_key])
        app[outbox_key] = Outbox(client, RedisStreamsActionBus(client, "actions"))
        app[update_source_key] = source
        yield
        await source.close()
        await client.aclose()

    return ctx


async def test_outbox_down_ends_the_turn_with_a_retryable_error_and_frees_the_conversation(
    gateway_env: dict[str, str], own_redis: processes.Service, script
) -> None:
    """The outbox's Redis is stopped when the model asks for an action: the answer ends at once with
    a retryable actions_unavailable error and message_end, and the next message is answered."""
    await script(
        [
            {
                "match": "ticket",
                "reply": "",
                "tool_calls": [
                    {"name": "create_ticket", "arguments": {"title": "Printer on fire", "priority": "high"}}
                ],
            },
            {"match": "", "reply": "ok"},
        ]
    )
    metrics = GatewayMetrics()
    app = create_app(Settings.from_env(gateway_env), metrics)
    app.cleanup_ctx[app.cleanup_ctx.index(bus_ctx)] = outbox_on(f"redis://127.0.0.1:{own_redis.port}/0")
    own_redis.stop()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        gateway = Gateway(server, session, metrics)
        cid = await gateway.create_conversation()
        async with asyncio.timeout(60):  # a regression hangs here until the turn timeout: fail instead
            async with gateway.request(
                "POST", f"/v1/conversations/{cid}/messages", json={"content": "open a ticket"}
            ) as response:
                assert response.status == 200
                answer = await response.json()
        assert answer["finish_reason"] == "error"
        assert answer["error"]["code"] == "actions_unavailable" and answer["error"]["retryable"] is True
        assert gateway.metric("gateway_stream_errors_total", {"kind": "actions_unavailable"}) == 1

        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}
        ) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["content"] == "ok"
    await server.close()
