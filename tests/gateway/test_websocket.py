"""The WebSocket API: the same events as SSE in JSON frames; send, cancel, resume, ping."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from agent_contracts import parse_event
from streaming_gateway.keys import redis_key
from streaming_gateway.state import redis_keys
from streaming_gateway.state.ws_tickets import user_tag
from tests.fixtures.gateway import Gateway, make_token, upstream_stats
from tests.polling import eventually


async def connect(
    gateway: Gateway, user: str = "alice", *, ticket: bool = False
) -> aiohttp.ClientWebSocketResponse:
    token = make_token(user)
    if ticket:
        async with gateway.request("POST", "/v1/ws/tickets", user) as response:
            assert response.status == 201, await response.text()
            issued = await response.json()
        return await gateway.session.ws_connect(gateway.url(f"/v1/ws?ticket={issued['ticket']}"))
    return await gateway.session.ws_connect(
        gateway.url("/v1/ws"), headers={"Authorization": f"Bearer {token}"}
    )


async def frames_until_end(
    ws: aiohttp.ClientWebSocketResponse, *, limit: int | None = None
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = await ws.receive_json(timeout=15)
        frames.append(frame)
        if limit is not None and len(frames) >= limit:
            return frames
        if frame.get("type") == "message_end" and frame["finish_reason"] != "tool_calls":
            return frames


async def test_send_and_receive_events(gateway: Gateway, script) -> None:
    """A message frame starts an answer; the frames are ack, then contract events with rising ids."""
    await script([{"match": "", "reply": "over the socket"}])
    async with await connect(gateway) as ws:
        await ws.send_json({"type": "message", "content": "hi"})
        frames = await frames_until_end(ws)
    ack, events = frames[0], frames[1:]
    assert ack["type"] == "ack" and ack["after"] == 0
    parsed = [parse_event(frame) for frame in events]
    assert [e.id for e in parsed] == list(range(1, len(parsed) + 1))
    assert "".join(e.text for e in parsed if e.type == "token") == "over the socket"
    assert all(e.conversation_id == ack["conversation_id"] for e in parsed)


async def test_ticket_in_query_parameter_for_browsers(gateway: Gateway, script) -> None:
    """Browsers open the socket with a ticket from POST /v1/ws/tickets; it is the ticket's user: the
    same conversation continues by id."""
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    async with await connect(gateway, ticket=True) as ws:
        await ws.send_json({"type": "message", "content": "hi", "conversation_id": cid})
        frames = await frames_until_end(ws)
    assert frames[0]["conversation_id"] == cid and frames[-1]["type"] == "message_end"


async def test_upgrade_without_token_is_401(gateway: Gateway) -> None:
    """No token, no WebSocket: the handshake is refused with 401."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await gateway.session.ws_connect(gateway.url("/v1/ws"))
    assert raised.value.status == 401


async def test_ping_bad_frames_and_other_users_conversation(gateway: Gateway) -> None:
    """ping gets pong; malformed frames and foreign conversations are rejected, the socket stays open."""
    bob_cid = await gateway.create_conversation("bob")
    async with await connect(gateway) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=5) == {"type": "pong"}
        await ws.send_str("{not json")
        rejected = await ws.receive_json(timeout=5)
        assert rejected["type"] == "rejected" and rejected["status"] == 422
        await ws.send_json({"type": "message"})
        rejected = await ws.receive_json(timeout=5)
        assert rejected["status"] == 422 and rejected["param"] == "message.content"
        await ws.send_json({"type": "resume", "conversation_id": bob_cid, "after": 0})
        rejected = await ws.receive_json(timeout=5)
        assert rejected["status"] == 404
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_json(timeout=5))["code"] == "invalid_frame"
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=5) == {"type": "pong"}


async def test_resume_after_reconnect(start_gateway, script) -> None:
    """A new socket resuming after the last id it saw gets the rest of the answer exactly once."""
    pod_a = await start_gateway(GATEWAY_ORPHAN_GRACE_SECONDS="30")
    pod_b = await start_gateway()
    await script([{"match": "", "tokens": 40, "token_delay_ms": 15}])
    async with await connect(pod_a) as ws:
        await ws.send_json({"type": "message", "content": "go"})
        first = await frames_until_end(ws, limit=6)
    cid, last = first[0]["conversation_id"], first[-1]["id"]
    async with await connect(pod_b) as ws:
        await ws.send_json({"type": "resume", "conversation_id": cid, "after": last})
        rest = await frames_until_end(ws)
    assert rest[0] == {"type": "ack", "conversation_id": cid, "after": last}
    ids = [f["id"] for f in first[1:] + rest[1:]]
    assert ids == list(range(1, len(ids) + 1))
    words = "".join(f["text"] for f in first[1:] + rest[1:] if f["type"] == "token").split()
    assert words == [f"word{i}" for i in range(40)]


async def test_cancel_frame_and_disconnect_stop_the_model(gateway: Gateway, script, upstream) -> None:
    """A cancel frame ends the answer as cancelled; closing the socket mid-answer stops the upstream."""
    await script([{"match": "", "tokens": 2000, "token_delay_ms": 10}])
    async with await connect(gateway) as ws:
        await ws.send_json({"type": "message", "content": "go"})
        await frames_until_end(ws, limit=3)
        await ws.send_json({"type": "cancel"})
        frames = await frames_until_end(ws)
    assert {
        "type": "cancelled",
        "conversation_id": frames[-1]["conversation_id"],
        "cancelled": True,
    } in frames
    assert frames[-1]["finish_reason"] == "cancelled"

    async with await connect(gateway) as ws:
        await ws.send_json({"type": "message", "content": "again"})
        await frames_until_end(ws, limit=3)

    async def both_cancelled() -> bool:
        stats = await upstream_stats(upstream)
        return stats["streams_cancelled"] == 2 and stats["active_streams"] == 0

    await eventually(both_cancelled, "both upstream streams to be cancelled")


async def test_message_to_busy_conversation_is_rejected(gateway: Gateway, script) -> None:
    """A second message while the first is being answered is rejected with 409, not queued or mixed."""
    await script([{"match": "", "tokens": 2000, "token_delay_ms": 10}])
    async with await connect(gateway) as ws:
        await ws.send_json({"type": "message", "content": "go"})
        frames = await frames_until_end(ws, limit=2)
        await ws.send_json(
            {"type": "message", "content": "again", "conversation_id": frames[0]["conversation_id"]}
        )
        while True:
            frame = json.loads((await ws.receive(timeout=15)).data)
            if frame["type"] == "rejected":
                break
    assert frame["status"] == 409 and frame["code"] == "conversation_busy"


async def test_ticket_never_outlives_its_token_and_keeps_its_claims(gateway: Gateway) -> None:
    """A ticket from a token about to expire lives no longer than the token; the socket it opens
    belongs to the token's user with the token's claims."""
    token = make_token("carol", ttl=3, roles=["Agents.Operator"])
    async with gateway.session.post(
        gateway.url("/v1/ws/tickets"), headers={"Authorization": f"Bearer {token}"}
    ) as response:
        issued = await response.json()
    assert 1 <= issued["expires_in"] <= 3
    redis = gateway.app[redis_key]
    pattern = redis_keys.ws_ticket(user_tag("carol"), "*")
    keys = [key async for key in redis.scan_iter(match=pattern)]  # every node of a cluster
    ticket = await redis.get(keys[0])
    assert ticket is not None
    stored = json.loads(ticket)
    assert stored["user_id"] == "carol" and stored["claims"]["roles"] == ["Agents.Operator"]
    assert issued["ticket"].split(".")[1] not in keys[0]  # Redis keeps only the secret's hash
    carol_cid = await gateway.create_conversation("carol")
    async with gateway.session.ws_connect(gateway.url(f"/v1/ws?ticket={issued['ticket']}")) as ws:
        await ws.send_json({"type": "cancel", "conversation_id": carol_cid})
        assert (await ws.receive_json(timeout=10))["type"] == "cancelled"
    assert [key async for key in redis.scan_iter(match=pattern)] == []
