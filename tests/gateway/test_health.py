"""Health and readiness: /healthz always, /readyz only while Redis answers."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from local_stack import processes
from streaming_gateway.app import create_app
from streaming_gateway.settings import Settings


def gateway_settings(redis_url: str) -> Settings:
    return Settings.from_env({"AUTH_JWT_SECRET": "x" * 32, "REDIS_URL": redis_url})


async def test_healthz_and_readyz_with_redis(redis_url: str) -> None:
    """Both answer 200 while Redis answers."""
    async with TestClient(TestServer(create_app(gateway_settings(redis_url)))) as client:
        assert (await client.get("/healthz")).status == 200
        response = await client.get("/readyz")
        assert response.status == 200
        assert (await response.json())["checks"]["redis"] == "ok"


async def test_readyz_503_when_redis_down() -> None:
    """With nothing answering on REDIS_URL, /readyz is 503 and names Redis; /healthz stays 200."""
    dead_url = f"redis://127.0.0.1:{processes.free_port()}/0"
    async with TestClient(TestServer(create_app(gateway_settings(dead_url)))) as client:
        assert (await client.get("/healthz")).status == 200
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["checks"]["redis"].startswith("failing")
