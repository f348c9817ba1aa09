"""Every limit is explicit, configurable, and answered with a clear status and a JSON error."""

from __future__ import annotations

import time

from streaming_gateway.keys import redis_key
from streaming_gateway.state import redis_keys
from tests.fixtures.gateway import Gateway, StartGateway
from tests.gateway.helpers import read_events
from tests.polling import eventually

SSE = {"Accept": "text/event-stream"}


async def error_of(response) -> dict:
    body = await response.json()
    return body["error"]


async def test_body_too_large_is_413(start_gateway: StartGateway) -> None:
    """A body over GATEWAY_MAX_BODY_BYTES is refused with 413 before it is parsed."""
    gateway = await start_gateway(GATEWAY_MAX_BODY_BYTES="2048")
    cid = await gateway.create_conversation()
    big = {"content": "x" * 4096}
    async with gateway.request("POST", f"/v1/conversations/{cid}/messages", json=big) as response:
        assert response.status == 413
        assert (await error_of(response))["code"] == "payload_too_large"
    chunked = b'{"content": "' + b"y" * 4096 + b'"}'

    async def body():
        yield chunked  # no Content-Length: the limit applies while reading

    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", data=body(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413


async def test_invalid_bodies_are_422_naming_the_field(start_gateway: StartGateway) -> None:
    """Missing, mistyped, unknown and too-long fields each get a 422 whose param names the field; a
    body that is not JSON is a 400 invalid_json."""
    gateway = await start_gateway(GATEWAY_MAX_MESSAGE_CHARS="10")
    cid = await gateway.create_conversation()
    cases = [
        ({"content": "x" * 11}, "content"),
        ({}, "content"),
        ({"content": 5}, "content"),
        ({"content": "ok", "colour": "red"}, "colour"),
        ({"content": ""}, "content"),
    ]
    for body, field in cases:
        async with gateway.request("POST", f"/v1/conversations/{cid}/messages", json=body) as response:
            assert response.status == 422, body
            assert (await error_of(response))["param"] == field, body
    async with gateway.request(
        "POST",
        f"/v1/conversations/{cid}/messages",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    ) as response:
        error = await error_of(response)
        assert response.status == 400 and error["param"] == "body" and error["code"] == "invalid_json"
    async with gateway.request(
        "POST", "/v1/conversations", json={"agent_config_version": "nope@123"}
    ) as response:
        assert response.status == 422 and (await error_of(response))["param"] == "agent_config_version"
    async with gateway.request("GET", "/v1/conversations?limit=0") as response:
        assert response.status == 422 and (await error_of(response))["param"] == "limit"


async def test_requests_per_minute_is_429_with_retry_after(start_gateway: StartGateway) -> None:
    """Past GATEWAY_RATE_LIMIT_PER_MINUTE a user gets 429 with Retry-After; other users are unaffected."""
    gateway = await start_gateway(GATEWAY_RATE_LIMIT_PER_MINUTE="3")
    for attempt in range(3):  # a minute boundary inside the burst resets the window: try again
        user = f"burst-{attempt}"
        window = int(time.time() // 60)
        statuses = []
        for _ in range(4):
            async with gateway.request("GET", "/v1/conversations", user=user) as response:
                statuses.append(response.status)
                if response.status == 429:
                    retry_after = int(response.headers["Retry-After"])
                    error = await error_of(response)
        if int(time.time() // 60) == window:
            break
    assert statuses == [200, 200, 200, 429]
    assert 1 <= retry_after <= 61
    assert error["code"] == "rate_limited"
    async with gateway.request("GET", "/v1/conversations", user="someone-else") as response:
        assert response.status == 200
    assert gateway.metric("gateway_rate_limit_rejections_total", {"limit": "requests_per_minute"}) == 1


async def test_requests_past_the_limit_cost_no_redis_command(start_gateway: StartGateway) -> None:
    """Once over the limit, a user's further requests in that minute are refused by the pod itself:
    the window's counter in Redis stops at the limit plus one, however long the flood."""
    gateway = await start_gateway(GATEWAY_RATE_LIMIT_PER_MINUTE="3")
    redis = gateway.app[redis_key]
    for attempt in range(3):  # a minute boundary inside the burst starts a new window: try again
        user = f"flood-{attempt}"
        window = int(time.time() // 60)
        statuses = []
        for _ in range(30):
            async with gateway.request("GET", "/v1/conversations", user=user) as response:
                statuses.append(response.status)
        if int(time.time() // 60) == window:
            break
    assert statuses == [200] * 3 + [429] * 27
    counted = await redis.get(redis_keys.user_rate(user, window))
    assert counted is not None and int(counted) == 4
    assert gateway.metric("gateway_rate_limit_rejections_total", {"limit": "requests_per_minute"}) >= 27


async def test_concurrent_streams_per_user_is_429(start_gateway: StartGateway) -> None:
    """With GATEWAY_MAX_STREAMS_PER_USER=1 a second open stream is 429; closing the first frees it."""
    gateway = await start_gateway(GATEWAY_MAX_STREAMS_PER_USER="1")
    cid = await gateway.create_conversation()
    first = await gateway.request("GET", f"/v1/conversations/{cid}/events", headers=SSE)
    assert first.status == 200
    await first.content.readuntil(b"\n\n")  # the opening keep-alive: the stream is established
    async with gateway.request("GET", f"/v1/conversations/{cid}/events", headers=SSE) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert (await error_of(response))["code"] == "rate_limited"
    async with gateway.request("GET", f"/v1/conversations/{cid}/events", headers=SSE, user="bob") as response:
        assert response.status == 404  # bob's own slot is free; the conversation is not his
    first.close()

    async def slot_free() -> bool:
        async with gateway.request(
            "GET", f"/v1/conversations/{cid}/events?until=end", headers=SSE
        ) as response:
            return response.status == 200

    await eventually(slot_free, "the stream slot to be released")
    assert gateway.metric("gateway_rate_limit_rejections_total", {"limit": "concurrent_streams"}) >= 1


async def test_messages_per_conversation_limit_is_409(start_gateway: StartGateway, script) -> None:
    """A conversation at GATEWAY_MAX_MESSAGES_PER_CONVERSATION takes no more messages (409)."""
    gateway = await start_gateway(GATEWAY_MAX_MESSAGES_PER_CONVERSATION="3")
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "one"}
    ) as response:
        assert response.status == 200
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "two"}
    ) as response:
        assert response.status == 409
        assert (await error_of(response))["code"] == "conversation_full"


async def test_second_message_while_answering_is_409(gateway: Gateway, script) -> None:
    """Only one answer at a time per conversation: a message during an answer is 409 busy."""
    await script([{"match": "", "tokens": 2000, "token_delay_ms": 10}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as stream:
        await read_events(stream, stop_after=1)
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}
        ) as response:
            assert response.status == 409
            assert (await error_of(response))["code"] == "conversation_busy"


async def test_unknown_routes_and_methods_answer_json(gateway: Gateway) -> None:
    """404 and 405 from the router come back in the same JSON error shape."""
    async with gateway.request("GET", "/v1/nowhere") as response:
        assert response.status == 404 and "error" in await response.json()
    async with gateway.request("PUT", "/v1/conversations") as response:
        assert response.status == 405 and "error" in await response.json()
