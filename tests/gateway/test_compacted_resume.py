"""Resuming a compacted answer over each transport: from before, inside and after the merged run the
client ends with the whole text once, in order, with rising ids (SSE, WebSocket, OpenAI API)."""

from __future__ import annotations

import openai

from streaming_gateway.keys import log_compactor_key
from tests.fixtures.gateway import Gateway, StartGateway, make_token
from tests.gateway.helpers import data, read_events, text_of
from tests.gateway.test_websocket import connect, frames_until_end
from tests.polling import eventually

SSE = {"Accept": "text/event-stream"}
WORDS = 12
TEXT = "".join(f"word{i} " for i in range(WORDS)).rstrip()


async def compacted_answer(gateway: Gateway, script) -> tuple[str, list[dict]]:
    """A finished 12-token answer, its events as first streamed, then its log compacted."""
    await script([{"match": "", "tokens": WORDS}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        streamed = [data(e) for e in await read_events(response)]
    assert [e["type"] for e in streamed] == ["token"] * WORDS + ["message_end"]
    result = await gateway.app[log_compactor_key].compact(cid)
    assert (result.status, result.merged) == (1, 1)
    return cid, streamed


def seen_before(streamed: list[dict], after: int) -> str:
    return "".join(e["text"] for e in streamed if e["type"] == "token" and e["id"] <= after)


async def test_sse_resume_before_inside_and_after_the_compacted_run(gateway: Gateway, script) -> None:
    """Last-Event-ID anywhere in a compacted answer: the text after it, once, then the same end."""
    cid, streamed = await compacted_answer(gateway, script)
    end = streamed[-1]
    for after in (0, 1, WORDS // 2, WORDS - 1, WORDS):
        async with gateway.request(
            "GET", f"/v1/conversations/{cid}/events?until=end", headers={**SSE, "Last-Event-ID": str(after)}
        ) as response:
            assert response.status == 200
            events = await read_events(response)
        assert seen_before(streamed, after) + text_of(events) == "".join(e.get("text", "") for e in streamed)
        ids = [e.number for e in events]
        assert ids == sorted(set(ids)) and all(i > after for i in ids)
        assert data(events[-1]) == end
        if after < WORDS:
            assert [e.type for e in events] == ["token", "message_end"] and ids[0] == WORDS


async def test_websocket_resume_inside_the_compacted_run(gateway: Gateway, script) -> None:
    """A resume frame naming an id inside the merged run gets only the rest of the text."""
    cid, streamed = await compacted_answer(gateway, script)
    async with await connect(gateway) as ws:
        for after in (0, 5, WORDS):
            await ws.send_json({"type": "resume", "conversation_id": cid, "after": after})
            frames = await frames_until_end(ws)
            assert frames[0] == {"type": "ack", "conversation_id": cid, "after": after}
            events = frames[1:]
            text = "".join(f["text"] for f in events if f["type"] == "token")
            assert seen_before(streamed, after) + text == TEXT
            assert events[-1] == streamed[-1]
            assert [f["id"] for f in events] == ([WORDS, WORDS + 1] if after < WORDS else [WORDS + 1])


async def test_web_client_replay_of_a_compacted_conversation(gateway: Gateway, script) -> None:
    """What the web client reads: the stored history names the last event id (it follows from there),
    and a replay from 0 gives the answer's text whole in one token event."""
    cid, _ = await compacted_answer(gateway, script)
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        stored = await response.json()
    assert stored["messages"][-1]["content"] == TEXT and stored["last_event_id"] == WORDS + 1
    async with gateway.request(
        "GET", f"/v1/conversations/{cid}/events?after=0&until=end", headers=SSE
    ) as response:
        events = await read_events(response)
    assert text_of(events) == TEXT and len(events) == 2


async def test_openai_api_turns_after_a_compacted_one(start_gateway: StartGateway, script) -> None:
    """With X-Conversation-Id, the next turns stream and answer whole while the earlier one is
    compacted; the history the model gets keeps every earlier answer."""
    gateway = await start_gateway(GATEWAY_LOG_COMPACT_DELAY_SECONDS="0")
    await script([{"match": "", "tokens": WORDS}])
    client = openai.AsyncOpenAI(base_url=gateway.url("/v1"), api_key=make_token(), max_retries=0)
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "one"}]
        )
        cid = raw.headers["X-Conversation-Id"]
        assert raw.parse().choices[0].message.content == TEXT
        for turn in range(3):
            # Each ended answer is compacted at once (delay 0): the next turn's stream races it.
            stream = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": f"next {turn}"}],
                stream=True,
                extra_headers={"X-Conversation-Id": cid},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == TEXT
            reply = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": f"plain {turn}"}],
                extra_headers={"X-Conversation-Id": cid},
            )
            assert reply.choices[0].message.content == TEXT

    async def compacted() -> bool:
        async with gateway.request(
            "GET", f"/v1/conversations/{cid}/events?after=0&until=end", headers=SSE
        ) as r:
            return len(await read_events(r)) == 2

    # The first answer's events, replayed from 0: one merged token and its end.
    await eventually(compacted, "the first answer compacted")
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        stored = await response.json()
    answers = [m["content"] for m in stored["messages"] if m["role"] == "assistant"]
    assert answers == [TEXT] * 7
