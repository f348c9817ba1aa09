"""One user can never read, write, follow, cancel or delete another user's conversation, on any
transport: REST, SSE, WebSocket, the OpenAI-compatible API. A foreign id answers exactly as an
unknown one does, so ids cannot be probed."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.fixtures.gateway import Gateway, make_token
from tests.gateway.helpers import read_events

SSE = {"Accept": "text/event-stream"}


async def bobs_answered_conversation(gateway: Gateway, script) -> str:
    await script([{"match": "", "reply": "bob's secret answer"}])
    cid = await gateway.create_conversation("bob")
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", user="bob", json={"content": "bob's secret"}
    ) as response:
        assert response.status == 200
    return cid


async def bobs_view(gateway: Gateway, cid: str) -> dict[str, Any]:
    async with gateway.request("GET", f"/v1/conversations/{cid}", user="bob") as response:
        assert response.status == 200
        return await response.json()


async def test_rest_and_sse_refuse_a_foreign_conversation_as_unknown(gateway: Gateway, script) -> None:
    """Read, list, post, follow (SSE), cancel, feedback and delete on bob's id are alice's 404s, the
    same body as an unknown id; bob's conversation is untouched."""
    cid = await bobs_answered_conversation(gateway, script)
    before = await bobs_view(gateway, cid)
    message_id = before["messages"][-1]["id"]
    attempts = [
        ("GET", "/v1/conversations/{}", None, {}),
        ("DELETE", "/v1/conversations/{}", None, {}),
        ("POST", "/v1/conversations/{}/messages", {"content": "mine now"}, {}),
        ("POST", "/v1/conversations/{}/messages", {"content": "mine now"}, SSE),
        ("GET", "/v1/conversations/{}/events", None, SSE),
        ("GET", "/v1/conversations/{}/events?after=0&until=end", None, SSE),
        ("POST", "/v1/conversations/{}/cancel", None, {}),
        ("POST", "/v1/conversations/{}/feedback", {"message_id": message_id, "rating": 1}, {}),
    ]
    for method, template, body, headers in attempts:
        seen = []
        for target in (cid, "conv_0000000000000000000000"):
            async with gateway.request(
                method, template.format(target), json=body, headers={**headers, "Last-Event-ID": "0"}
            ) as response:
                seen.append((response.status, (await response.json())["error"]["code"]))
        assert seen[0] == seen[1] and seen[0][0] == 404, (method, template, seen)
    async with gateway.request("GET", "/v1/conversations") as response:
        assert (await response.json())["data"] == []
    assert await bobs_view(gateway, cid) == before


async def test_websocket_refuses_a_foreign_conversation(gateway: Gateway, script) -> None:
    """Over alice's socket, message, resume and cancel frames naming bob's id are rejected 404 and
    no event of bob's is ever sent to her."""
    cid = await bobs_answered_conversation(gateway, script)
    before = await bobs_view(gateway, cid)
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with gateway.session.ws_connect(gateway.url("/v1/ws"), headers=headers) as ws:
        for frame in (
            {"type": "resume", "conversation_id": cid, "after": 0},
            {"type": "message", "conversation_id": cid, "content": "mine now"},
            {"type": "cancel", "conversation_id": cid},
        ):
            await ws.send_json(frame)
            reply = await ws.receive_json(timeout=10)
            assert reply["type"] == "rejected" and reply["status"] == 404, (frame, reply)
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}  # nothing of bob's came first
    assert await bobs_view(gateway, cid) == before


async def test_openai_api_refuses_a_foreign_conversation(gateway: Gateway, script) -> None:
    """X-Conversation-Id naming bob's conversation is a 404 to alice's SDK, streamed or not."""
    cid = await bobs_answered_conversation(gateway, script)
    before = await bobs_view(gateway, cid)
    async with openai.AsyncOpenAI(
        base_url=gateway.url("/v1"), api_key=make_token("alice"), max_retries=0
    ) as client:
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="any",
                    messages=[{"role": "user", "content": "what did bob say?"}],
                    extra_headers={"X-Conversation-Id": cid},
                    stream=stream,
                )
    assert await bobs_view(gateway, cid) == before


async def test_a_user_follows_only_their_own_stream(gateway: Gateway, script) -> None:
    """While bob's answer streams, alice's own SSE follow of her conversation carries only her events."""
    await script([{"match": "", "tokens": 30, "token_delay_ms": 5}])
    bob = await gateway.create_conversation("bob")
    alice = await gateway.create_conversation("alice")
    async with gateway.request(
        "POST",
        f"/v1/conversations/{bob}/messages",
        user="bob",
        json={"content": "go"},
        headers=SSE,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as bob_stream:
        async with gateway.request(
            "POST",
            f"/v1/conversations/{alice}/messages",
            json={"content": "go"},
            headers=SSE,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as alice_stream:
            alice_events = await read_events(alice_stream)
        bob_events = await read_events(bob_stream)
    assert {e.data.count(alice) for e in alice_events} == {1}
    assert {e.data.count(bob) for e in bob_events} == {1}
