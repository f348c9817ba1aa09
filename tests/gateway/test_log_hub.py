"""The pod's log hub: one reader fans a conversation's entries out to every local follower, local
appends are handed over directly, and every follower gets each event exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from agent_contracts.events import TokenEvent
from local_stack import processes
from streaming_gateway.state import log_hub, redis_keys
from streaming_gateway.state.log_follower import Follower
from streaming_gateway.state.log_hub import BATCH, LogEntry, Subscription
from streaming_gateway.state.stream_log import StreamLog
from tests.fixtures.services import ON_BOTH, ON_CLUSTER, ON_SERVER
from tests.gateway.helpers import NoAnswers, new_conversation
from tests.polling import eventually
from tests.redis_reads import node_port

pytestmark = ON_BOTH


def tokens(cid: str, *texts: str) -> list[TokenEvent]:
    return [TokenEvent(id=1, conversation_id=cid, text=t) for t in texts]


def follower(log: StreamLog, cid: str, stop: asyncio.Event | None = None) -> Follower:
    return Follower(log, NoAnswers(), cid, heartbeat_s=30, stop=stop or asyncio.Event())


async def collect(follower_: Follower, after: int, count: int) -> list[LogEntry]:
    got: list[LogEntry] = []
    async for entry in follower_.entries(after, until_end=False):
        if entry is not None:
            got.append(entry)
            if len(got) == count:
                break
    return got


async def test_remote_appends_fan_out_to_every_local_follower(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """Three followers of one conversation each get every event another pod appends, once, in order."""
    cid = await new_conversation(aredis)
    readers = [asyncio.create_task(collect(follower(pod, cid), 0, 30)) for _ in range(3)]
    for i in range(10):
        await other_pod.append(cid, *tokens(cid, f"{i}a", f"{i}b", f"{i}c"))
    for got in await asyncio.gather(*readers):
        assert [e.id for e in got] == list(range(1, 31))
        assert got[4].data == f'{{"id":5,"conversation_id":"{cid}","type":"token","text":"1b"}}'


async def test_local_appends_are_handed_over(aredis: aioredis.Redis, pod: StreamLog) -> None:
    """Appends made on this pod while its producer runs reach the local follower without the reader."""
    cid = await new_conversation(aredis)
    reader = asyncio.create_task(collect(follower(pod, cid), 0, 20))
    with pod.hub.local_producer(cid):
        for i in range(20):
            await pod.append(cid, *tokens(cid, str(i)))
        got = await reader
    assert [e.id for e in got] == list(range(1, 21))
    assert [e.data for e in got] == [e.data for e in await pod.read(cid, 0)]


async def test_late_joiner_replays_then_follows(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """A follower that joins after events were appended replays them from the log, then follows live."""
    cid = await new_conversation(aredis)
    early = asyncio.create_task(collect(follower(pod, cid), 0, 10))
    await other_pod.append(cid, *tokens(cid, *"abcde"))
    late = asyncio.create_task(collect(follower(pod, cid), 2, 8))
    await pod.append(cid, *tokens(cid, *"fghij"))
    assert [e.id for e in await early] == list(range(1, 11))
    assert [e.id for e in await late] == list(range(3, 11))


async def test_resume_across_hand_off_and_log(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """Resuming from any id while local and remote appends interleave delivers each id exactly once."""
    cid = await new_conversation(aredis)
    await pod.append(cid, *tokens(cid, *"abc"))
    with pod.hub.local_producer(cid):
        for start in range(4):
            reader = asyncio.create_task(collect(follower(pod, cid), start, 6 - start))
            await pod.append(cid, *tokens(cid, "d"))
            await other_pod.append(cid, *tokens(cid, "e"))  # not handed over: a gap the follower fills
            await pod.append(cid, *tokens(cid, "f"))
            got = await reader
            assert [e.id for e in got] == list(range(start + 1, 7)), start
            await aredis.delete(f"gw:conv:{{{cid}}}:log")
            await aredis.hset(f"gw:conv:{{{cid}}}", "seq", 0)
            await pod.append(cid, *tokens(cid, *"abc"))


async def test_out_of_order_hand_off_is_read_from_the_log(aredis: aioredis.Redis, pod: StreamLog) -> None:
    """A hand-off that skips ids makes the follower read the missing ones from the log, then continue."""
    cid = await new_conversation(aredis)
    await pod.append(cid, *tokens(cid, *"abcd"))
    sub = pod.subscribe(cid, 1)
    entries = await pod.read(cid, 0)
    sub.offer(entries[3:])  # id 4 arrives before 2 and 3
    assert sub.take(1) is None  # not continuous: read the log
    sub.caught_up(4)
    sub.offer(entries)  # late duplicates are dropped
    assert sub.take(4) == []
    pod.unsubscribe(sub)


async def test_slow_follower_costs_one_bounded_batch(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """A follower that does not read holds at most one batch; it still gets every event, in order."""
    cid = await new_conversation(aredis)
    stalled = follower(pod, cid)
    entries = stalled.entries(0, until_end=False)
    await other_pod.append(cid, *tokens(cid, "first"))
    first = await anext(entries)
    assert first is not None and first.id == 1
    (sub,) = await subscription(pod, cid)  # the stalled follower's inbox
    with pod.hub.local_producer(cid):
        for i in range(5 * BATCH):
            await pod.append(cid, *tokens(cid, str(i)))
            assert len(sub._entries) <= BATCH
    assert sub.overflowed
    got = []
    async for entry in entries:
        if entry is not None:
            got.append(entry.id)
            if entry.id == 5 * BATCH + 1:
                break
    await entries.aclose()
    assert got == list(range(2, 5 * BATCH + 2))


@ON_SERVER  # the pool of 4 is a single server's; a cluster client has one pool per node
async def test_idle_followers_share_the_pods_connections(aredis: aioredis.Redis, redis_url: str) -> None:
    """200 idle followers on a pod whose pool has 4 connections all follow, and an event for any of
    them arrives: none holds a connection while it waits."""
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, decode_responses=True, max_connections=4)
    client = aioredis.Redis(connection_pool=pool)
    pod = StreamLog(client, maxlen=1000, ttl_s=600)
    cids = [await new_conversation(aredis) for _ in range(200)]
    iterators = [follower(pod, cid).entries(0, until_end=False) for cid in cids]
    waiting = [asyncio.create_task(anext(it)) for it in iterators]

    async def all_following() -> bool:
        return pod.hub.followed() == 200

    await eventually(all_following, "200 followers subscribed")
    await StreamLog(aredis, maxlen=1000, ttl_s=600).append(cids[-1], *tokens(cids[-1], "wake"))
    entry = await waiting[-1]
    assert entry is not None and entry.id == 1
    assert not any(t.done() for t in waiting[:-1])
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for it in iterators:
        await it.aclose()
    await pod.close()
    await client.aclose()
    await pool.disconnect()


async def subscription(pod: StreamLog, cid: str) -> set[Subscription]:
    async def subscribed() -> bool:
        return pod.hub.follows(cid)

    await eventually(subscribed, f"a follower of {cid}")
    return pod.hub._subs[cid]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[processes.Service]:
    service = processes.redis_server(data_dir=tmp_path)
    service.start()
    yield service
    service.stop()


async def test_redis_down_fails_waiting_followers_and_cancel_never_blocks(
    own_redis: processes.Service,
) -> None:
    """When Redis goes away the reader tells the waiting followers (they raise RedisError, and the
    transports end resumably); a follower cancelled then ends at once, leaving its lease to a task."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{own_redis.port}/0", decode_responses=True)
    pod = StreamLog(client, maxlen=1000, ttl_s=600)
    cids = [await new_conversation(client) for _ in range(2)]
    failing = follower(pod, cids[0]).entries(0, until_end=False)
    first = asyncio.create_task(anext(failing))

    async def follow_in_context() -> list[LogEntry]:
        async with follower(pod, cids[1]) as one:
            return await collect(one, 0, 2)

    cancelled = asyncio.create_task(follow_in_context())
    await pod.append(cids[1], *tokens(cids[1], "x"))
    (sub,) = await subscription(pod, cids[1])

    async def delivered() -> bool:
        return sub.tail == 1 and not sub._entries  # the follower took entry 1 and waits for more

    await eventually(delivered, "the second follower past its first event")
    own_redis.stop()
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError, RedisError):
        await cancelled  # returns: nothing in the follower's exit awaits Redis
    with pytest.raises(RedisError):
        await first
    await failing.aclose()
    await pod.close()
    with contextlib.suppress(RedisError):
        await client.aclose()


async def test_a_failed_append_ends_the_local_followers(own_redis: processes.Service) -> None:
    """When Redis goes away under a local producer, its followers end with the error (their transports
    close resumably) instead of waiting for entries that cannot come."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{own_redis.port}/0", decode_responses=True)
    pod = StreamLog(client, maxlen=1000, ttl_s=600)
    cid = await new_conversation(client)
    with pod.hub.local_producer(cid):
        entries = follower(pod, cid).entries(0, until_end=False)
        first = asyncio.create_task(anext(entries))
        await pod.append(cid, *tokens(cid, "a"))
        entry = await first
        assert entry is not None and entry.id == 1
        second = asyncio.create_task(anext(entries))
        own_redis.stop()
        with pytest.raises(RedisError):
            await pod.append(cid, *tokens(cid, "b"))
        with pytest.raises(RedisError):
            await second
    await entries.aclose()
    await pod.close()
    with contextlib.suppress(RedisError):
        await client.aclose()


async def test_a_failed_append_does_not_end_followers_while_redis_answers(
    aredis: aioredis.Redis, pod: StreamLog
) -> None:
    """One failed command (a stale pooled connection after a Redis restart) is no outage: the local
    followers read the log themselves, find it readable, and get the producer's next appends."""
    cid = await new_conversation(aredis)
    with pod.hub.local_producer(cid):
        entries = follower(pod, cid).entries(0, until_end=False)
        await pod.append(cid, *tokens(cid, "a"))
        first = await anext(entries)
        assert first is not None and first.id == 1
        second = asyncio.create_task(anext(entries))
        pod.hub.fail(cid, RedisConnectionError("Connection closed by server."))
        await pod.append(cid, *tokens(cid, "b"))
        entry = await second
        assert entry is not None and entry.id == 2
    await entries.aclose()


async def test_reader_reads_for_a_new_follower_at_once_after_an_outage(
    own_redis: processes.Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed read the reader backs off, but a follower arriving (a client resuming once Redis
    is back) is read for at once: the backoff here is an hour, and the follower still gets its event."""
    monkeypatch.setattr(log_hub, "MIN_BACKOFF_S", 3600.0)
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    client = aioredis.Redis.from_url(url, decode_responses=True)
    pod = StreamLog(client, maxlen=1000, ttl_s=600)
    before = await new_conversation(client)
    waiting = asyncio.create_task(collect(follower(pod, before), 0, 1))
    await subscription(pod, before)
    own_redis.stop()
    with pytest.raises(RedisError):
        await waiting  # its reader failed; its own read of the log failed too
    own_redis.start()

    async def pod_answers() -> bool:  # the pod's pooled connections from before fail once
        try:
            return bool(await client.ping())
        except RedisError:
            return False

    await eventually(pod_answers, "the pod's Redis client answering again")
    other = aioredis.Redis.from_url(url, decode_responses=True)
    other_pod = StreamLog(other, maxlen=1000, ttl_s=600)
    cid = await new_conversation(other)
    resumed = asyncio.create_task(collect(follower(pod, cid), 0, 1))
    await subscription(pod, cid)
    await other_pod.append(cid, *tokens(cid, "after the outage"))
    [entry] = await asyncio.wait_for(resumed, 30)  # a bound on waiting, not a timing check
    assert entry.id == 1
    await pod.close()
    await other_pod.close()
    await other.aclose()
    await client.aclose()


@ON_SERVER  # on a cluster readers go by hash slot (the next test)
async def test_readers_take_a_bounded_share_of_the_conversations(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SHARD_SIZE followed conversations a new reader takes the next ones; each follower still
    gets what another pod appends to its conversation."""
    monkeypatch.setattr(log_hub, "SHARD_SIZE", 3)
    cids = [await new_conversation(aredis) for _ in range(7)]
    readers = [asyncio.create_task(collect(follower(pod, cid), 0, 2)) for cid in cids]

    async def all_following() -> bool:
        return pod.hub.followed() == 7

    await eventually(all_following, "7 followers subscribed")
    assert len(pod.hub._readers) == 3
    for cid in reversed(cids):
        await other_pod.append(cid, *tokens(cid, "x", "y"))
    for got in await asyncio.gather(*readers):
        assert [e.id for e in got] == [1, 2]


@ON_CLUSTER
async def test_on_a_cluster_wakes_replace_the_blocking_readers(
    aredis: aioredis.Redis, pod: StreamLog, other_pod: StreamLog
) -> None:
    """On a cluster no XREAD BLOCK reader is started (one would be needed per hash slot): followers
    of conversations on every node get what another pod appends through the sharded pub/sub reader
    (tests/gateway/test_log_wakes.py)."""
    cids = [await new_conversation(aredis) for _ in range(12)]
    readers = [asyncio.create_task(collect(follower(pod, cid), 0, 2)) for cid in cids]

    async def all_following() -> bool:
        return pod.hub.followed() == 12

    await eventually(all_following, "12 followers subscribed")
    assert pod.hub._readers == []
    assert len({node_port(aredis, redis_keys.event_log(cid)) for cid in cids}) > 1
    for cid in reversed(cids):
        await other_pod.append(cid, *tokens(cid, "x", "y"))
    for got in await asyncio.gather(*readers):
        assert [e.id for e in got] == [1, 2]


@ON_SERVER
async def test_behind_a_cluster_proxy_readers_go_by_hash_slot(
    aredis: aioredis.Redis, other_pod: StreamLog
) -> None:
    """REDIS_MODE=proxy (one endpoint, cluster rules on keys): readers group by slot on the plain client too."""
    pod = StreamLog(aredis, maxlen=10_000, ttl_s=600, by_slot=True)
    cids = [await new_conversation(aredis) for _ in range(6)]
    readers = [asyncio.create_task(collect(follower(pod, cid), 0, 1)) for cid in cids]

    async def all_following() -> bool:
        return pod.hub.followed() == 6

    await eventually(all_following, "6 followers subscribed")
    assert {reader.slot for reader in pod.hub._readers} == {
        key_slot(redis_keys.event_log(cid).encode()) for cid in cids
    }
    for cid in cids:
        await other_pod.append(cid, *tokens(cid, "x"))
    for got in await asyncio.gather(*readers):
        assert [e.id for e in got] == [1]
    await pod.close()


async def test_a_cancel_lost_on_the_way_still_ends_the_follower(
    aredis: aioredis.Redis, pod: StreamLog
) -> None:
    """A follower's task is asked to stop but the CancelledError is lost before it ends the
    follower (here the consumer swallows it): the follower still ends at its next wait, so whoever awaits the cancelled task is not left
    waiting (a WebSocket starting a new turn did, for ever)."""
    cid = await new_conversation(aredis)
    await pod.append(cid, *tokens(cid, "a"))
    reached_wait = asyncio.Event()

    async def follow_and_lose_the_cancel() -> list[int]:
        seen: list[int] = []
        entries = follower(pod, cid).entries(0, until_end=False)
        async for entry in entries:
            if entry is not None:
                seen.append(entry.id)
                reached_wait.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(30)  # the cancel lands here and is lost; the task still counts it
        return seen

    task = asyncio.create_task(follow_and_lose_the_cancel())
    await reached_wait.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)
