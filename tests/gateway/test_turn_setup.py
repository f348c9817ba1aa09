"""A turn's setup (state/turn_setup.py): the user's script and the conversation's, sent together
for a new conversation; whichever refuses, nothing is left of the other (no conversation, lock,
message, watcher lease, stream slot or index entry), and the refusal keeps its status."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streaming_gateway.errors import NotFound, RateLimited
from streaming_gateway.keys import engine_key
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import ConversationStore, TurnRequest, TurnStart
from streaming_gateway.state.limits import PendingCount, RateLimiter, UserGate, UserStep
from streaming_gateway.state.turn_setup import TurnSetup
from tests.fixtures.gateway import Gateway, StartGateway
from tests.fixtures.services import ON_BOTH, ON_SERVER
from tests.gateway.helpers import read_events

pytestmark = ON_BOTH

SSE = {"Accept": "text/event-stream"}
COMPLETION = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def conversation_keys(aredis: aioredis.Redis) -> list[str]:
    """Every conversation key (SCAN: every node of a cluster)."""
    return [key async for key in aredis.scan_iter(match=f"{redis_keys.PREFIX}:conv:*")]


async def nothing_left(aredis: aioredis.Redis, user: str, *, open_streams: int = 0) -> None:
    assert await conversation_keys(aredis) == []
    assert await aredis.zcard(redis_keys.user_conversations(user)) == 0
    assert await aredis.zcard(redis_keys.user_streams(user)) == open_streams


async def test_rate_limited_new_conversation_leaves_nothing(
    start_gateway: StartGateway, script, aredis: aioredis.Redis
) -> None:
    """A stateless completion over the rate limit is 429 with Retry-After, and leaves no conversation,
    lock, message, lease, index entry or stream slot, though both scripts were sent at once."""
    gateway = await start_gateway(GATEWAY_RATE_LIMIT_PER_MINUTE="2")
    await script([{"match": "", "reply": "ok"}])
    for attempt in range(3):  # a minute boundary inside the burst starts a new window: try again
        user = f"burst-{attempt}"
        window = int(time.time() // 60)
        statuses = []
        for _ in range(3):
            async with gateway.request("POST", "/v1/chat/completions", user, json=COMPLETION) as response:
                statuses.append(response.status)
                if response.status == 429:
                    retry_after = response.headers.get("Retry-After")
                    error = (await response.json())["error"]
                else:
                    await response.read()
        if int(time.time() // 60) == window:
            break
    assert statuses == [200, 200, 429]
    assert retry_after is not None and int(retry_after) >= 1 and error["code"] == "rate_limited"
    # The two answered conversations only; the refused one was taken back.
    assert await aredis.zcard(redis_keys.user_conversations(user)) == 2
    kept = {key.split("{")[1].split("}")[0] for key in await conversation_keys(aredis)}
    assert kept == set(await aredis.zrange(redis_keys.user_conversations(user), 0, -1))
    assert await aredis.zcard(redis_keys.user_streams(user)) == 0
    assert gateway.metric("gateway_rate_limit_rejections_total", {"limit": "requests_per_minute"}) == 1


async def test_refused_stream_slot_creates_no_conversation(
    start_gateway: StartGateway, script, aredis: aioredis.Redis
) -> None:
    """With the user's only stream slot taken, a stateless completion is 429 (concurrent streams) and
    creates nothing, and a message to an existing conversation is 429 without taking its turn (no
    lock, no message, no lease)."""
    gateway = await start_gateway(GATEWAY_MAX_STREAMS_PER_USER="1")
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    follower = await gateway.request("GET", f"/v1/conversations/{cid}/events", headers=SSE)
    assert follower.status == 200
    await follower.content.readuntil(b"\n\n")  # the stream is established: the slot is taken
    try:
        async with gateway.request("POST", "/v1/chat/completions", json=COMPLETION) as response:
            assert response.status == 429
            assert (await response.json())["error"]["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=SSE
        ) as response:
            assert response.status == 429
        assert [key for key in await conversation_keys(aredis) if cid not in key] == []
        assert await aredis.zrange(redis_keys.user_conversations("alice"), 0, -1) == [cid]
        assert await aredis.llen(redis_keys.messages(cid)) == 0
        assert await aredis.get(redis_keys.busy(cid)) is None
        assert await aredis.zcard(redis_keys.watchers(cid)) == 1  # the open follower's only
        assert await aredis.zcard(redis_keys.user_streams("alice")) == 1
    finally:
        follower.close()
    assert gateway.metric("gateway_rate_limit_rejections_total", {"limit": "concurrent_streams"}) == 2


async def test_full_new_conversation_gives_its_user_steps_back(
    start_gateway: StartGateway, aredis: aioredis.Redis
) -> None:
    """A stateless history longer than a conversation may hold is 409 conversation_full; the index
    entry and stream slot the user's script took at the same time are given back."""
    gateway = await start_gateway(GATEWAY_MAX_MESSAGES_PER_CONVERSATION="4")
    messages = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"m{n}"} for n in range(5)]
    async with gateway.request(
        "POST", "/v1/chat/completions", json={**COMPLETION, "messages": messages}
    ) as response:
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "conversation_full"
    await nothing_left(aredis, "alice")


async def test_conversation_limit_refuses_a_new_conversation_without_a_trace(
    start_gateway: StartGateway, script, aredis: aioredis.Redis
) -> None:
    """At the user's conversation limit a stateless completion is 409 conversation_limit and its
    conversation, written by the turn's script at the same time, is deleted."""
    gateway = await start_gateway(GATEWAY_MAX_CONVERSATIONS_PER_USER="1")
    await script([{"match": "", "reply": "ok"}])
    cid = await gateway.create_conversation()
    async with gateway.request("POST", "/v1/chat/completions", json=COMPLETION) as response:
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "conversation_limit"
    assert {key.split("{")[1].split("}")[0] for key in await conversation_keys(aredis)} == {cid}
    assert await aredis.zcard(redis_keys.user_streams("alice")) == 0


async def test_busy_conversation_takes_no_slot(
    start_gateway: StartGateway, script, aredis: aioredis.Redis
) -> None:
    """A message to a conversation still answering is 409 conversation_busy and leaves the user one
    stream slot (the answer's), its lock and messages the first turn's."""
    gateway = await start_gateway()
    await script([{"match": "", "tokens": 50, "token_delay_ms": 20}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "first"}, headers=SSE
    ) as first:
        await read_events(first, stop_after=1)
        holder = await aredis.get(redis_keys.busy(cid))
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "second"}, headers=SSE
        ) as refused:
            assert refused.status == 409 and (await refused.json())["error"]["code"] == "conversation_busy"
        assert await aredis.zcard(redis_keys.user_streams("alice")) == 1
        assert await aredis.get(redis_keys.busy(cid)) == holder
        assert await aredis.llen(redis_keys.messages(cid)) == 1
        await read_events(first)


async def test_invalid_request_over_the_limit_is_still_429(start_gateway: StartGateway) -> None:
    """A turn's request is counted in its setup's script; one that fails before it is counted on its
    own: invalid requests use up the limit, and past it they are 429, not 400 or 404."""
    gateway = await start_gateway(GATEWAY_RATE_LIMIT_PER_MINUTE="2")
    for attempt in range(3):  # a minute boundary inside the burst starts a new window: try again
        user = f"invalid-{attempt}"
        window = int(time.time() // 60)
        statuses = []
        for path, body in [
            ("/v1/chat/completions", {"model": "default", "messages": []}),
            ("/v1/conversations/conv_missing/messages", {"content": "hi"}),
            ("/v1/chat/completions", {"model": "default", "messages": []}),
            ("/v1/conversations/conv_missing/messages", {"content": "hi"}),
        ]:
            async with gateway.request("POST", path, user, json=body) as response:
                statuses.append(response.status)
        if int(time.time() // 60) == window:
            break
    assert statuses == [400, 404, 429, 429]


class RecordingGate(UserGate):
    """The real gate, noting when its script is built and when its reply is read."""

    def __init__(self, events: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events

    def command(self, user_id: str, step: UserStep, *, index_ttl_s: int) -> Any:
        self.events.append("user sent")
        return super().command(user_id, step, index_ttl_s=index_ttl_s)

    def outcome(self, user_id: str, reply: Any) -> bool:
        self.events.append("user answered")
        return super().outcome(user_id, reply)


class RecordingStore(ConversationStore):
    """The real store, noting the same of begin_turn's script."""

    def __init__(self, events: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events

    def turn_command(self, turn: TurnRequest) -> Any:
        self.events.append("turn sent")
        return super().turn_command(turn)

    def turn_outcome(self, turn: TurnRequest, answer: Any, *, sent: float) -> TurnStart:
        self.events.append("turn answered")
        return super().turn_outcome(turn, answer, sent=sent)


async def test_scripts_go_together_only_for_a_new_conversation(aredis: aioredis.Redis) -> None:
    """For a new conversation both scripts are sent before either has answered (one round trip: one
    pipeline on a single server, two nodes at once on a cluster); for an existing one the
    conversation's only after the user's has answered (the user's script decides first). Scripts Redis
    does not know yet are loaded and sent again."""
    await check_scripts_go_together(aredis, pipelined=not isinstance(aredis, RedisCluster))


@ON_SERVER
async def test_scripts_go_together_without_a_shared_pipeline(aredis: aioredis.Redis) -> None:
    """The same on a single server without the shared pipeline: the two scripts as concurrent
    commands, the way a cluster sends them to two nodes."""
    await check_scripts_go_together(aredis, pipelined=False)


async def check_scripts_go_together(aredis: aioredis.Redis, *, pipelined: bool) -> None:
    events: list[str] = []
    store = RecordingStore(events, aredis, ttl_s=600)
    gate = RecordingGate(
        events, aredis, RateLimiter(aredis, 100), streams_per_user=4, conversations_per_user=10
    )
    setup = TurnSetup(gate, store, pipeline=aredis if pipelined else None)
    await aredis.script_flush()  # as after a restart: the pipeline's EVALSHAs are refused, then sent again
    conversation = store.new("alice", "default@000000000000")
    await setup.run(
        "alice",
        UserStep(count=PendingCount(), stream_id="stream_1", new_conversation=conversation.id),
        TurnRequest(
            conversation.id, "turn_1", [{"role": "user", "content": "hi"}], 10, 60, 0, create=conversation
        ),
    )
    assert sorted(events[:2]) == ["turn sent", "user sent"] and len(events) == 4
    await store.release_turn(conversation.id, "turn_1")
    events.clear()
    start = await setup.run(
        "alice",
        UserStep(count=PendingCount(), stream_id="stream_2"),
        TurnRequest(conversation.id, "turn_2", [{"role": "user", "content": "again"}], 10, 60, 0),
    )
    assert events == ["user sent", "user answered", "turn sent", "turn answered"]
    assert [m["content"] for m in start.history] == ["hi", "again"]
    assert await aredis.zscore(redis_keys.user_conversations("alice"), conversation.id) is not None
    assert sorted(await aredis.zrange(redis_keys.user_streams("alice"), 0, -1)) == ["stream_1", "stream_2"]


async def test_new_conversation_refused_by_the_user_script_leaves_no_log_owner(
    aredis: aioredis.Redis,
) -> None:
    """A new conversation's begin_turn takes the log's ids with the turn (the turn id as the owner);
    when the user's script, sent at the same time, refuses (no stream slot left), the owner key is
    deleted with the conversation's other keys."""
    store = ConversationStore(aredis, ttl_s=600)
    gate = UserGate(aredis, RateLimiter(aredis, 100), streams_per_user=1, conversations_per_user=10)
    setup = TurnSetup(gate, store, pipeline=None if isinstance(aredis, RedisCluster) else aredis)

    def new_turn(n: int) -> tuple[str, UserStep, TurnRequest]:
        conversation = store.new("alice", "default@000000000000")
        step = UserStep(count=PendingCount(), stream_id=f"stream_{n}", new_conversation=conversation.id)
        message = [{"role": "user", "content": "hi"}]
        turn = TurnRequest(
            conversation.id, f"turn_{n}", message, 10, 60, 0, create=conversation, take_ids=True
        )
        return conversation.id, step, turn

    kept, step, turn = new_turn(1)
    start = await setup.run("alice", step, turn)
    assert start.ids is not None and (start.ids.token, start.ids.top) == ("turn_1", 0)
    assert await aredis.get(redis_keys.log_owner(kept)) == "turn_1"
    refused, step, turn = new_turn(2)
    with pytest.raises(RateLimited):
        await setup.run("alice", step, turn)
    assert {key.split("{")[1].split("}")[0] for key in await conversation_keys(aredis)} == {kept}
    assert not await aredis.exists(redis_keys.log_owner(refused))


async def test_young_index_entry_is_not_pruned(aredis: aioredis.Redis) -> None:
    """An index entry whose conversation is not written yet (the user's script ran first) survives a
    prune at the limit: only entries older than the grace are taken for expired."""
    store = ConversationStore(aredis, ttl_s=600, max_per_user=1)
    await aredis.zadd(redis_keys.user_conversations("alice"), {"conv_coming": int(time.time() * 1_000_000)})
    assert not await store.prune("alice")
    assert await aredis.zcard(redis_keys.user_conversations("alice")) == 1


async def test_user_steps_given_back_when_the_turn_is_refused(
    gateway: Gateway, aredis: aioredis.Redis
) -> None:
    """An existing conversation's refused turn (gone meanwhile) gives back the slot its user's script took."""
    engine = gateway.app[engine_key]
    store = engine.store
    conversation = await store.owned(await gateway.create_conversation(), "alice")
    await aredis.delete(redis_keys.conversation(conversation.id))
    with pytest.raises(NotFound):
        await engine.start_turn(
            conversation, [{"role": "user", "content": "hi"}], user=UserStep(stream_id="stream_9")
        )
    assert await aredis.zcard(redis_keys.user_streams("alice")) == 0
