"""The Redis stream log: ids unique and strictly increasing per conversation, however concurrent."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from agent_contracts.events import TokenEvent
from agent_contracts.redis_connection import connect
from streaming_gateway.errors import ConversationGone
from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.stream_log import StreamLog

IN_FLIGHT = 10


async def test_concurrent_appends_get_consecutive_ids(aredis: aioredis.Redis, redis_url: str) -> None:
    """300 appends racing from 3 clients (as from 3 pods) get ids 1..300, and the log is in id order."""
    store = ConversationStore(aredis, ttl_s=600)
    conversation = await store.create("alice", "default@000000000000")
    # Ten appends in flight per client, on ten connections each: racing, without opening hundreds
    # of connections (which a loaded machine answers with timeouts, not with a race).
    clients = [await connect(redis_url, decode_responses=True, max_connections=IN_FLIGHT) for _ in range(3)]
    writers = [StreamLog(client, maxlen=10_000, ttl_s=600) for client in clients]
    slots = [asyncio.Semaphore(IN_FLIGHT) for _ in clients]

    async def write(log: StreamLog, index: int) -> int:
        async with slots[index % 3]:
            return await log.append(
                conversation.id, TokenEvent(id=1, conversation_id=conversation.id, text=f"t{index}")
            )

    ids = await asyncio.gather(*(write(writers[i % 3], i) for i in range(300)))
    for client in clients:
        await client.aclose()
    assert sorted(ids) == list(range(1, 301))
    entries = await writers[0].read(conversation.id, 0, count=1000)
    assert [e.id for e in entries] == list(range(1, 301))
    assert all(f'"id":{e.id},' in e.data for e in entries)


async def test_batch_append_is_atomic_and_ordered(aredis: aioredis.Redis) -> None:
    """Several events appended at once land together, in order, and the last id is returned."""
    store = ConversationStore(aredis, ttl_s=600)
    conversation = await store.create("alice", "default@000000000000")
    log = StreamLog(aredis, maxlen=10_000, ttl_s=600)
    last = await log.append(
        conversation.id, *(TokenEvent(id=1, conversation_id=conversation.id, text=str(i)) for i in range(5))
    )
    assert last == 5
    assert [e.data for e in await log.read(conversation.id, 3)] == [
        f'{{"id":4,"conversation_id":"{conversation.id}","type":"token","text":"3"}}',
        f'{{"id":5,"conversation_id":"{conversation.id}","type":"token","text":"4"}}',
    ]


async def test_log_is_trimmed_and_expires(aredis: aioredis.Redis) -> None:
    """The log keeps about maxlen entries and carries the configured TTL."""
    store = ConversationStore(aredis, ttl_s=600)
    conversation = await store.create("alice", "default@000000000000")
    log = StreamLog(aredis, maxlen=100, ttl_s=321)
    for _ in range(10):
        await log.append(
            conversation.id,
            *(TokenEvent(id=1, conversation_id=conversation.id, text="x") for _ in range(100)),
        )
    key = f"gw:conv:{{{conversation.id}}}:log"
    assert await aredis.xlen(key) < 300  # approximate trimming (~) keeps it near maxlen
    assert 0 < await aredis.ttl(key) <= 321
    assert await log.last_id(conversation.id) == 1000


async def test_append_to_deleted_conversation_fails(aredis: aioredis.Redis) -> None:
    """Writing to a deleted conversation raises instead of resurrecting its log."""
    store = ConversationStore(aredis, ttl_s=600)
    conversation = await store.create("alice", "default@000000000000")
    await store.delete(conversation)
    with pytest.raises(ConversationGone):
        await StreamLog(aredis, maxlen=100, ttl_s=60).append(
            conversation.id, TokenEvent(id=1, conversation_id=conversation.id, text="x")
        )
    assert not await aredis.exists(f"gw:conv:{{{conversation.id}}}:log")
