"""Redis down: /readyz says so (503), API calls answer a clear 503 JSON error, nothing crashes,
and the gateway recovers when Redis is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack import processes
from tests.gateway.conftest import StartGateway


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
    for method, path, kwargs in [
        ("POST", "/v1/conversations", {"json": {}}),
        ("GET", "/v1/conversations", {}),
        ("GET", f"/v1/conversations/{cid}", {}),
        ("POST", f"/v1/conversations/{cid}/messages", {"json": {"content": "hi"}}),
        ("GET", f"/v1/conversations/{cid}/events", {"headers": {"Accept": "text/event-stream"}}),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": "m", "messages": [{"role": "user", "content": "x"}]}},
        ),
    ]:
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
