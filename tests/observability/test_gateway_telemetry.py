"""The gateway's observability end to end: one trace per turn down to the queued action, metrics
and online aggregates by config version, and the feedback endpoint. Real app factory, real
Redis, the scripted upstream over real HTTP, the SDK's in-memory span exporter."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from action_bus.local import RedisUpdateSink
from agent_contracts import ActionRequest, ActionResult, ActionStatus
from observability.online import OnlineMetrics
from streaming_gateway.app import create_app
from streaming_gateway.keys import online_key
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from tests.observability.span_fields import attribute, parent_span_id
from tests.polling import eventually
from tests.redis_reads import stream_entries

SECRET = "observability-tests-secret-0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def queued_request(aredis: aioredis.Redis, action_id: str) -> ActionRequest:
    """The action's request once the outbox relay has put it on the (local) action bus."""

    async def published() -> ActionRequest | None:
        for _, fields in await stream_entries(aredis, "bus:{actions}"):
            if action_id in fields["body"]:
                return ActionRequest.model_validate_json(fields["body"])
        return None

    return await eventually(published, "the action's request on the bus")


def _auth(user: str = "alice") -> dict[str, str]:
    now = int(time.time())
    return {
        "Authorization": "Bearer "
        + jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")
    }


class Client:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession, metrics: GatewayMetrics) -> None:
        self.server, self.session, self.metrics = server, session, metrics

    def request(self, method: str, path: str, user: str | None = "alice", **kwargs: Any) -> Any:
        headers = {**(_auth(user) if user else {}), **kwargs.pop("headers", {})}
        return self.session.request(method, str(self.server.make_url(path)), headers=headers, **kwargs)

    async def conversation(self) -> str:
        async with self.request("POST", "/v1/conversations", json={}) as response:
            assert response.status == 201
            return (await response.json())["id"]

    async def answer(self, cid: str, content: str, **headers: str) -> dict[str, Any]:
        """Send a message and wait for the step's JSON answer."""
        async with self.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": content}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    def metric(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def client(redis_url: str, upstream_base_url: str) -> AsyncIterator[Client]:
    metrics = GatewayMetrics()
    settings = Settings.from_env(
        {
            "AUTH_JWT_SECRET": SECRET,
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": upstream_base_url,
            "OPENAI_API_KEY": "scripted",
            "GATEWAY_ORPHAN_GRACE_SECONDS": "0",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    server = TestServer(create_app(settings, metrics), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Client(server, session, metrics)
    await server.close()


async def test_turn_is_one_trace_down_to_the_queued_action(
    client: Client, spans: InMemorySpanExporter, aredis: aioredis.Redis
) -> None:
    """Client traceparent -> HTTP span -> step -> model call and action queue; the ActionRequest on
    the bus names the queue span, so the function app continues the same trace."""
    cid = await client.conversation()
    spans.clear()
    answer = await client.answer(
        cid, "please open a ticket for my laptop", traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    )
    assert answer["finish_reason"] == "tool_calls"
    action_id = answer["tool_calls"][0]["action_id"]

    request = await queued_request(aredis, action_id)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    http = by_name["POST /v1/conversations/{conversation_id}/messages"]
    step, model = by_name["agent step"], by_name["chat gpt-4o-mini"]
    queue = by_name["action create_ticket queue"]
    assert {format(s.context.trace_id, "032x") for s in (http, step, model, queue)} == {TRACE_ID}
    assert parent_span_id(step) == http.context.span_id
    assert parent_span_id(model) == step.context.span_id and model.kind is SpanKind.CLIENT
    assert parent_span_id(queue) == step.context.span_id and queue.kind is SpanKind.PRODUCER
    assert attribute(step, "agent.config_version") == answer["agent_config_version"]
    _, trace_id, parent_id, _ = request.trace_context["traceparent"].split("-")
    assert trace_id == TRACE_ID and parent_id == format(queue.context.span_id, "016x")


async def test_metrics_and_online_aggregates_by_version(client: Client, aredis: aioredis.Redis) -> None:
    """A plain answer counts in TTFT, tokens and answers by version, in Prometheus and in Redis."""
    cid = await client.conversation()
    answer = await client.answer(cid, "hello there")
    version = answer["agent_config_version"]
    assert client.metric("gateway_time_to_first_token_seconds_count", {"config_version": version}) == 1
    assert client.metric("gateway_tokens_streamed_total", {"config_version": version}) > 0
    assert client.metric("gateway_answers_total", {"config_version": version, "outcome": "ok"}) == 1
    # The pod adds its answers up and writes them once a second: nothing in Redis until then.
    assert (await OnlineMetrics(aredis).get(version)).streams == 0
    batches = client.server.app[online_key].batches
    assert batches is not None
    await batches.flush()
    online = await OnlineMetrics(aredis).get(version)
    assert online.streams == 1 and online.ttft_count == 1 and online.error_rate == 0
    async with client.request("GET", "/metrics", user=None) as response:
        text = await response.text()
    assert f'gateway_answers_total{{config_version="{version}",outcome="ok"}} 1.0' in text
    assert "conversation" not in text.split("# HELP gateway_answers_total")[1].split("# HELP")[0]


async def test_action_outcome_is_counted_once_for_its_version(client: Client, aredis: aioredis.Redis) -> None:
    """A final status update (even delivered twice) counts one outcome for the asking version."""
    cid = await client.conversation()
    answer = await client.answer(cid, "open a ticket please")
    version, action_id = answer["agent_config_version"], answer["tool_calls"][0]["action_id"]

    queued = await queued_request(aredis, action_id)
    done = ActionResult.queued_for(queued).model_copy(
        update={"status": ActionStatus.succeeded, "attempts": 1, "result": {"ticket_id": "T-9"}}
    )
    sink = RedisUpdateSink(aredis)
    await sink.publish_update(done)
    await sink.publish_update(done)
    online = OnlineMetrics(aredis)

    async def counted() -> bool:
        return (await online.get(version)).actions_total >= 1

    await eventually(counted)
    assert (await online.get(version)).action_success_rate == 1.0
    assert (
        client.metric("gateway_action_outcomes_total", {"config_version": version, "outcome": "succeeded"})
        == 1
    )


async def test_a_pinned_conversations_action_outcome_is_counted_apart(
    client: Client, aredis: aioredis.Redis
) -> None:
    """A conversation created naming its version is pinned: its action's final outcome lands in
    pinned_action_succeeded, and the version's action success rate (a canary sample) is untouched."""
    async with client.request("POST", "/v1/conversations", json={}) as response:
        version = (await response.json())["agent_config_version"]
    async with client.request(
        "POST", "/v1/conversations", json={"agent_config_version": version}
    ) as response:
        created = await response.json()
        assert response.status == 201 and created["pinned"] is True, created
    answer = await client.answer(created["id"], "open a ticket please")
    action_id = answer["tool_calls"][0]["action_id"]

    queued = await queued_request(aredis, action_id)
    done = ActionResult.queued_for(queued).model_copy(
        update={"status": ActionStatus.succeeded, "attempts": 1, "result": {"ticket_id": "T-9"}}
    )
    await RedisUpdateSink(aredis).publish_update(done)
    online = OnlineMetrics(aredis)

    async def counted_apart() -> bool:
        return (await online.get(version)).counters.get("pinned_action_succeeded", 0) == 1

    batches = client.server.app[online_key].batches
    assert batches is not None
    await eventually(counted_apart, "the pinned conversation's outcome", tick=batches.flush)
    metrics = await online.get(version)
    assert metrics.actions_total == 0 and metrics.streams == 0 and metrics.pinned_streams == 1


async def test_feedback_is_recorded_for_the_answers_version(client: Client, aredis: aioredis.Redis) -> None:
    """POST feedback rates an answer; a second rating of it replaces the first."""
    cid = await client.conversation()
    answer = await client.answer(cid, "hello")
    body = {"message_id": answer["message_id"], "rating": 4, "comment": "good"}
    async with client.request("POST", f"/v1/conversations/{cid}/feedback", json=body) as response:
        assert response.status == 201
        assert (await response.json())["agent_config_version"] == answer["agent_config_version"]
    async with client.request(
        "POST", f"/v1/conversations/{cid}/feedback", json={**body, "rating": 2}
    ) as response:
        assert response.status == 200 and (await response.json())["replaced"] is True
    online = await OnlineMetrics(aredis).get(answer["agent_config_version"])
    assert online.feedback_count == 1 and online.feedback_mean == 2
    assert (
        client.metric(
            "gateway_feedback_total", {"config_version": answer["agent_config_version"], "rating": "4"}
        )
        == 1
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"rating": 6}, 422, "invalid_input"),
        ({"rating": "5"}, 422, "invalid_input"),
        ({"rating": 3, "comment": "x" * 2001}, 422, "invalid_input"),
        ({"rating": 3, "extra": 1}, 422, "invalid_input"),
        ({"rating": 3, "message_id": "msg_unknown"}, 404, "message_not_found"),
    ],
)
async def test_bad_feedback_is_refused(client: Client, body: dict[str, Any], status: int, code: str) -> None:
    """Out-of-range or mistyped ratings, long comments, unknown fields and messages get clear errors."""
    cid = await client.conversation()
    answer = await client.answer(cid, "hello")
    payload = {"message_id": answer["message_id"], **body}
    async with client.request("POST", f"/v1/conversations/{cid}/feedback", json=payload) as response:
        assert response.status == status
        assert (await response.json())["error"]["code"] == code


async def test_feedback_on_someone_elses_conversation_or_user_message(client: Client) -> None:
    """Another user's conversation is 404; a user message id is not an answer; no token is 401."""
    cid = await client.conversation()
    await client.answer(cid, "hello")
    async with client.request("GET", f"/v1/conversations/{cid}") as response:
        messages = (await response.json())["messages"]
    user_message = next(m["id"] for m in messages if m["role"] == "user")
    path = f"/v1/conversations/{cid}/feedback"
    async with client.request(
        "POST", path, user="mallory", json={"message_id": user_message, "rating": 1}
    ) as r:
        assert r.status == 404
    async with client.request("POST", path, json={"message_id": user_message, "rating": 1}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "message_not_found"
    async with client.request("POST", path, user=None, json={"message_id": user_message, "rating": 1}) as r:
        assert r.status == 401
