"""Back-to-back resume frames replace the socket's follower each time; the socket never wedges."""

from __future__ import annotations

import asyncio

from agent_contracts.redis_connection import AnyRedis
from streaming_gateway.state import redis_keys
from tests.fixtures.gateway import Gateway, StartGateway, make_token
from tests.polling import eventually


async def answered_conversation(gateway: Gateway, script) -> tuple[str, int]:
    await script([{"match": "", "reply": "one two three"}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as response:
        return cid, (await response.json())["last_event_id"]


async def test_back_to_back_resumes_leave_the_socket_answering(start_gateway: StartGateway, script) -> None:
    """200 resume frames sent without waiting, alternating replay and idle follow, each get their ack;
    the ping after them gets its pong, and only the last follower delivers events."""
    gateway = await start_gateway(GATEWAY_RATE_LIMIT_PER_MINUTE="100000", GATEWAY_HEARTBEAT_SECONDS="5")
    cid, last = await answered_conversation(gateway, script)
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with gateway.session.ws_connect(gateway.url("/v1/ws"), headers=headers) as ws:
        for round_ in range(200):
            await ws.send_json({"type": "resume", "conversation_id": cid, "after": last if round_ % 2 else 0})
        await ws.send_json({"type": "resume", "conversation_id": cid, "after": last - 1})
        await ws.send_json({"type": "ping"})
        acks = 0
        events: list[dict] = []
        async with asyncio.timeout(20):
            while True:
                frame = await ws.receive_json()
                if frame["type"] == "pong":
                    break
                if frame["type"] == "ack":
                    acks += 1
                    events.clear()  # a newer follower starts; only its events count
                elif frame["type"] != "rejected":
                    events.append(frame)
        assert acks == 201
        if not events:  # the last follower may not have sent its replay before the pong
            events.append(await ws.receive_json(timeout=10))
        assert [e["id"] for e in events] == [last]


async def test_a_cursor_far_past_the_log_is_refused_while_an_answer_owns_the_ids(
    gateway: Gateway, script, aredis: AnyRedis
) -> None:
    """While a producer owns the log's ids a resume may start a little past the log's last id (it may
    have shown entries whose append is in flight), but a made-up cursor far past it is refused, on
    SSE (422 naming the header) and on the WebSocket (rejected), instead of waiting for ids that
    never come."""
    await script([{"match": "", "reply": " ".join(f"w{n}" for n in range(200)), "token_delay_ms": 50}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={"content": "go"},
        headers={"Accept": "text/event-stream"},
    ) as answer:
        assert answer.status == 200
        await answer.content.readline()  # the answer is running

        async def owned() -> bool:
            return bool(await aredis.hexists(redis_keys.conversation(cid), "owner"))

        await eventually(owned, "the answer's writer owns the log's ids")
        far = 10**9
        async with gateway.request(
            "GET",
            f"/v1/conversations/{cid}/events",
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(far)},
        ) as response:
            assert response.status == 422
            assert (await response.json())["error"]["param"] == "Last-Event-ID"
        headers = {"Authorization": f"Bearer {make_token('alice')}"}
        async with gateway.session.ws_connect(gateway.url("/v1/ws"), headers=headers) as ws:
            await ws.send_json({"type": "resume", "conversation_id": cid, "after": far})
            frame = await ws.receive_json(timeout=10)
            assert frame["type"] == "rejected"
            assert frame["param"] == "after"
        assert await owned()  # refused while the ids were owned, not because the answer had ended
