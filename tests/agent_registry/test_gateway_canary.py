"""Canaries in the gateway: two gateway apps on one Redis split new conversations the same way,
follow rollout changes without a restart, keep each conversation on its version, and (when the
setting is on) abort a worse candidate from the background analysis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from agent_registry import AgentRegistry, read_document
from agent_registry.canary import analyze, render
from agent_registry.registry import Rollout
from observability.online import OnlineMetrics
from streaming_gateway.app import create_app
from streaming_gateway.settings import Settings
from tests.agent_registry.conftest import DEFAULT_CONFIG
from tests.polling import eventually

SECRET = "canary-tests-secret-0123456789abcdef-xyz"


def _headers() -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def _pods(
    stack: AsyncExitStack, redis_url: str, upstream_base_url: str, n: int, **extra: str
) -> list[tuple[str, aiohttp.ClientSession]]:
    pods = []
    for _ in range(n):
        settings = Settings.from_env(
            {
                "AUTH_JWT_SECRET": SECRET,
                "REDIS_URL": redis_url,
                "OPENAI_BASE_URL": upstream_base_url,
                "OPENAI_API_KEY": "scripted",
                "GATEWAY_SHUTDOWN_GRACE_SECONDS": "1",
                "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
                **extra,
            }
        )
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        stack.push_async_callback(server.close)
        session = await stack.enter_async_context(aiohttp.ClientSession(headers=_headers()))
        pods.append((str(server.make_url("")).rstrip("/"), session))
    return pods


async def _create(pod: tuple[str, aiohttp.ClientSession]) -> dict[str, Any]:
    base, session = pod
    async with session.post(f"{base}/v1/conversations", json={}) as response:
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        return body


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _stable_and_candidate(
    pod: tuple[str, aiohttp.ClientSession], aredis: aioredis.Redis
) -> tuple[str, str]:
    stable = (await _create(pod))["agent_config_version"]  # seeds the registry from the file
    candidate, _ = await AgentRegistry(aredis).publish({**read_document(DEFAULT_CONFIG), "label": "cand"})
    return stable, candidate.version


async def test_two_pods_split_new_conversations_alike_and_keep_them(
    redis_url: str, upstream_base_url: str, aredis: aioredis.Redis, stack: AsyncExitStack
) -> None:
    """At 50 % both pods give each new conversation the version its id hashes to; after abort new
    conversations are stable again, and a candidate conversation keeps answering with the candidate."""
    pods = await _pods(stack, redis_url, upstream_base_url, 2)
    stable, candidate = await _stable_and_candidate(pods[0], aredis)
    registry = AgentRegistry(aredis)
    await registry.start_rollout("default", candidate, 50)
    split = Rollout("default", candidate, stable, 50.0, "t", "t")

    async def both_pods_split() -> bool:
        created = [await _create(pod) for pod in pods for _ in range(6)]
        return any(c["agent_config_version"] == candidate for c in created[:6]) and any(
            c["agent_config_version"] == candidate for c in created[6:]
        )

    await eventually(both_pods_split, "both pods to pick up the rollout")  # epoch polled about once a second
    created = [await _create(pods[i % 2]) for i in range(80)]
    for conversation in created:
        assert conversation["agent_config_version"] == split.version_for(conversation["id"])
    on_candidate = [c for c in created if c["agent_config_version"] == candidate]
    assert 20 <= len(on_candidate) <= 60

    await registry.abort_rollout("default", reason="test")

    async def all_stable() -> bool:
        fresh = [await _create(pod) for pod in pods for _ in range(3)]
        return all(c["agent_config_version"] == stable for c in fresh)

    await eventually(all_stable, "both pods to pick up the abort")
    base, session = pods[1]
    async with session.post(
        f"{base}/v1/conversations/{on_candidate[0]['id']}/messages", json={"content": "hello"}
    ) as response:
        answer = await response.json()
    assert answer["agent_config_version"] == candidate  # sticky: the conversation kept its version


async def test_background_analysis_aborts_a_worse_candidate_once(
    redis_url: str, upstream_base_url: str, aredis: aioredis.Redis, stack: AsyncExitStack
) -> None:
    """With GATEWAY_CANARY_ANALYSIS_SECONDS set on two pods, a candidate with many more errors is
    aborted by one analysis; the log shows one abort by canary-analysis."""
    pods = await _pods(stack, redis_url, upstream_base_url, 2, GATEWAY_CANARY_ANALYSIS_SECONDS="0.2")
    stable, candidate = await _stable_and_candidate(pods[0], aredis)
    registry = AgentRegistry(aredis)
    await registry.start_rollout("default", candidate, 10)
    online = OnlineMetrics(aredis)
    for i in range(120):
        await online.record_stream(stable, ttft_s=0.2, tokens=10)
        await online.record_stream(candidate, ttft_s=0.2, error_kind="upstream_error" if i % 4 == 0 else None)

    async def aborted() -> bool:
        return await registry.rollout("default") is None

    await eventually(aborted, "the background analysis to abort the rollout")
    entries = await registry.activation_log("default")
    aborts = [e for e in entries if e["action"] == "abort"]
    assert len(aborts) == 1 and aborts[0]["actor"] == "canary-analysis"
    assert "error_rate" in aborts[0]["reason"]
    [analysis, *_] = await registry.analyses("default")
    assert analysis["decision"] == "abort" and analysis["candidate"] == candidate


def test_analysis_setting_is_validated() -> None:
    """A negative interval fails at start naming the variable."""
    from agent_contracts.settings import SettingsError

    with pytest.raises(SettingsError, match="GATEWAY_CANARY_ANALYSIS_SECONDS"):
        Settings.from_env({"AUTH_JWT_SECRET": SECRET, "GATEWAY_CANARY_ANALYSIS_SECONDS": "-1"})
    assert Settings.from_env({"AUTH_JWT_SECRET": SECRET}).canary_analysis_interval_s == 0


async def test_pinned_conversations_stay_out_of_the_canary_samples(
    redis_url: str, upstream_base_url: str, aredis: aioredis.Redis, stack: AsyncExitStack
) -> None:
    """An operator's conversation pinned to the candidate (an evaluation run during the rollout):
    its answer and its rating leave the candidate's analysis samples where they were and are
    counted apart; a user's conversation the split put on the candidate moves them."""
    [pod] = await _pods(stack, redis_url, upstream_base_url, 1)
    stable, candidate = await _stable_and_candidate(pod, aredis)
    registry, online = AgentRegistry(aredis), OnlineMetrics(aredis)
    await registry.start_rollout("default", candidate, 50)
    base, user = pod
    now = int(time.time())
    operator_token = jwt.encode(
        {"sub": "eval-bot", "roles": ["Agents.Operator"], "iat": now, "exp": now + 600}, SECRET, "HS256"
    )
    operator = await stack.enter_async_context(
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {operator_token}"})
    )

    async def turn_and_rating(session: aiohttp.ClientSession, cid: str) -> None:
        async with session.post(f"{base}/v1/conversations/{cid}/messages", json={"content": "hello"}) as r:
            answer = await r.json()
            assert r.status == 200 and answer["agent_config_version"] == candidate, answer
        async with session.post(
            f"{base}/v1/conversations/{cid}/feedback", json={"message_id": answer["message_id"], "rating": 1}
        ) as r:
            assert r.status == 201, await r.text()

    async def samples() -> dict[str, tuple[int, int]]:
        result = await analyze(registry, online, "default", apply=False)
        return {m.metric: m.samples for m in result.metrics}

    before = await samples()
    async with operator.post(f"{base}/v1/conversations", json={"agent_config_version": candidate}) as r:
        pinned = await r.json()
        assert r.status == 201 and pinned["pinned"] is True, pinned
    await turn_and_rating(operator, pinned["id"])

    async def counted_apart() -> bool:
        m = (await online.many([candidate]))[0]
        return m.pinned_streams == 1 and m.pinned_feedback_count == 1

    await eventually(counted_apart, "the pinned turn to be counted apart")
    assert await samples() == before
    shown = await analyze(registry, online, "default", apply=False)
    assert shown.pinned_streams == (0, 1) and "not counted: 0/1 answers" in render(shown)
    assert (await online.many([candidate]))[0].summary()["streams"] == 0

    async def split_onto_candidate() -> dict[str, Any] | None:
        created = await _create(pod)
        return created if created["agent_config_version"] == candidate else None

    chosen = await eventually(split_onto_candidate, "a user's conversation on the candidate")
    assert "pinned" not in chosen
    await turn_and_rating(user, chosen["id"])

    async def counted() -> bool:
        now_samples = await samples()
        return now_samples["error_rate"][1] == before["error_rate"][1] + 1

    await eventually(counted, "the user's turn to reach the candidate's samples")
    after = await samples()
    assert after["feedback_mean"][1] == before["feedback_mean"][1] + 1
    assert after["ttft_p95_ms"][1] == before["ttft_p95_ms"][1] + 1
    assert after["error_rate"][0] == before["error_rate"][0]  # nothing reached stable
    assert stable != candidate
