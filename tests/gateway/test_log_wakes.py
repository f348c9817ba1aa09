"""The pod's log reader on a Redis Cluster: one sharded pub/sub connection per node whatever the pod
follows, remote appends reach local followers through wakes, and a lost subscription (a killed
connection, a slot moved to another node) is made again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis

from agent_contracts.redis_connection import AnyRedis, connect
from local_stack.redis_cluster import LocalRedisCluster
from streaming_gateway.state import log_wakes, redis_keys
from streaming_gateway.state.log_hub import LogEntry, Subscription
from streaming_gateway.state.log_wakes import CLIENT_NAME
from streaming_gateway.state.stream_log import StreamLog
from tests.fixtures.services import ON_CLUSTER
from tests.gateway.helpers import new_conversation
from tests.gateway.test_log_hub import collect, follower, tokens
from tests.polling import eventually

pytestmark = ON_CLUSTER

POD = "pod-under-test"


@pytest.fixture
def no_safety_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only wakes (and resubscriptions) bring entries: the safety poll would hide a lost one."""
    monkeypatch.setattr(log_wakes, "SAFETY_POLL_S", 3600.0)


@pytest.fixture
async def pod_client(redis_url: str) -> AsyncIterator[AnyRedis]:
    """The pod's own cluster client, its connections named so CLIENT LIST can tell them."""
    client = await connect(redis_url, decode_responses=True, client_name=POD)
    yield client
    await client.aclose()


@pytest.fixture
async def pod(pod_client: AnyRedis) -> AsyncIterator[StreamLog]:
    log = StreamLog(pod_client, maxlen=10_000, ttl_s=600)
    yield log
    await log.close()


def clients_by_node(ports: list[int]) -> dict[int, list[dict[str, str]]]:
    """CLIENT LIST of every node, each client as its fields."""
    found: dict[int, list[dict[str, str]]] = {}
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
            found[port] = list(node.client_list())
    return found


def subscribed_channels(ports: list[int]) -> int:
    return sum(
        int(client.get("ssub", 0)) for clients in clients_by_node(ports).values() for client in clients
    )


async def all_subscribed(ports: list[int], count: int) -> None:
    async def done() -> bool:
        return subscribed_channels(ports) == count

    await eventually(done, f"{count} wake channels subscribed")


async def node_ports(aredis: AnyRedis) -> list[int]:
    await aredis.initialize()
    return [int(node.port) for node in aredis.get_primaries()]  # type: ignore[union-attr]


async def received(sub: Subscription, last_id: int) -> list[int]:
    """Wait until the inbox holds entries after last_id; their ids."""
    while not (taken := sub.take(last_id)):
        assert taken is not None, "the inbox asked for a log read: a wake brought a gap"
        await sub.wake.wait()
    return [entry.id for entry in taken]


async def test_connections_per_node_stay_constant_as_followed_conversations_grow(
    aredis: AnyRedis, pod: StreamLog, other_pod: StreamLog, no_safety_poll: None
) -> None:
    """Following 3 or 90 conversations spread over every node, the pod's log reader holds one
    subscriber and its pooled connections per node stay as few (none blocked), and each inbox gets what
    another pod appends."""
    ports = await node_ports(aredis)
    counts: list[dict[int, int]] = []
    subs: list[Subscription] = []
    seen: dict[str, int] = {}
    for total in (3, 90):
        while len(subs) < total:
            subs.append(pod.subscribe(await new_conversation(cast(Any, aredis)), 0))
        await all_subscribed(ports, total)
        for sub in subs:
            await other_pod.append(sub.conversation_id, *tokens(sub.conversation_id, "x"))
        for sub in subs:
            last = seen.get(sub.conversation_id, 0)
            assert await received(sub, last) == [last + 1]
            seen[sub.conversation_id] = last + 1
        owners = {aredis.get_node_from_key(redis_keys.event_log(s.conversation_id)).port for s in subs}  # type: ignore[union-attr]
        clients = clients_by_node(ports)
        counts.append(
            {
                port: sum(1 for c in found if c.get("name") in (POD, CLIENT_NAME))
                for port, found in clients.items()
            }
        )
        for port, found in clients.items():
            assert sum(1 for c in found if c.get("name") == CLIENT_NAME) == (1 if port in owners else 0)
            assert not any("b" in c.get("flags", "") for c in found if c.get("name") == POD)  # none blocked
    assert len(owners) == 3
    # Per node: the subscriber, the pooled connection the reads use, and on the node the URL names
    # the client's topology queries. A reader per followed slot would hold about 30 per node here.
    assert all(count <= 3 for found in counts for count in found.values()), counts
    assert pod.hub.wake_connections() == 3


async def test_a_killed_subscriber_connection_is_made_again(
    aredis: AnyRedis, pod: StreamLog, other_pod: StreamLog, no_safety_poll: None
) -> None:
    """When every node drops the pod's subscriber connections, they are made and subscribed again,
    and the next remote append still reaches the follower."""
    ports = await node_ports(aredis)
    cids = [await new_conversation(cast(Any, aredis)) for _ in range(6)]
    readers = [asyncio.create_task(collect(follower(pod, cid), 0, 2)) for cid in cids]
    await all_subscribed(ports, 6)
    for cid in cids:
        await other_pod.append(cid, *tokens(cid, "before"))
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            node.client_kill_filter(_type="pubsub")
    await all_subscribed(ports, 6)
    for cid in cids:
        await other_pod.append(cid, *tokens(cid, "after"))
    for got in await delivered(readers):
        assert [e.id for e in got] == [1, 2]


async def delivered(readers: list[asyncio.Task[list[LogEntry]]]) -> list[list[LogEntry]]:
    """What every reader got; a reader still waiting after a minute fails the test instead of
    hanging the suite (the safety poll, which would rescue it in service, is off in these tests)."""
    _, waiting = await asyncio.wait(readers, timeout=60)
    for task in waiting:
        task.cancel()
    assert not waiting, f"{len(waiting)} of {len(readers)} followers still waiting for entries"
    return [task.result() for task in readers]


async def test_a_missed_wake_is_caught_by_the_safety_poll(
    aredis: AnyRedis, pod: StreamLog, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append that publishes no wake (a pod that does not, here one grouping reads by slot) still
    reaches the follower, through the slow poll of every followed conversation."""
    monkeypatch.setattr(log_wakes, "SAFETY_POLL_S", 0.5)
    client = await connect(redis_url, decode_responses=True)
    silent = StreamLog(client, maxlen=1000, ttl_s=600, by_slot=True)
    cid = await new_conversation(cast(Any, aredis))
    reader = asyncio.create_task(collect(follower(pod, cid), 0, 1))
    await all_subscribed(await node_ports(aredis), 1)
    assert silent.hub.wake_channel(cid) is None
    await silent.append(cid, *tokens(cid, "quiet"))
    [entry] = await reader
    assert entry.id == 1
    await silent.close()
    await client.aclose()


@pytest.fixture
def own_cluster(tmp_path: Path, output_dir: Path) -> Iterator[LocalRedisCluster]:
    """A cluster of this test's own: its slots are moved."""
    cluster = LocalRedisCluster(primaries=3, data_dir=tmp_path, log_dir=output_dir).start()
    yield cluster
    cluster.stop()


async def test_a_followed_slot_moved_to_another_node_is_subscribed_there(
    own_cluster: LocalRedisCluster, no_safety_poll: None
) -> None:
    """A slot migrated while its conversation is followed: the pod subscribes on the new owner, and
    appends there reach the follower."""
    pod_client = await connect(own_cluster.url, decode_responses=True)
    other_client = await connect(own_cluster.url, decode_responses=True)
    pod = StreamLog(pod_client, maxlen=1000, ttl_s=600)
    other = StreamLog(other_client, maxlen=1000, ttl_s=600)
    cid = await new_conversation(pod_client)
    reader = asyncio.create_task(collect(follower(pod, cid), 0, 3))
    await all_subscribed(own_cluster.ports, 1)
    await other.append(cid, *tokens(cid, "a"))
    slot = pod_client.keyslot(redis_keys.log_wake(cid))  # type: ignore[union-attr]
    owner = pod_client.get_node_from_key(redis_keys.log_wake(cid)).port  # type: ignore[union-attr]
    target = next(port for port in own_cluster.ports if port != owner)
    assert own_cluster.migrate_slot(slot, target) == owner

    async def subscribed_on_target() -> bool:
        with redis.Redis(host="127.0.0.1", port=target, decode_responses=True) as node:
            return any(int(c.get("ssub", 0)) for c in node.client_list())

    await eventually(subscribed_on_target, "the wake channel subscribed on the slot's new owner")
    await other.append(cid, *tokens(cid, "b"))
    await other.append(cid, *tokens(cid, "c"))
    got = await reader
    assert [e.id for e in got] == [1, 2, 3]
    await pod.close()
    await other.close()
    for client in (pod_client, other_client):
        await client.aclose()


async def test_sharded_wake_channel_shares_the_logs_slot(aredis: aioredis.Redis) -> None:
    """The wake channel carries the conversation's hash tag: the append script's SPUBLISH goes to the
    node that runs the script (Redis 7.0 does not check it)."""
    cid = await new_conversation(cast(Any, aredis))
    assert aredis.keyslot(redis_keys.log_wake(cid)) == aredis.keyslot(redis_keys.event_log(cid))  # type: ignore[attr-defined]


@pytest.fixture
def replicated_cluster(tmp_path: Path, output_dir: Path) -> Iterator[LocalRedisCluster]:
    """Three primaries with a replica each: a failover has somewhere to go."""
    cluster = LocalRedisCluster(primaries=3, replicas=1, data_dir=tmp_path, log_dir=output_dir).start()
    yield cluster
    cluster.stop()


async def test_after_a_failover_and_the_old_primary_gone_the_promoted_one_is_subscribed(
    replicated_cluster: LocalRedisCluster, no_safety_poll: None
) -> None:
    """A primary owning followed conversations fails over to its replica (the pod's subscription on
    the demoted node still gets the shard's wakes), then the demoted node goes away: the pod
    subscribes on the promoted primary, and every entry reaches the followers once and in order."""
    url = replicated_cluster.url
    pod_client = await connect(url, decode_responses=True)
    other_client = await connect(url, decode_responses=True)
    pod = StreamLog(pod_client, maxlen=1000, ttl_s=600)
    other = StreamLog(other_client, maxlen=1000, ttl_s=600)
    cids = [await new_conversation(pod_client) for _ in range(9)]
    readers = [asyncio.create_task(collect(follower(pod, cid), 0, 3)) for cid in cids]
    await all_subscribed(replicated_cluster.ports, 9)
    for cid in cids:
        await other.append(cid, *tokens(cid, "before"))
    old = int(pod_client.get_node_from_key(redis_keys.log_wake(cids[0])).port)  # type: ignore[union-attr]
    promoted = await asyncio.to_thread(replicated_cluster.fail_over, old)
    for cid in cids:
        await other.append(cid, *tokens(cid, "failed over"))
    next(node for node in replicated_cluster.nodes if node.port == old).stop()

    async def subscribed_on_promoted() -> bool:
        with redis.Redis(host="127.0.0.1", port=promoted, decode_responses=True) as node:
            return any(c.get("name") == CLIENT_NAME and int(c.get("ssub", 0)) for c in node.client_list())

    await eventually(subscribed_on_promoted, "the wake channels subscribed on the promoted primary")
    for cid in cids:
        await other.append(cid, *tokens(cid, "old node gone"))
    for got in await delivered(readers):
        assert [e.id for e in got] == [1, 2, 3]
    await pod.close()
    await other.close()
    for client in (pod_client, other_client):
        await client.aclose()
