"""Conversations belong to their user: create, list newest first with pages, read, delete."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from streaming_gateway.errors import Conflict
from streaming_gateway.keys import redis_key
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import ConversationStore
from tests.fixtures.gateway import Gateway
from tests.fixtures.services import ON_BOTH

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH

SSE = {"Accept": "text/event-stream"}


async def test_create_read_delete(gateway: Gateway, script) -> None:
    """A conversation records its agent config version, and each message records it too."""
    await script([{"match": "", "reply": "ok"}])
    async with gateway.request("POST", "/v1/conversations", json={"title": "Printer trouble"}) as response:
        assert response.status == 201
        created = await response.json()
        assert response.headers["Location"] == f"/v1/conversations/{created['id']}"
    assert created["agent_config_version"].startswith("default@") and created["title"] == "Printer trouble"
    cid = created["id"]
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as response:
        assert response.status == 200
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        body = await response.json()
    assert body["message_count"] == 2 and body["last_event_id"] == 2
    assert {m["agent_config_version"] for m in body["messages"]} == {created["agent_config_version"]}
    assert "user_id" not in body
    async with gateway.request("DELETE", f"/v1/conversations/{cid}") as response:
        assert response.status == 204
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        assert response.status == 404


async def test_first_message_titles_an_untitled_conversation(gateway: Gateway, script) -> None:
    """A conversation created without a title is titled after its first user message (on one line, a
    long one cut at a word with an ellipsis), in the list too; later messages and a given title stay."""
    await script([{"match": "", "reply": "ok"}])

    async def titled(first: str, *, title: str | None = None, then: str = "second message") -> str | None:
        async with gateway.request(
            "POST", "/v1/conversations", json={"title": title} if title else {}
        ) as response:
            cid = (await response.json())["id"]
        for content in (first, then):
            async with gateway.request(
                "POST", f"/v1/conversations/{cid}/messages", json={"content": content}
            ) as sent:
                assert sent.status == 200, await sent.text()
        async with gateway.request("GET", "/v1/conversations") as response:
            listed = {c["id"]: c for c in (await response.json())["data"]}
        return listed[cid].get("title")

    assert await titled("Why is the printer\n  on fire?") == "Why is the printer on fire?"
    long = await titled("Please summarise " + " ".join(f"chapter{i}" for i in range(30)))
    assert long is not None and long.endswith("\u2026") and len(long) <= 80
    assert long.startswith("Please summarise chapter0 chapter1") and not long[:-1].endswith(" ")
    assert await titled("anything", title="Printer trouble") == "Printer trouble"


async def test_list_is_newest_first_and_paginated(gateway: Gateway) -> None:
    """Pages follow next_cursor until it is null; each conversation appears once, newest first."""
    created = [await gateway.create_conversation() for _ in range(5)]
    await gateway.create_conversation("bob")
    seen, cursor = [], None
    while True:
        path = "/v1/conversations?limit=2" + (f"&cursor={cursor}" if cursor else "")
        async with gateway.request("GET", path) as response:
            page = await response.json()
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_other_users_conversation_is_not_found(gateway: Gateway) -> None:
    """Another user's conversation answers 404 to every operation, and is never listed."""
    cid = await gateway.create_conversation("alice")
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v1/conversations/{cid}", {}),
        ("DELETE", f"/v1/conversations/{cid}", {}),
        ("POST", f"/v1/conversations/{cid}/messages", {"json": {"content": "hi"}}),
        ("GET", f"/v1/conversations/{cid}/events", {"headers": SSE}),
        ("POST", f"/v1/conversations/{cid}/cancel", {}),
        (
            "POST",
            "/v1/chat/completions",
            {
                "json": {"model": "default", "messages": [{"role": "user", "content": "x"}]},
                "headers": {"X-Conversation-Id": cid},
            },
        ),
    ]
    for method, path, kwargs in requests:
        async with gateway.request(method, path, user="mallory", **kwargs) as response:
            assert response.status == 404, (method, path)
            assert (await response.json())["error"]["code"] == "conversation_not_found"
    async with gateway.request("GET", "/v1/conversations", user="mallory") as response:
        assert (await response.json())["data"] == []
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        assert response.status == 200


async def test_deleting_mid_answer_stops_it(gateway: Gateway, script) -> None:
    """Deleting a conversation while it is being answered stops the answer and leaves nothing behind."""
    await script([{"match": "", "tokens": 2000, "token_delay_ms": 10}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as stream:
        await stream.content.readuntil(b"event: token")
        async with gateway.request("DELETE", f"/v1/conversations/{cid}") as response:
            assert response.status == 204
    keys = [key async for key in gateway.app[redis_key].scan_iter(f"gw:conv:{{{cid}}}*")]
    assert keys == [] or all(k.endswith((":watchers", ":producing")) for k in keys)


async def test_expired_conversations_free_their_slots(aredis: aioredis.Redis) -> None:
    """At the per-user limit, conversations that expired are dropped from the user's index and their
    slots reused; the check of the index runs at most once per interval, and a failed create leaves
    no conversation behind."""
    store = ConversationStore(aredis, ttl_s=600, max_per_user=2, prune_grace_s=0)
    first = await store.create("alice", "default@000000000000")
    await store.create("alice", "default@000000000000")
    await aredis.delete(redis_keys.conversation(first.id))  # what its TTL running out does
    third = await store.create("alice", "default@000000000000")
    page, _ = await store.page("alice", 10)
    assert third.id in {c.id for c in page} and first.id not in {c.id for c in page}
    # Full again; a fresh expiry waits for the next prune interval.
    await aredis.delete(redis_keys.conversation(third.id))
    with pytest.raises(Conflict) as refused:
        await store.create("alice", "default@000000000000")
    assert refused.value.code == "conversation_limit"
    assert await aredis.zcard(redis_keys.user_conversations("alice")) == 2
    assert (
        len([k async for k in aredis.scan_iter(match=redis_keys.conversation("*"))]) == 1
    )  # refused one removed (SCAN: every node of a cluster)
    await aredis.delete(redis_keys.user_conversations_pruned("alice"))  # the interval has passed
    await store.create("alice", "default@000000000000")


async def test_a_turn_keeps_the_users_index_alive(gateway: Gateway, script, aredis: aioredis.Redis) -> None:
    """Each turn renews the user's conversation index with the conversation it answers: a user who
    talks in one conversation for longer than the TTL keeps it listed (and counted for the limit)."""
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    index = redis_keys.user_conversations("alice")
    await aredis.expire(index, 5)  # as if it was created nearly a TTL ago
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as response:
        assert response.status == 200
        await response.read()
    assert await aredis.ttl(index) > 5
    assert await aredis.ttl(index) >= await aredis.ttl(redis_keys.conversation(cid)) - 5
    async with gateway.request("GET", "/v1/conversations") as response:
        assert [c["id"] for c in (await response.json())["data"]] == [cid]
