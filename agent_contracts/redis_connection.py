"""One way to open Redis for every deployable: a single server or a Redis Cluster, by URL.

`REDIS_URL` names any node. In `auto` mode the server is asked (`INFO cluster`) whether cluster
mode is on, and the matching client is built: redis-py's `RedisCluster` follows MOVED/ASK
redirections and routes each command to the node owning its key's hash slot, which a plain
client cannot. `standalone` and `cluster` skip the question (a proxy in front of a cluster, e.g.
Azure Managed Redis with the Enterprise cluster policy, looks like one server and must be used
as one).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

RedisMode: TypeAlias = Literal["auto", "standalone", "cluster"]
REDIS_MODES: tuple[RedisMode, ...] = ("auto", "standalone", "cluster")

#: Either client: they share the command API the services use (with cluster rules on keys).
AnyRedis: TypeAlias = "aioredis.Redis | RedisCluster"


class RedisConnectionError(RuntimeError):
    """Redis could not be asked which mode it runs in; the message names the URL's host."""


async def cluster_enabled(url: str, *, probe_timeout: float = 3.0) -> bool:
    """Whether the server at `url` runs in cluster mode (`INFO cluster` -> `cluster_enabled:1`)."""
    probe = aioredis.Redis.from_url(url, socket_connect_timeout=probe_timeout, socket_timeout=probe_timeout)
    try:
        info = await probe.info("cluster")
    except RedisError as exc:
        raise RedisConnectionError(f"cannot ask Redis for its mode: {exc}") from exc
    finally:
        await probe.aclose()
    return bool(int(info.get("cluster_enabled", 0)))


async def connect(url: str, mode: RedisMode = "auto", **options: Any) -> AnyRedis:
    """A client for `url`: cluster-aware when `mode` says so or the server reports cluster mode.

    `options` go to the client (e.g. `decode_responses`, `socket_timeout`); `max_connections`
    is per node for a cluster. Only `auto` talks to Redis before returning.
    """
    if mode not in REDIS_MODES:
        raise ValueError(f"redis mode must be one of {', '.join(REDIS_MODES)}, got {mode!r}")
    use_cluster = mode == "cluster" or (mode == "auto" and await cluster_enabled(url))
    if use_cluster:
        # A cluster has only database 0; a URL naming another would silently share keys.
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


def is_cluster(client: AnyRedis) -> bool:
    return isinstance(client, RedisCluster)
