"""Gateway fixtures: the real app factory on a TestServer, wired to the suite's Redis and the
scripted upstream over real HTTP; tokens signed as a real identity provider would."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from streaming_gateway.app import create_app
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings

SECRET = "gateway-tests-secret-0123456789abcdef"


def make_token(user: str = "alice", *, secret: str = SECRET, ttl: int = 600, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + ttl, **claims}, secret, algorithm="HS256")


def auth(user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}"}


class Gateway:
    """A running gateway and an HTTP session to it."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession, metrics: GatewayMetrics) -> None:
        self.server = server
        self.session = session
        self.metrics = metrics
        self.app = server.app

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def request(self, method: str, path: str, user: str | None = "alice", **kwargs: Any) -> Any:
        headers = {**(auth(user) if user else {}), **kwargs.pop("headers", {})}
        return self.session.request(method, self.url(path), headers=headers, **kwargs)

    async def create_conversation(self, user: str = "alice") -> str:
        async with self.request("POST", "/v1/conversations", user, json={}) as response:
            assert response.status == 201, await response.text()
            return (await response.json())["id"]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def gateway_env(redis_url: str, upstream_base_url: str) -> dict[str, str]:
    return {
        "AUTH_JWT_SECRET": SECRET,
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": upstream_base_url,
        "OPENAI_API_KEY": "scripted",
        "GATEWAY_HEARTBEAT_SECONDS": "0.3",
        "GATEWAY_ORPHAN_GRACE_SECONDS": "0",
        "GATEWAY_SHUTDOWN_GRACE_SECONDS": "2",
    }


@pytest.fixture
async def start_gateway(gateway_env: dict[str, str]) -> AsyncIterator[StartGateway]:
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**overrides: str) -> Gateway:
        metrics = GatewayMetrics()
        settings = Settings.from_env({**gateway_env, **overrides})
        server = TestServer(create_app(settings, metrics), host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return Gateway(server, session, metrics)

    yield start
    for server, session in reversed(started):
        await session.close()
        await server.close()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
def script(upstream: TestServer) -> Callable[..., Awaitable[None]]:
    """Replace the scripted upstream's rules (over its real HTTP control endpoint)."""

    async def put(rules: list[dict[str, Any]], default_token_delay_ms: float = 0) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                str(upstream.make_url("/_control/script")),
                json={"rules": rules, "default_token_delay_ms": default_token_delay_ms},
            ) as response,
        ):
            assert response.status == 200, await response.text()

    return put


async def upstream_stats(upstream: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(str(upstream.make_url("/_control/stats"))) as response:
            return await response.json()
