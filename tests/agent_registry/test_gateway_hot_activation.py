"""The gateway serves the registry's active config: seeded from its file on a fresh Redis,
switched by an activation without a restart, while old conversations keep their version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from agent_registry import AgentRegistry, read_document, version_of
from streaming_gateway.app import create_app
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from tests.agent_registry.conftest import DEFAULT_CONFIG
from tests.fixtures.services import ON_BOTH
from tests.polling import eventually

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH

SECRET = "registry-tests-secret-0123456789abcdef-xyz"


def _headers(**claims: Any) -> dict[str, str]:
    now = int(time.time())
    return {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "alice", "iat": now, "exp": now + 600, **claims}, SECRET, algorithm="HS256")
    }


@pytest.fixture
async def gateway(
    redis_url: str, upstream_base_url: str
) -> AsyncIterator[tuple[str, aiohttp.ClientSession, GatewayMetrics]]:
    metrics = GatewayMetrics()
    settings = Settings.from_env(
        {
            "AUTH_JWT_SECRET": SECRET,
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": upstream_base_url,
            "OPENAI_API_KEY": "scripted",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    server = TestServer(create_app(settings, metrics), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(headers=_headers()) as session:
        yield str(server.make_url("")).rstrip("/"), session, metrics
    await server.close()


async def _create(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None, **body: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/v1/conversations", json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_fresh_registry_is_seeded_from_the_file(gateway, aredis: aioredis.Redis) -> None:
    """On an empty Redis the first conversation publishes and activates AGENT_CONFIG_PATH."""
    base, session, metrics = gateway
    status, conversation = await _create(session, base)
    assert status == 201
    expected = version_of(read_document(DEFAULT_CONFIG))
    assert conversation["agent_config_version"] == expected
    assert await AgentRegistry(aredis).active_version("default") == expected
    assert metrics.registry.get_sample_value("gateway_agent_config_active", {"config_version": expected}) == 1


async def test_activation_switches_new_conversations_without_restart(gateway, aredis: aioredis.Redis) -> None:
    """After activate, new conversations get the new version; an old one keeps answering with its own."""
    base, session, _ = gateway
    _, old = await _create(session, base)
    registry = AgentRegistry(aredis)
    warmer, _ = await registry.publish(
        {**read_document(DEFAULT_CONFIG), "label": "warmer", "temperature": 0.9}
    )
    await registry.activate("default", warmer.version)

    async def on_the_new_version() -> bool:
        _, new = await _create(session, base)
        return bool(new["agent_config_version"] == warmer.version)

    # The gateway polls the registry's epoch about once a second.
    await eventually(on_the_new_version, "a new conversation on the activated version")

    async with session.post(
        f"{base}/v1/conversations/{old['id']}/messages", json={"content": "hello"}
    ) as response:
        answer = await response.json()
    assert answer["agent_config_version"] == old["agent_config_version"] != warmer.version


async def test_pinning_a_published_version_and_refusing_unknown_ones(gateway, aredis: aioredis.Redis) -> None:
    """An operator may pin any published version (others only the active one); an unpublished one is a 422."""
    base, session, _ = gateway
    registry = AgentRegistry(aredis)
    canary, _ = await registry.publish({**read_document(DEFAULT_CONFIG), "label": "canary"})
    status, body = await _create(session, base, agent_config_version=canary.version)
    assert status == 403 and body["error"]["code"] == "operator_role_required"
    operator = _headers(roles=["Agents.Operator"])
    status, conversation = await _create(session, base, operator, agent_config_version=canary.version)
    assert status == 201 and conversation["agent_config_version"] == canary.version
    status, body = await _create(session, base, agent_config_version="nope@000000000000")
    assert status == 422 and body["error"]["code"] == "unknown_agent_config"


async def test_two_gateways_seeding_at_once_agree(redis_url: str, aredis: aioredis.Redis, tmp_path) -> None:
    """Pods racing to seed an empty registry end with one active version, not one each."""
    import json

    from agent_registry import RegistryConfigStore

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**read_document(DEFAULT_CONFIG), "label": "other"}))
    registry = AgentRegistry(aredis)
    stores = [
        RegistryConfigStore(registry, "default", seed_path=path, poll_interval_s=0)
        for path in (DEFAULT_CONFIG, other)
    ]
    first, second = await asyncio.gather(*(store.active() for store in stores))
    assert first.version == second.version == await registry.active_version("default")
