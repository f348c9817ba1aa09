"""SSE: framing, keep-alives, ids, and exact resume after a drop, on the same or another pod."""

from __future__ import annotations

import json

from agent_contracts import parse_event
from tests.fixtures.gateway import Gateway, StartGateway, upstream_stats
from tests.gateway.helpers import data, read_events, text_of
from tests.gateway.sse_client import SseParser

SSE = {"Accept": "text/event-stream"}


async def test_message_streams_framed_events(gateway: Gateway, script) -> None:
    """The answer arrives as id/event/data frames whose data are contract events with the same id."""
    await script([{"match": "", "reply": "Hello there friend"}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=SSE
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Conversation-Id"] == cid
        raw = await response.read()  # the stream ends after the answer
    body = raw.decode()
    assert body.startswith("retry: 1000\n: connected\n\n")
    events = SseParser().feed(raw)
    assert [e.type for e in events] == ["token", "token", "token", "message_end"]
    assert [e.number for e in events] == [1, 2, 3, 4]
    first = events[0]
    assert f"id: 1\nevent: token\ndata: {first.data}\n\n" in body
    for event in events:
        parsed = parse_event(event.data)
        assert parsed.id == event.number and parsed.type == event.type and parsed.conversation_id == cid
    assert text_of(events) == "Hello there friend"
    end = data(events[-1])
    assert end["finish_reason"] == "stop" and end["agent_config_version"].startswith("default@")
    assert end["usage"]["completion_tokens"] == 3


async def test_keep_alive_comes_before_a_slow_first_token(start_gateway: StartGateway, script) -> None:
    """While the model has not answered yet, keep-alive comments flow (proxies see a live stream)."""
    gateway = await start_gateway(GATEWAY_HEARTBEAT_SECONDS="0.1")
    await script([{"match": "", "reply": "late", "first_token_delay_ms": 800}])
    cid = await gateway.create_conversation()
    parser = SseParser()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=SSE
    ) as response:
        comments_before_token = None
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                if event.type == "token" and comments_before_token is None:
                    comments_before_token = list(parser.comments)
    assert comments_before_token is not None
    assert comments_before_token[0] == "connected"
    assert "keep-alive" in comments_before_token


async def test_json_answer_without_event_stream(gateway: Gateway, script) -> None:
    """Without Accept: text/event-stream the same answer comes back as one JSON object."""
    await script([{"match": "", "reply": "All in one"}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["content"] == "All in one" and body["finish_reason"] == "stop"
    assert body["last_event_id"] == 4 and body["conversation_id"] == cid


async def test_resume_on_another_pod_gets_every_token_once(
    start_gateway: StartGateway, script, upstream
) -> None:
    """A client that drops mid-answer and resumes on another pod with Last-Event-ID misses nothing
    and sees nothing twice; the answer kept going meanwhile."""
    pod_a = await start_gateway(GATEWAY_ORPHAN_GRACE_SECONDS="30")
    pod_b = await start_gateway(GATEWAY_ORPHAN_GRACE_SECONDS="30")
    await script([{"match": "", "tokens": 60, "token_delay_ms": 15}])
    cid = await pod_a.create_conversation()
    async with pod_a.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        before = await read_events(response, stop_after=5)
    assert [e.number for e in before] == [1, 2, 3, 4, 5]
    async with pod_b.request(
        "GET", f"/v1/conversations/{cid}/events?until=end", headers={**SSE, "Last-Event-ID": before[-1].id}
    ) as response:
        assert response.status == 200
        after = await read_events(response)
    ids = [e.number for e in before + after]
    assert ids == list(range(1, len(ids) + 1))
    assert after[-1].type == "message_end" and data(after[-1])["finish_reason"] == "stop"
    assert text_of(before + after).split() == [f"word{i}" for i in range(60)]
    assert (await upstream_stats(upstream))["streams_cancelled"] == 0


async def test_events_replay_with_after_query(gateway: Gateway, script) -> None:
    """?after=N replays exactly the events after N (here: the whole finished answer)."""
    await script([{"match": "", "reply": "one two three"}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}
    ) as response:
        assert response.status == 200
    async with gateway.request(
        "GET", f"/v1/conversations/{cid}/events?after=2&until=end", headers=SSE
    ) as response:
        events = await read_events(response)
    assert [e.number for e in events] == [3, 4]
    assert [e.type for e in events] == ["token", "message_end"]


async def test_resume_from_unknown_event_id_is_refused(gateway: Gateway, script) -> None:
    """A Last-Event-ID beyond the log, or not a number, is a 422 naming the header."""
    cid = await gateway.create_conversation()
    for value in ("99", "abc"):
        async with gateway.request(
            "GET", f"/v1/conversations/{cid}/events", headers={**SSE, "Last-Event-ID": value}
        ) as response:
            assert response.status == 422
            assert (await response.json())["error"]["param"] == "Last-Event-ID"


async def test_second_message_continues_the_history(gateway: Gateway, script, upstream) -> None:
    """The model receives the agent's system prompt and the stored history with the new message."""
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    for content in ("first", "second"):
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": content}
        ) as r:
            assert r.status == 200
    sent = (await upstream_stats(upstream))["requests"][-1]["messages"]
    assert sent[0]["role"] == "system"
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "first"),
        ("assistant", "ok"),
        ("user", "second"),
    ]
    async with gateway.request("GET", f"/v1/conversations/{cid}/events?after=0&until=end", headers=SSE) as r:
        first_answer = await read_events(r)
    assert json.loads(first_answer[-1].data)["id"] == 2
