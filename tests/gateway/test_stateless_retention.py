"""A chat completion without X-Conversation-Id keeps its conversation, messages and log only
GATEWAY_STATELESS_TTL_SECONDS after its answer; enough to read it, resume it and rate it."""

from __future__ import annotations

from functools import partial

import openai

from streaming_gateway.keys import redis_key
from streaming_gateway.state import redis_keys
from tests.fixtures.gateway import Gateway, StartGateway, make_token
from tests.polling import eventually

STATELESS_TTL = 120
DAY = 24 * 3600


def sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url("/v1"), api_key=make_token(), max_retries=0)


async def ttls(gateway: Gateway, cid: str) -> list[int]:
    redis = gateway.app[redis_key]
    keys = (redis_keys.conversation(cid), redis_keys.messages(cid), redis_keys.event_log(cid))
    return [int(await redis.ttl(key)) for key in keys]


async def shortened(gateway: Gateway, cid: str) -> bool:
    return all(0 < ttl <= STATELESS_TTL for ttl in await ttls(gateway, cid))


async def stateless_call(gateway: Gateway, *, stream: bool) -> str:
    async with sdk(gateway) as client:
        if stream:
            streamed = await client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in streamed.parse() if c.choices])
            headers = streamed.headers
        else:
            answered = await client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": "hi"}]
            )
            text = answered.parse().choices[0].message.content or ""
            headers = answered.headers
    assert text == "short lived"
    return str(headers["X-Conversation-Id"])


async def test_stateless_call_is_kept_briefly_and_can_still_be_rated(
    start_gateway: StartGateway, script
) -> None:
    """Streamed or not, its keys are cut to the stateless TTL once answered; meanwhile the
    conversation reads whole and its answer takes feedback."""
    gateway = await start_gateway(GATEWAY_STATELESS_TTL_SECONDS=str(STATELESS_TTL))
    await script([{"match": "", "reply": "short lived"}])
    for stream in (False, True):
        cid = await stateless_call(gateway, stream=stream)
        await eventually(partial(shortened, gateway, cid), "the stateless TTL")
        async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
            messages = (await response.json())["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/feedback", json={"message_id": messages[1]["id"], "rating": 5}
        ) as response:
            assert response.status == 201, await response.text()
        async with gateway.request("GET", f"/v1/conversations/{cid}/events?after=0&until=end") as response:
            assert response.status == 200


async def test_naming_it_makes_it_ordinary_and_other_conversations_keep_their_ttls(
    start_gateway: StartGateway, script
) -> None:
    """A client that continues a stateless call's conversation by naming it gets the ordinary TTLs
    back, and answers in conversations started with the header or the conversation API are not cut."""
    gateway = await start_gateway(GATEWAY_STATELESS_TTL_SECONDS=str(STATELESS_TTL))
    await script([{"match": "", "reply": "short lived"}])
    cid = await stateless_call(gateway, stream=False)
    await eventually(lambda: shortened(gateway, cid), "the stateless TTL")
    async with sdk(gateway) as client:
        await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "again"}],
            extra_headers={"X-Conversation-Id": cid},
        )
    ordinary = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{ordinary}/messages", json={"content": "hi"}
    ) as response:
        assert response.status == 200
    # A later stateless answer is cut: the ends before it have been handled too.
    later = await stateless_call(gateway, stream=False)
    await eventually(lambda: shortened(gateway, later), "the stateless TTL")
    for kept in (cid, ordinary):
        conversation, messages, log = await ttls(gateway, kept)
        assert conversation > 29 * DAY and messages > 29 * DAY and log > DAY - 3600
