"""A producer owns its conversation's log ids while it answers: it hands each event to the followers
on its pod before persisting it, other writers' entries wait until it lets the ids go, and every
entry a follower was shown ends up in the log under the id shown, so a resume anywhere gets each
event once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from agent_contracts.events import ActionStatusEvent, ErrorEvent, MessageEndEvent, TokenEvent
from streaming_gateway.errors import Conflict, NotFound
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import ConversationStore, TurnRequest
from streaming_gateway.state.log_follower import Follower
from streaming_gateway.state.log_hub import BATCH, LogEntry
from streaming_gateway.state.stream_log import OWNER_LEASE_S, StreamLog, triple
from tests.fixtures.gateway import Gateway
from tests.fixtures.services import ON_BOTH
from tests.gateway.helpers import NoAnswers, data, new_conversation, read_events, recording_ops
from tests.gateway.sse_client import SseParser
from tests.polling import eventually

pytestmark = ON_BOTH

SSE = {"Accept": "text/event-stream"}


def token(cid: str, text: str) -> TokenEvent:
    return TokenEvent(id=1, conversation_id=cid, message_id="msg_1", text=text)


def action(cid: str) -> ActionStatusEvent:
    return ActionStatusEvent(id=1, conversation_id=cid, action_id="a1", name="x", status="queued")


def ending(cid: str) -> MessageEndEvent:
    return MessageEndEvent(id=1, conversation_id=cid, message_id="msg_1", finish_reason="stop")


def follower(log: StreamLog, cid: str) -> Follower:
    return Follower(log, NoAnswers(), cid, heartbeat_s=30, stop=asyncio.Event())


async def until_end(log: StreamLog, cid: str, after: int) -> list[LogEntry]:
    """What a client following (or resuming) from `after` on this pod gets, up to the answer's end."""
    return [e async for e in follower(log, cid).entries(after, until_end=True) if e is not None]


async def following(log: StreamLog, cid: str, after: int = 0) -> asyncio.Task[list[LogEntry]]:
    """A follower from `after` in its own task, once it is subscribed in the pod's hub."""
    task = asyncio.create_task(until_end(log, cid, after))
    await eventually(lambda: _true(log.hub.follows(cid)), "the follower to subscribe")
    return task


async def _true(value: bool) -> bool:
    return value


def _on_node(aredis: Any, key: str) -> Callable[..., Awaitable[Any]]:
    """A command runner for the Redis node holding `key` (the only one on a single server)."""
    if isinstance(aredis, RedisCluster):
        node = aredis.get_node_from_key(key)
        return lambda *args: aredis.execute_command(*args, target_nodes=node)
    return lambda *args: aredis.execute_command(*args)


@contextlib.asynccontextmanager
async def writes_paused(aredis: aioredis.Redis, cid: str) -> AsyncIterator[None]:
    """Redis holds every write (scripts included) of the conversation's node; reads still answer.
    The pause lapses by itself after a minute, so a test whose follower waits for a write fails
    instead of hanging."""
    run = _on_node(aredis, redis_keys.conversation(cid))
    await run("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        yield
    finally:
        await run("CLIENT", "UNPAUSE")


@contextlib.asynccontextmanager
async def conversation_broken(aredis: aioredis.Redis, cid: str) -> AsyncIterator[None]:
    """The conversation's hash set aside and a string in its place: every log write fails
    (WRONGTYPE, a Redis error) until the block ends and the hash is back, its TTL kept."""
    key, aside = redis_keys.conversation(cid), f"{redis_keys.conversation(cid)}:aside"
    await aredis.rename(key, aside)
    await aredis.set(key, "broken")
    try:
        yield
    finally:
        await aredis.delete(key)
        await aredis.rename(aside, key)


async def test_local_followers_get_entries_before_their_append_returns(
    aredis: aioredis.Redis, pod: StreamLog
) -> None:
    """With Redis's writes paused, a follower on the producer's pod already has the next token under
    its id while its append waits and the log does not have it; once writes resume the log holds
    it under that id, same bytes."""
    cid = await new_conversation(aredis)
    got = await following(pod, cid)
    writer = pod.writer(cid, max_batch=64, own=True)
    with pod.hub.local_producer(cid):
        await writer.write(token(cid, "persisted"))
        await writer.flush()
        async with writes_paused(aredis, cid):
            await writer.write(token(cid, "shown first"))  # its append goes out and waits
            sub = next(iter(pod.hub._subs[cid]))  # the follower's inbox

            async def handed_over() -> bool:
                return sub.tail == 2

            # (Without the early hand-off the append times out under the pause: fail, not hang.)
            await eventually(handed_over, "token 2 handed to the follower while its append waits")
            assert [e.id for e in await pod.read(cid, 0)] == [1]
            assert writer.buffered == 0  # sent, not waiting in the writer
        await writer.write(ending(cid))
        await writer.end()
    shown = await got
    assert [e.id for e in shown] == [1, 2, 3]
    assert [e.data for e in await pod.read(cid, 0)] == [e.data for e in shown]
    assert writer.shown_early == 3


async def test_ids_stay_unique_and_increasing_with_another_pod_writing_mid_answer(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """Another pod's entry given mid-answer waits for the producer's end and lands just before it:
    ids 1..n without a repeat or a hole, and the follower saw exactly the log."""
    cid = await new_conversation(aredis)
    got = await following(pod, cid)
    writer = pod.writer(cid, max_batch=64, own=True)
    with pod.hub.local_producer(cid):
        for i in range(5):
            await writer.write(token(cid, f"a{i}"))
        await writer.flush()
        assert await other_pod.append(cid, action(cid)) == 5  # deferred: the log's last id unchanged
        for i in range(5):
            await writer.write(token(cid, f"b{i}"))
        last = await writer.end(ending(cid))
    shown = await got
    logged = await pod.read(cid, 0)
    assert last == 12
    assert [e.id for e in logged] == list(range(1, 13))
    assert [e.type for e in logged] == ["token"] * 10 + ["action_status", "message_end"]
    assert [e.data for e in shown] == [e.data for e in logged]
    assert writer.shown_early == 10
    assert not await aredis.exists(redis_keys.log_owner(cid), redis_keys.log_deferred(cid))


async def test_a_failed_persist_ends_with_a_retryable_error_and_every_resume_gets_the_rest_once(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """A token shown and then not persisted (the append fails) is written by the producer's end under
    the id shown, before another pod's deferred entry, a retryable error and the end; resuming from
    every id, on this pod or another, gets exactly the entries after it."""
    cid = await new_conversation(aredis)
    got = await following(pod, cid)
    writer = pod.writer(cid, max_batch=64, own=True)
    with pod.hub.local_producer(cid):
        await writer.write(token(cid, "t0"))
        await writer.flush()
        await other_pod.append(cid, action(cid))
        async with conversation_broken(aredis, cid):
            await writer.write(token(cid, "t1"))  # shown at once as id 2; its append fails
            assert isinstance(await writer.settle(), RedisError)
            with pytest.raises(RedisError):
                await writer.write(token(cid, "t2"))  # after the failure: dropped, never shown
            error = ErrorEvent(
                id=1, conversation_id=cid, code="state_unavailable", message="try again", retryable=True
            )
            end = MessageEndEvent(id=1, conversation_id=cid, message_id="msg_1", finish_reason="error")
            with pytest.raises(RedisError):
                await writer.end(error, end)  # still failing: the caller tries again later
            assert [e.id for e in await pod.read(cid, 0)] == [1]
        await writer.end(error, end)
    shown = await got
    logged = await pod.read(cid, 0)
    assert [(e.id, e.type) for e in logged] == [
        (1, "token"),
        (2, "token"),
        (3, "action_status"),
        (4, "error"),
        (5, "message_end"),
    ]
    assert '"text":"t1"' in logged[1].data and '"retryable":true' in logged[3].data
    assert [e.data for e in shown] == [e.data for e in logged]
    for after in range(len(logged)):
        for log in (pod, other_pod):
            rest = await until_end(log, cid, after)
            assert [e.data for e in rest] == [e.data for e in logged[after:]], (after, log is pod)


async def test_a_slow_follower_costs_one_bounded_batch_of_early_entries(
    aredis: aioredis.Redis, pod: StreamLog
) -> None:
    """A follower that does not read holds at most one batch of the entries handed to it before
    they are persisted; once it reads, it gets every entry once, in order, from the log."""
    cid = await new_conversation(aredis)
    stalled = follower(pod, cid)
    entries = stalled.entries(0, until_end=True)
    writer = pod.writer(cid, max_batch=64, own=True)
    with pod.hub.local_producer(cid):
        await writer.write(token(cid, "first"))
        first = await anext(entries)
        assert first is not None and first.id == 1
        (sub,) = pod.hub._subs[cid]  # the stalled follower's inbox
        for i in range(5 * BATCH):
            await writer.write(token(cid, str(i)))
            assert len(sub._entries) <= BATCH
        assert sub.overflowed
        await writer.end(ending(cid))
    got = [e.id async for e in entries if e is not None]
    assert got == list(range(2, 5 * BATCH + 3))
    assert writer.shown_early == 5 * BATCH + 1  # every token; the end is shown once persisted


async def test_the_write_script_keeps_ids_to_their_owner(aredis: aioredis.Redis, pod: StreamLog) -> None:
    """An owner's write sent twice lands once; an id holding another entry, or ids another producer
    owns, are refused; a plain writer waits; the release lands its deferred entry before its own."""
    cid = await new_conversation(aredis)
    t0, other = triple(token(cid, "t0")), triple(token(cid, "not t0"))
    assert (await pod.write(cid, [], token="a", op="claim")).status == 1
    assert (await pod.write(cid, [t0], token="a", op="keep", first=1, fixed=1)).last == 1
    assert (await pod.write(cid, [t0], token="a", op="keep", first=1, fixed=1)).last == 1
    assert (await pod.write(cid, [other], token="a", op="keep", first=1, fixed=1)).status == -1
    assert (await pod.write(cid, [t0], token="a", op="keep", first=3, fixed=1)).status == -1  # a hole
    assert (await pod.write(cid, [], token="b", op="claim")).status == -1
    assert await pod.append(cid, action(cid)) == 1  # deferred
    released = await pod.write(cid, [triple(ending(cid))], token="a", op="release")
    assert (released.status, released.last) == (1, 3)
    assert (await pod.write(cid, [triple(ending(cid))], token="a", op="release")).status == 2
    assert [e.type for e in await pod.read(cid, 0)] == ["token", "action_status", "message_end"]
    assert (await pod.write(cid, [], token="b", op="claim")).top == 3  # free again


async def test_client_gets_tokens_while_redis_holds_the_appends(
    gateway: Gateway, script: Callable[..., Awaitable[None]], aredis: aioredis.Redis, pod: StreamLog
) -> None:
    """Through the gateway: with Redis's writes paused mid-answer, the SSE client still receives
    tokens the log does not hold yet; after the pause the log holds exactly what it received."""
    await script([{"match": "", "tokens": 40, "token_delay_ms": 20}])
    cid = await gateway.create_conversation()
    parser = SseParser()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        events = await read_events(response, stop_after=2, parser=parser)
        async with writes_paused(aredis, cid):
            ahead = False
            while not ahead:
                async with asyncio.timeout(60):  # a client waiting for Redis fails the test, not hangs
                    (event,) = await read_events(response, stop_after=1, parser=parser)
                events.append(event)
                assert event.type == "token", event
                persisted = {e.id for e in await pod.read(cid, 0)}
                ahead = data(event)["id"] not in persisted
        events += await read_events(response, parser=parser)
    logged = await pod.read(cid, 0)
    assert [data(e)["id"] for e in events] == [e.id for e in logged] == list(range(1, 42))
    assert [data(e) for e in events] == [json.loads(e.data) for e in logged]


def turn(cid: str, turn_id: str, *, max_messages: int = 10, create: Any = None) -> TurnRequest:
    """A turn of one user message that takes the log's ids for its first step."""
    message = [{"role": "user", "content": "hi"}]
    return TurnRequest(cid, turn_id, message, max_messages, 60, 0, create=create, take_ids=True)


async def test_a_turns_first_step_owns_the_ids_its_begin_turn_took(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """begin_turn takes the log's ids with the turn (the owner key under the lease, the hash field,
    the turn id as the token): another pod's entry waits from then on, and the step's writer built
    from it sends no claim, shows its tokens early and lets the ids go at its end."""
    store = ConversationStore(aredis, ttl_s=600)
    cid = await new_conversation(aredis)
    start = await store.begin(turn(cid, "turn_1"))
    assert start.ids is not None and (start.ids.token, start.ids.top) == ("turn_1", 0)
    assert await aredis.get(redis_keys.log_owner(cid)) == "turn_1"
    assert 0 < await aredis.pttl(redis_keys.log_owner(cid)) <= OWNER_LEASE_S * 1000
    assert (await store.get(cid)).ids_ahead  # type: ignore[union-attr]
    assert await other_pod.append(cid, action(cid)) == 0  # deferred: the ids are the turn's
    ops = recording_ops(pod, monkeypatch)
    got = await following(pod, cid)
    writer = pod.writer(cid, max_batch=64, own=True, claimed=start.ids)
    with pod.hub.local_producer(cid):
        for i in range(5):
            await writer.write(token(cid, f"t{i}"))
        last = await writer.end(ending(cid))
    shown = await got
    logged = await pod.read(cid, 0)
    assert last == 7
    assert [(e.id, e.type) for e in logged] == [(i, "token") for i in range(1, 6)] + [
        (6, "action_status"),
        (7, "message_end"),
    ]
    assert [e.data for e in shown] == [e.data for e in logged]
    assert writer.shown_early == 5
    assert "claim" not in {op for op, _ in ops} and {token for _, token in ops} == {"turn_1"}
    assert not await aredis.exists(redis_keys.log_owner(cid), redis_keys.log_deferred(cid))
    assert await aredis.hget(redis_keys.conversation(cid), "owner") is None


async def test_a_refused_turn_takes_no_ids(aredis: aioredis.Redis) -> None:
    """A begin_turn refused as busy, full or gone, or a new conversation's refused as full, takes
    no ids: no owner key, no `owner` field, a busy conversation's producer keeps its own."""
    store = ConversationStore(aredis, ttl_s=600)
    cid = await new_conversation(aredis)
    await store.begin(turn(cid, "turn_1"))
    with pytest.raises(Conflict, match="still answering"):
        await store.begin(turn(cid, "turn_2"))
    assert await aredis.get(redis_keys.log_owner(cid)) == "turn_1"
    full = await new_conversation(aredis)
    with pytest.raises(Conflict, match="limit"):
        await store.begin(turn(full, "turn_3", max_messages=1))
    gone = await new_conversation(aredis)
    await aredis.delete(redis_keys.conversation(gone))
    with pytest.raises(NotFound):
        await store.begin(turn(gone, "turn_4"))
    new = store.new("alice", "default@000000000000")
    with pytest.raises(Conflict, match="limit"):
        await store.begin(turn(new.id, "turn_5", max_messages=1, create=new))
    for refused in (full, gone, new.id):
        assert not await aredis.exists(redis_keys.log_owner(refused), redis_keys.busy(refused))
        assert await aredis.hget(redis_keys.conversation(refused), "owner") is None


async def test_begin_turn_leaves_ids_held_by_a_lapsed_producer_to_the_steps_own_claim(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """With entries deferred under a producer whose lease lapsed, begin_turn takes the turn but not
    the ids; the step's writer claims them itself, which appends those entries first: ids stay
    unique and increasing. With a producer still owning them, the step writes as a plain writer."""
    store = ConversationStore(aredis, ttl_s=600)
    cid = await new_conversation(aredis)
    assert (await pod.write(cid, [], token="lapsed", op="claim")).status == 1
    assert await other_pod.append(cid, action(cid)) == 0  # deferred
    await aredis.delete(redis_keys.log_owner(cid))  # the producer died: its lease lapsed
    start = await store.begin(turn(cid, "turn_1"))
    assert start.ids is None and await aredis.get(redis_keys.log_owner(cid)) is None
    writer = pod.writer(cid, max_batch=64, own=True, claimed=start.ids)
    await writer.write(token(cid, "t0"))
    await writer.end(ending(cid))
    assert [(e.id, e.type) for e in await pod.read(cid, 0)] == [
        (1, "action_status"),
        (2, "token"),
        (3, "message_end"),
    ]
    await store.release_turn(cid, "turn_1")
    assert (await pod.write(cid, [], token="other", op="claim")).status == 1  # a live producer
    start = await store.begin(turn(cid, "turn_2"))
    assert start.ids is None and await aredis.get(redis_keys.log_owner(cid)) == "other"
