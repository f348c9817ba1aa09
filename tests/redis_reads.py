"""What the tests read back from Redis, typed: stream entries and sorted-set members in text, the
cluster node owning a key. The client's types allow bytes and None answers (a client without
decode_responses, a deleted entry, a key no node owns); a test reading its own data gets neither,
and says so here once."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from agent_contracts.redis_connection import AnyRedis


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def stream_entries(client: AnyRedis, key: str) -> list[tuple[str, dict[str, str]]]:
    """Every entry of the stream at `key`, oldest first ([] when the stream does not exist)."""
    entries = await client.xrange(key)
    assert entries is not None, f"XRANGE {key} answered nil"
    read: list[tuple[str, dict[str, str]]] = []
    for entry_id, fields in entries:
        assert entry_id is not None and fields is not None, f"{key} holds a deleted entry"
        read.append((text(entry_id), {text(name): text(value) for name, value in fields.items()}))
    return read


async def scored_members(client: AnyRedis, key: str) -> list[tuple[str, float]]:
    """Every (member, score) of the sorted set at `key`, lowest score first."""
    pairs: list[tuple[str, float]] = []
    for item in await client.zrange(key, 0, -1, withscores=True):
        assert isinstance(item, (tuple, list)) and len(item) == 2, f"ZRANGE {key} WITHSCORES gave {item!r}"
        member, score = item
        pairs.append((text(member), float(score)))
    return pairs


def node_port(client: AnyRedis, key: str) -> int:
    """The port of the cluster node that owns `key` (the test runs on a cluster)."""
    assert isinstance(client, RedisCluster), "a cluster-only check given a single-server client"
    node = client.get_node_from_key(key)
    assert node is not None, f"no node owns {key}"
    return int(node.port)
