"""Hostile input on every way in: oversized bodies and frames, invalid UTF-8, hostile JSON,
unbounded metadata and conversation counts, and floods of WebSocket frames. Each is refused with a
clear status (or close code) and the gateway keeps serving."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.fixtures.gateway import Gateway, StartGateway, make_token

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b'{"content": "hi", "n": ' + b"9" * 5000 + b"}"
INVALID_UTF8 = b'{"content": "\xff\xfe\xc3("}'


async def ws(gateway: Gateway, user: str = "alice") -> aiohttp.ClientWebSocketResponse:
    return await gateway.session.ws_connect(
        gateway.url("/v1/ws"), headers={"Authorization": f"Bearer {make_token(user)}"}
    )


async def still_answers(socket: aiohttp.ClientWebSocketResponse) -> None:
    await socket.send_json({"type": "ping"})
    while True:
        frame = await socket.receive_json(timeout=10)
        if frame["type"] == "pong":
            return


async def post_raw(gateway: Gateway, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with gateway.request(
        "POST", path, data=body, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, await response.json()


async def test_websocket_frame_over_the_limit_closes_with_1009(start_gateway: StartGateway) -> None:
    """A text frame larger than GATEWAY_MAX_BODY_BYTES closes the socket with 1009 (message too big)."""
    gateway = await start_gateway(GATEWAY_MAX_BODY_BYTES="4096")
    async with await ws(gateway) as socket:
        await socket.send_str('{"type": "message", "content": "' + "x" * 8192 + '"}')
        message = await socket.receive(timeout=10)
        if message.type == WSMsgType.CLOSE:
            assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        else:
            assert message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert socket.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_invalid_utf8_in_a_websocket_text_frame_closes_with_1007(gateway: Gateway) -> None:
    """Bytes that are not UTF-8 in a text frame close the socket with 1007 (invalid payload)."""
    async with await ws(gateway) as socket:
        writer = socket._writer  # the client API refuses to send invalid text; the raw writer does not
        await writer.send_frame(b'{"type": "ping", "x": "\xff\xfe"}', aiohttp.WSMsgType.TEXT)
        message = await socket.receive(timeout=10)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert socket.close_code == aiohttp.WSCloseCode.INVALID_TEXT
    async with gateway.request("GET", "/v1/conversations") as response:
        assert response.status == 200


async def test_hostile_websocket_frames_are_rejected_and_the_socket_lives(gateway: Gateway) -> None:
    """Deep nesting, a 5,000-digit integer, wrong types and unknown frame types are rejected frames."""
    async with await ws(gateway) as socket:
        for frame in (
            DEEP.decode(),
            '{"type": "resume", "conversation_id": "x", "after": ' + "9" * 5000 + "}",
            '{"type": "ping", "extra": true}',
            '{"type": "launch"}',
            '"ping"',
            "null",
            "",
        ):
            await socket.send_str(frame)
            reply = await socket.receive_json(timeout=10)
            assert reply["type"] == "rejected" and 400 <= reply["status"] < 500, frame[:40]
        await still_answers(socket)


async def test_invalid_utf8_in_a_body_is_a_client_error(gateway: Gateway) -> None:
    """A JSON body that is not UTF-8 is answered with a 4xx naming the body, never a 5xx."""
    cid = await gateway.create_conversation()
    status, body = await post_raw(gateway, f"/v1/conversations/{cid}/messages", INVALID_UTF8)
    assert 400 <= status < 500 and body["error"]["param"] == "body"


@pytest.mark.parametrize("hostile", [DEEP, HUGE_INT, INVALID_UTF8], ids=["deep", "huge-int", "not-utf8"])
async def test_hostile_json_bodies_are_400(gateway: Gateway, hostile: bytes) -> None:
    """100,000 nested arrays, a 5,000-digit integer or non-UTF-8 bytes are 400 invalid_json on every
    JSON endpoint."""
    cid = await gateway.create_conversation()
    for path in ("/v1/conversations", f"/v1/conversations/{cid}/messages", "/v1/chat/completions"):
        status, body = await post_raw(gateway, path, hostile)
        assert status == 400, (path, status, body)
        assert body["error"]["code"] == "invalid_json" and body["error"]["param"] == "body"
    async with gateway.request("GET", "/v1/conversations") as response:
        assert response.status == 200


async def test_message_metadata_is_bounded(start_gateway: StartGateway, script) -> None:
    """Metadata keys, key length, value size and total bytes are each limited, over REST and WebSocket,
    with a 422 naming the metadata; metadata within the limits is kept."""
    gateway = await start_gateway(
        GATEWAY_MAX_METADATA_KEYS="4",
        GATEWAY_MAX_METADATA_KEY_CHARS="16",
        GATEWAY_MAX_METADATA_VALUE_CHARS="64",
        GATEWAY_MAX_METADATA_BYTES="200",
    )
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    too_much = [
        {"v": "x" * 960_000},
        {"v": "x" * 65},
        {"k" * 17: "v"},
        {f"k{i}": "v" for i in range(5)},
        {f"k{i}": "é" * 30 for i in range(4)},  # 4 x 60 bytes of UTF-8: over 200 in total
    ]
    for metadata in too_much:
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi", "metadata": metadata}
        ) as response:
            assert response.status == 422, list(metadata)[:2]
            error = (await response.json())["error"]
            assert error["param"].startswith("metadata"), error
    async with await ws(gateway) as socket:
        for metadata in too_much:
            await socket.send_json(
                {"type": "message", "conversation_id": cid, "content": "hi", "metadata": metadata}
            )
            reply = await socket.receive_json(timeout=10)
            assert reply["type"] == "rejected" and reply["status"] == 422
            assert reply["param"].startswith("metadata")
    fine = {"client_id": "m-1", "lang": "en"}
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi", "metadata": fine}
    ) as response:
        assert response.status == 200
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        stored = (await response.json())["messages"]
    assert [m.get("metadata") for m in stored if m["role"] == "user"] == [fine]


async def test_conversations_per_user_are_bounded(start_gateway: StartGateway, script) -> None:
    """Past GATEWAY_MAX_CONVERSATIONS_PER_USER a user creates no more conversations on any transport
    (409 conversation_limit); deleting one makes room; other users are unaffected."""
    gateway = await start_gateway(GATEWAY_MAX_CONVERSATIONS_PER_USER="2")
    await script([{"match": "", "reply": "ok"}])
    first = await gateway.create_conversation()
    await gateway.create_conversation()
    async with gateway.request("POST", "/v1/conversations", json={}) as response:
        assert response.status == 409
        error = (await response.json())["error"]
    assert error["code"] == "conversation_limit" and "2" in error["message"]
    async with await ws(gateway) as socket:
        await socket.send_json({"type": "message", "content": "a new one please"})
        reply = await socket.receive_json(timeout=10)
        assert reply["type"] == "rejected" and reply["code"] == "conversation_limit"
    async with gateway.request(
        "POST",
        "/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.status == 409
    await gateway.create_conversation("bob")
    async with gateway.request("DELETE", f"/v1/conversations/{first}") as response:
        assert response.status == 204
    await gateway.create_conversation()


async def test_every_websocket_frame_counts_against_the_rate_limit(start_gateway: StartGateway) -> None:
    """With 5 requests a minute, a flood of ping, resume and cancel frames is refused with rate_limited
    frames (retry_after given) after the limit, and the socket stays open."""
    gateway = await start_gateway(GATEWAY_RATE_LIMIT_PER_MINUTE="5")
    user = f"flood-{time.time_ns()}"
    cid = await gateway.create_conversation(user)  # one request
    replies: list[dict[str, Any]] = []
    async with await ws(gateway, user) as socket:  # the upgrade is another
        for index in range(60):
            kind = ("ping", "resume", "cancel")[index % 3]
            frame: dict[str, Any] = {"type": kind}
            if kind != "ping":
                frame["conversation_id"] = cid
            if kind == "resume":
                frame["after"] = 0
            await socket.send_json(frame)
            while True:
                reply = await socket.receive_json(timeout=10)
                if reply["type"] in ("pong", "ack", "cancelled", "rejected"):
                    replies.append(reply)
                    break
    refused = [r for r in replies if r["type"] == "rejected" and r["code"] == "rate_limited"]
    # At most 5 per window pass; a minute boundary during the burst lets through at most 5 more.
    assert len(replies) - len(refused) <= 10
    assert all(r["retry_after"] >= 1 for r in refused)
    assert gateway.metric("gateway_rate_limit_rejections_total", {"limit": "requests_per_minute"}) >= 50
