"""`/v1/models` lists the agents a caller may use, and `model` on chat completions picks one of them:
never an agent the caller may not use, whatever id they guess."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from agent_registry import AgentRegistry
from tests.fixtures.gateway import Gateway, upstream_stats
from tests.openai_compat import wire

ASK = [{"role": "user", "content": "hello"}]
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "agent_configs" / "default.json"


async def publish_other_agent(aredis: aioredis.Redis) -> str:
    """An agent `internal` with an active version, as another team would publish it."""
    document = {**json.loads(DEFAULT_CONFIG.read_text()), "agent": "internal", "label": "internal"}
    registry = AgentRegistry(aredis)
    record, _ = await registry.publish(document)
    await registry.activate("internal", record.version)
    return record.version


async def test_models_lists_the_gateway_agent(gateway: Gateway) -> None:
    """A signed-in user sees the gateway's agent as a model owned by the platform."""
    answer = await wire.get(gateway, "/v1/models")
    assert answer.status == 200
    assert [(m["id"], m["object"], m["owned_by"]) for m in answer.body["data"]] == [
        ("default", "model", "agent-platform")
    ]
    assert answer.body["data"][0]["created"] > 0


async def test_models_need_a_token(gateway: Gateway) -> None:
    """Without a token the model list is a 401, like every /v1 route."""
    assert (await wire.get(gateway, "/v1/models", user=None)).status == 401


async def test_other_agents_are_neither_listed_nor_usable(
    gateway: Gateway, aredis: aioredis.Redis, upstream: TestServer
) -> None:
    """An agent the caller may not use is not listed, is 404 model_not_found by id, and cannot answer."""
    await wire.get(gateway, "/v1/models")  # the gateway seeds its own agent on first use
    await publish_other_agent(aredis)
    listed = await wire.get(gateway, "/v1/models")
    assert [m["id"] for m in listed.body["data"]] == ["default"]
    assert (await wire.get(gateway, "/v1/models/internal")).body["error"]["code"] == "model_not_found"
    answer = await wire.post(gateway, {"model": "internal", "messages": ASK})
    assert answer.status == 404 and answer.body["error"]["code"] == "model_not_found"
    assert answer.body["error"]["param"] == "model"
    assert (await upstream_stats(upstream))["requests"] == []


async def test_unknown_model_is_404(gateway: Gateway, upstream: TestServer) -> None:
    """A model id that names no agent (an OpenAI model name, say) is 404 model_not_found; nothing is stored."""
    answer = await wire.post(gateway, {"model": "gpt-4o", "messages": ASK})
    assert answer.status == 404
    assert answer.body["error"] == {
        "message": "The model 'gpt-4o' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert "X-Conversation-Id" not in answer.headers
    assert (await upstream_stats(upstream))["requests"] == []


async def test_model_picks_the_agent_and_its_active_version(gateway: Gateway, aredis: aioredis.Redis) -> None:
    """The conversation a model id starts is pinned to that agent's active version."""
    answer = await wire.post(gateway, {"model": "default", "messages": ASK})
    cid = answer.headers["X-Conversation-Id"]
    active = await AgentRegistry(aredis).active_version("default")
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        assert (await response.json())["agent_config_version"] == active


async def test_conversation_of_another_agent_refuses_a_different_model(
    gateway: Gateway, aredis: aioredis.Redis
) -> None:
    """X-Conversation-Id with a model that is not the conversation's agent is a 400 on `model`."""
    answer = await wire.post(gateway, {"model": "default", "messages": ASK})
    cid = answer.headers["X-Conversation-Id"]
    again = await wire.post(gateway, {"model": "default", "messages": ASK}, **{"X-Conversation-Id": cid})
    assert again.status == 200, again.body
    wrong = await wire.post(gateway, {"model": "nope", "messages": ASK}, **{"X-Conversation-Id": cid})
    assert wrong.status == 404 and wrong.body["error"]["code"] == "model_not_found"
