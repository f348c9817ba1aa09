"""Opening Redis by URL: a single server or a real 3-node Redis Cluster on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

from agent_contracts.redis_connection import (
    RedisConnectionError,
    cluster_enabled,
    connect,
    is_cluster,
)
from local_stack import processes
from local_stack.redis_cluster import LocalRedisCluster
from tests.fixtures.services import ON_SERVER

KEYS = [f"conv:{{c{n}}}:meta" for n in range(40)]  # hash tags spread over every node's slots


@pytest.fixture(scope="module")
def cluster(output_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    local = LocalRedisCluster(
        primaries=3, data_dir=tmp_path_factory.mktemp("cluster"), log_dir=output_dir
    ).start()
    yield local
    local.stop()


@pytest.fixture
async def cluster_client(cluster: LocalRedisCluster) -> AsyncIterator[RedisCluster]:
    cluster.flush()
    client = await connect(cluster.url, decode_responses=True)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


@ON_SERVER  # what a single server gets (also under TEST_REDIS=cluster)
async def test_auto_mode_picks_a_plain_client_for_a_single_server(redis_url: str) -> None:
    """A server without cluster mode gets the plain client, and it works."""
    client = await connect(redis_url, decode_responses=True)
    try:
        assert not is_cluster(client)
        assert not await cluster_enabled(redis_url)
        await client.set("k", "v")
        assert await client.get("k") == "v"
    finally:
        await client.aclose()


async def test_auto_mode_picks_the_cluster_client_and_reaches_every_slot(
    cluster: LocalRedisCluster, cluster_client: RedisCluster
) -> None:
    """On a cluster, keys owned by every node are written and read through the one URL."""
    assert await cluster_enabled(cluster.url)
    for key in KEYS:
        await cluster_client.set(key, key)
    assert [await cluster_client.get(key) for key in KEYS] == KEYS
    owners = set()
    for key in KEYS:
        node = cluster_client.get_node_from_key(key)
        assert node is not None, f"no node owns {key}"
        owners.add(node.port)
    assert owners == set(cluster.ports), "the keys should land on all three primaries"


async def test_a_plain_client_on_a_cluster_is_redirected(cluster: LocalRedisCluster) -> None:
    """Why the mode matters: a plain client gets MOVED for keys another node owns."""
    client = await connect(cluster.url, mode="standalone")
    try:
        with pytest.raises(MovedError):
            for key in KEYS:
                await client.set(key, "x")
    finally:
        await client.aclose()


async def test_forced_cluster_mode_skips_the_probe(cluster: LocalRedisCluster) -> None:
    """`cluster` builds the cluster client without asking the server first."""
    client = await connect(cluster.url, mode="cluster", decode_responses=True)
    try:
        assert is_cluster(client)
        await client.set(KEYS[0], "1")
        assert await client.get(KEYS[0]) == "1"
    finally:
        await client.aclose()


async def test_forced_cluster_mode_starts_while_redis_is_down() -> None:
    """`cluster` with nothing answering yet still returns a client; its use fails as Redis down."""
    port = processes.free_port()
    client = await connect(f"redis://127.0.0.1:{port}/0", mode="cluster")
    try:
        assert is_cluster(client)
        with pytest.raises((redis.exceptions.RedisError, redis.exceptions.RedisClusterException)):
            await client.get(KEYS[0])
    finally:
        await client.aclose()


async def test_an_unknown_mode_is_refused() -> None:
    """A mode outside auto/standalone/cluster is an error naming the choices."""
    with pytest.raises(ValueError, match="auto, standalone, cluster"):
        await connect("redis://127.0.0.1:1/0", mode="sharded")  # type: ignore[arg-type]


async def test_auto_mode_with_redis_down_says_so() -> None:
    """Nothing answering: a clear error, not a hang."""
    port = processes.free_port()
    with pytest.raises(RedisConnectionError, match="cannot ask Redis"):
        await connect(f"redis://127.0.0.1:{port}/0")


def test_flush_empties_every_primary(cluster: LocalRedisCluster) -> None:
    """The cluster helper's flush reaches all nodes (FLUSHALL alone reaches one)."""
    with redis.RedisCluster.from_url(cluster.url) as client:
        for key in KEYS:
            client.set(key, "1")
    assert sum(redis.Redis(host="127.0.0.1", port=p).dbsize() for p in cluster.ports) == len(KEYS)
    cluster.flush()
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            assert node.dbsize() == 0


@pytest.mark.parametrize("pool_timeout", [None, 1.0])
async def test_pooled_connections_from_before_a_restart_are_replaced_on_first_use(
    tmp_path: Path, pool_timeout: float | None
) -> None:
    """Redis restarts under a client holding pooled connections: every one of them is broken, and
    each is replaced when next used instead of failing the command that finds it broken."""
    server = processes.redis_server(data_dir=tmp_path)
    server.start()
    try:
        options = {} if pool_timeout is None else {"pool_timeout": pool_timeout}
        client = await connect(f"redis://127.0.0.1:{server.port}/0", "standalone", **options)
        # Four connections in the pool, all idle once the reads are done.
        await asyncio.gather(*(client.blpop([f"k{n}"], timeout=0.2) for n in range(4)))
        server.stop()
        server.start()
        assert await asyncio.gather(*(client.set(f"k{n}", "v") for n in range(4))) == [True] * 4
        await client.aclose()
    finally:
        server.stop()


COUNT_SCRIPT = "local n = redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], n); return n"


async def test_a_fresh_cluster_client_used_at_once_runs_each_write_once(cluster: LocalRedisCluster) -> None:
    """Hundreds of writes racing on a client's first use each run once: none is sent twice."""
    cluster.flush()
    client = await connect(cluster.url, decode_responses=True, max_connections=10)
    try:
        script = client.register_script(COUNT_SCRIPT)
        keys = ["{race}:n", "{race}:runs"]
        gate = asyncio.Semaphore(10)

        async def write() -> int:
            async with gate:
                return int(await script(keys=keys))

        results = await asyncio.gather(*(write() for _ in range(300)))
        assert sorted(results) == list(range(1, 301))
        assert await client.llen(keys[1]) == 300
    finally:
        await client.aclose()
