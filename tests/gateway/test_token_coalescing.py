"""Token writes coalesce while an append is in flight: fewer Redis round trips, same log, same order."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from agent_contracts.events import MessageEndEvent, TokenEvent
from agent_contracts.redis_connection import AnyRedis
from streaming_gateway.errors import ConversationGone
from streaming_gateway.keys import engine_key, redis_key
from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.stream_log import LogWriter, StreamLog, Triple, Written
from tests.fixtures.gateway import Gateway
from tests.gateway.helpers import data, read_events, text_of
from tests.polling import eventually
from tests.redis_reads import stream_entries

SSE = {"Accept": "text/event-stream"}


class GatedLog(StreamLog):
    """The real stream log, with each append held at a gate the test opens (to choose what is in
    flight when) and every batch it is given recorded."""

    def __init__(self, redis: AnyRedis) -> None:
        super().__init__(redis, maxlen=10_000, ttl_s=600)
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[list[str]] = []
        self.holding = asyncio.Event()  # set while an append waits at the closed gate
        self.writers: list[LogWriter] = []

    def writer(self, conversation_id: str, *, max_batch: int, **options: Any) -> LogWriter:
        self.writers.append(super().writer(conversation_id, max_batch=max_batch, **options))
        return self.writers[-1]

    async def write(self, conversation_id: str, triples: Sequence[Triple], **options: Any) -> Written:
        if options.get("op") == "claim":  # an owning writer's claim of the ids: not a batch
            return await super().write(conversation_id, triples, **options)
        self.batches.append([json.loads(payload).get("text", kind) for kind, payload, _ in triples])
        if not self.gate.is_set():
            self.holding.set()
            await self.gate.wait()
            self.holding.clear()
        return await super().write(conversation_id, triples, **options)


def token(cid: str, text: str) -> TokenEvent:
    return TokenEvent(id=1, conversation_id=cid, message_id="msg_1", text=text)


async def new_conversation(aredis: aioredis.Redis) -> str:
    return (await ConversationStore(aredis, ttl_s=600).create("alice", "default@000000000000")).id


async def logged(aredis: aioredis.Redis, cid: str) -> list[tuple[int, str, dict[str, Any]]]:
    """The raw log in Redis: (id, type, payload) per entry, in stream order."""
    entries = await stream_entries(aredis, f"gw:conv:{{{cid}}}:log")
    return [
        (int(entry_id.split("-")[1]), fields["t"], json.loads(fields["e"])) for entry_id, fields in entries
    ]


async def test_tokens_arriving_during_an_append_share_the_next_one(aredis: aioredis.Redis) -> None:
    """While one append is in flight, 40 tokens are buffered and written by one more append, in order."""
    cid = await new_conversation(aredis)
    log = GatedLog(aredis)
    writer = log.writer(cid, max_batch=64)
    log.gate.clear()
    await writer.write(token(cid, "t0"))
    await log.holding.wait()  # the first token went out on its own, at once
    for i in range(1, 41):
        await writer.write(token(cid, f"t{i}"))
    log.gate.set()
    await writer.flush()
    assert log.batches == [["t0"], [f"t{i}" for i in range(1, 41)]]
    assert writer.batches == [1, 40]
    entries = await logged(aredis, cid)
    assert [entry_id for entry_id, _, _ in entries] == list(range(1, 42))
    assert [payload["text"] for _, _, payload in entries] == [f"t{i}" for i in range(41)]


async def test_slow_model_gets_each_token_appended_on_its_own(aredis: aioredis.Redis) -> None:
    """A token given while no append is in flight is sent by the time write returns, alone, and lands
    in the log without a flush or a later token."""
    cid = await new_conversation(aredis)
    log = GatedLog(aredis)
    writer = log.writer(cid, max_batch=64)
    for i in range(1, 11):
        log.gate.clear()
        await writer.write(token(cid, f"t{i}"))
        assert log.holding.is_set() and log.batches[-1] == [f"t{i}"]  # already sent: no batching window
        log.gate.set()
        # The "model" is slow: the next token only comes once this one is readable by a follower.
        entries = await log.read(cid, i - 1, block_ms=10_000)
        assert [(e.id, json.loads(e.data)["text"]) for e in entries] == [(i, f"t{i}")]
        await writer.flush()  # its reply processed too: the writer is idle when the next token comes
    assert writer.batches == [1] * 10


async def test_full_buffer_makes_the_producer_wait(aredis: aioredis.Redis) -> None:
    """At max_batch buffered tokens the producer waits for the append in flight; no batch is larger."""
    cid = await new_conversation(aredis)
    log = GatedLog(aredis)
    writer = log.writer(cid, max_batch=8)
    log.gate.clear()
    await writer.write(token(cid, "t0"))
    await log.holding.wait()
    for i in range(1, 8):
        await writer.write(token(cid, f"t{i}"))  # room in the buffer: returns at once
    blocked = asyncio.create_task(writer.write(token(cid, "t8")))
    for _ in range(20):
        await asyncio.sleep(0)  # a yield, not a wait: nothing can free the buffer while the gate is shut
    assert not blocked.done()
    log.gate.set()
    await blocked
    for i in range(9, 30):
        await writer.write(token(cid, f"t{i}"))
    await writer.flush()
    assert all(len(batch) <= 8 for batch in log.batches)
    assert log.batches[:2] == [["t0"], [f"t{i}" for i in range(1, 9)]]
    assert [payload["text"] for _, _, payload in await logged(aredis, cid)] == [f"t{i}" for i in range(30)]


async def test_append_failure_is_raised_and_nothing_after_it_is_written(aredis: aioredis.Redis) -> None:
    """The conversation deleted under a batch: flush raises ConversationGone, later writes raise it too."""
    store = ConversationStore(aredis, ttl_s=600)
    conversation = await store.create("alice", "default@000000000000")
    cid = conversation.id
    log = GatedLog(aredis)
    writer = log.writer(cid, max_batch=64)
    await writer.write(token(cid, "kept"))
    await writer.flush()
    log.gate.clear()
    await writer.write(token(cid, "t1"))
    await log.holding.wait()
    await writer.write(token(cid, "t2"))
    await store.delete(conversation)
    log.gate.set()
    with pytest.raises(ConversationGone):
        await writer.flush()
    with pytest.raises(ConversationGone):
        await writer.write(token(cid, "t3"))
    assert log.batches == [["kept"], ["t1"]]  # t2 was dropped with the failed write, never sent after it
    assert not await aredis.exists(f"gw:conv:{{{cid}}}:log")


async def test_redis_unreachable_fails_the_writer_with_a_redis_error() -> None:
    """A writer on a Redis nobody listens on raises the connection error at the next flush and write."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        writer = StreamLog(client, maxlen=100, ttl_s=60).writer("conv_x", max_batch=4)
        await writer.write(token("conv_x", "t0"))
        with pytest.raises(RedisConnectionError):
            await writer.flush()
        assert isinstance(await writer.settle(), RedisConnectionError)
        with pytest.raises(RedisConnectionError):
            await writer.write(token("conv_x", "t1"))
    finally:
        await client.aclose()


async def test_a_cancelled_write_still_lands_before_the_end(aredis: aioredis.Redis) -> None:
    """Cancelling the producer while it waits on a full buffer keeps its token; settle then lands them all."""
    cid = await new_conversation(aredis)
    log = GatedLog(aredis)
    writer = log.writer(cid, max_batch=2)
    log.gate.clear()
    await writer.write(token(cid, "t0"))
    await log.holding.wait()
    await writer.write(token(cid, "t1"))
    blocked = asyncio.create_task(writer.write(token(cid, "t2")))
    for _ in range(20):
        await asyncio.sleep(0)  # yield only: the write is parked on the full buffer
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    log.gate.set()
    assert await writer.settle() is None
    await log.append(cid, MessageEndEvent(id=1, conversation_id=cid, finish_reason="cancelled"))
    entries = await logged(aredis, cid)
    assert [(entry_id, kind) for entry_id, kind, _ in entries] == [
        (1, "token"),
        (2, "token"),
        (3, "token"),
        (4, "message_end"),
    ]


async def _evalsha_calls(aredis: aioredis.Redis) -> int:
    stats = await aredis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_fast_answer_through_the_gateway_takes_fewer_appends_than_tokens(
    gateway: Gateway, script, aredis: aioredis.Redis
) -> None:
    """400 tokens sent at once by the model: every token reaches the client once, in order, with
    consecutive ids, and the gateway ran far fewer scripts than there were tokens."""
    await script([{"match": "", "tokens": 400}])
    cid = await gateway.create_conversation()
    before = await _evalsha_calls(aredis)
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        events = await read_events(response)
    after = await _evalsha_calls(aredis)
    tokens = [e for e in events if e.type == "token"]
    assert text_of(events) == " ".join(f"word{i}" for i in range(400))
    ids = [data(e)["id"] for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert events[-1].type == "message_end" and data(events[-1])["finish_reason"] == "stop"
    # One script per token plus the turn's few (lock, save, end) is what no coalescing costs.
    assert after - before < len(tokens) // 2, (after - before, len(tokens))


async def test_cancel_with_tokens_buffered_lands_them_before_the_end(
    gateway: Gateway, script, aredis: aioredis.Redis
) -> None:
    """Cancelled while one append is held and 16 tokens wait behind it: all 17 land, then message_end,
    and the saved answer is exactly the logged text."""
    engine = gateway.app[engine_key]
    gated = GatedLog(gateway.app[redis_key])
    engine.log = gated  # the engine's producers and followers now share the gated log
    gated.gate.clear()
    await script([{"match": "", "tokens": 20_000}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        await gated.holding.wait()

        async def buffer_full() -> bool:
            return gated.writers[-1].buffered == engine.settings.token_batch_max

        await eventually(buffer_full, "the producer to fill its buffer behind the held append")
        async with gateway.request("POST", f"/v1/conversations/{cid}/cancel") as cancel:
            assert cancel.status == 202
        gated.gate.set()
        events = await read_events(response)
    assert [e.type for e in events][-1] == "message_end" and data(events[-1])["finish_reason"] == "cancelled"
    entries = await logged(aredis, cid)
    expected = [f"word{i}" for i in range(engine.settings.token_batch_max + 1)]
    assert [(kind, payload.get("text")) for _, kind, payload in entries] == [
        *(("token", (" " if i else "") + word) for i, word in enumerate(expected)),
        ("message_end", None),
    ]
    assert [entry_id for entry_id, _, _ in entries] == list(range(1, len(entries) + 1))
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        stored = (await response.json())["messages"][-1]
    assert stored["finish_reason"] == "cancelled" and stored["content"] == " ".join(expected)
