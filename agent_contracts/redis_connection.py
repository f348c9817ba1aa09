"""One way to open Redis for every deployable: a single server or a Redis Cluster, by URL.

`REDIS_URL` names any node. In `auto` mode the server is asked (`INFO cluster`) whether cluster
mode is on, and the matching client is built: redis-py's `RedisCluster` follows MOVED/ASK
redirections and routes each command to the node owning its key's hash slot, which a plain
client cannot. `standalone` and `cluster` skip the question. `proxy` is a single endpoint in front
of a sharded store (Azure Managed Redis with the Enterprise cluster policy): it is used through the
plain client, but a command there may still name keys of one hash slot only, as on a cluster (the
gateway's log reader then groups its reads by slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias
from urllib.parse import urlparse

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionFailure
from redis.exceptions import RedisClusterException, RedisError

from agent_contracts.errors import ContractError
from agent_contracts.settings import Env

log = logging.getLogger(__name__)

RedisMode: TypeAlias = Literal["auto", "standalone", "cluster", "proxy"]
REDIS_MODES: tuple[RedisMode, ...] = ("auto", "standalone", "cluster", "proxy")

#: Either client: they share the command API the services use (with cluster rules on keys).
AnyRedis: TypeAlias = "aioredis.Redis | RedisCluster"


class RedisConnectionError(ContractError, RedisConnectionFailure):
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


def redis_mode(environ: Mapping[str, str] | None = None) -> RedisMode:
    """REDIS_MODE: `auto` (ask the server), `standalone`, `cluster` or `proxy`; every deployable reads it."""
    env = Env(environ)
    mode = env.choice("REDIS_MODE", "auto", REDIS_MODES)
    return next(m for m in REDIS_MODES if m == mode)


def stale_connection_retry() -> Retry:
    """Retries of a command whose connection failed: a client made with `from_url` (or on its own
    pool) has none by default, so after a Redis restart or failover the first command on every
    pooled connection fails, though the server is back and a fresh connection would work.
    Connection errors only: a timeout is not retried (it would multiply the wait on a hung
    server). A command is sent again only when its connection broke; if it broke after the server
    ran the command, a write runs twice. That rare case (the outbox and the bus drop repeats by
    idempotency key) is taken over failing once on every pooled connection after each failover."""
    return Retry(
        ExponentialWithJitterBackoff(base=0.02, cap=0.5), 3, supported_errors=(RedisConnectionFailure,)
    )


def build(url: str, use_cluster: bool, *, pool_timeout: float | None = None, **options: Any) -> AnyRedis:
    """The client of the given kind, without talking to Redis.

    `pool_timeout` (one server only) makes a full pool wait that long for a free connection
    instead of failing at once; a cluster client fails at once when a node's pool is full.
    """
    if not use_cluster:
        options.setdefault("retry", stale_connection_retry())
    if use_cluster:
        # A cluster has only database 0; a URL naming another would silently share keys.
        path = urlparse(url).path.strip("/")
        if path not in ("", "0"):
            raise ValueError(f"a Redis Cluster has only database 0; the URL names database {path!r}")
        return RedisCluster.from_url(url, **options)
    if pool_timeout is not None:
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=pool_timeout, **options)
        return aioredis.Redis.from_pool(pool)  # closing the client closes its pool
    return aioredis.Redis.from_url(url, **options)


async def connect(url: str, mode: RedisMode = "auto", **options: Any) -> AnyRedis:
    """A client for `url`: cluster-aware when `mode` says so or the server reports cluster mode.

    `options` go to the client (e.g. `decode_responses`, `socket_timeout`); `max_connections`
    is per node for a cluster. Only `auto` talks to Redis before returning (and raises
    RedisConnectionError when nobody answers).
    """
    if mode not in REDIS_MODES:
        raise ValueError(f"redis mode must be one of {', '.join(REDIS_MODES)}, got {mode!r}")
    use_cluster = mode == "cluster" or (mode == "auto" and await cluster_enabled(url))
    client = build(url, use_cluster, **options)
    if isinstance(client, RedisCluster):
        await _discover_nodes(client)
    return client


async def _discover_nodes(client: RedisCluster) -> None:
    """Learn the cluster's nodes and slots before anyone uses the client.

    A cluster client left to discover them on first use, under concurrent first commands, breaks
    connections that other commands are already using; redis-py then sends those commands again,
    so a write the server had already run (an append, a script) runs twice. When no node answers
    yet (REDIS_MODE=cluster, Redis still starting) discovery is left to the first use, as before.
    """
    try:
        await client.initialize()
    except (RedisError, RedisClusterException, OSError) as exc:
        log.warning("Redis Cluster nodes not reached at start (%s); discovered on first use", exc)


async def connect_from_env(url: str, environ: Mapping[str, str] | None = None, **options: Any) -> AnyRedis:
    """`connect` in the mode REDIS_MODE names (command-line tools: they fail at once if Redis is down)."""
    return await connect(url, redis_mode(environ), **options)


async def open_redis(url: str, mode: RedisMode = "auto", **options: Any) -> AnyRedis:
    """Like `connect`, for a long-running service that must start while Redis is down.

    In `auto` mode with nobody answering yet, the result is a `DeferredRedis`: every use fails
    with a redis ConnectionError (which the services already treat as "Redis is down") and asks
    the server again, until it answers and the right client is built.
    """
    try:
        return await connect(url, mode, **options)
    except RedisConnectionError as exc:
        log.warning("Redis not reached at start (%s); REDIS_MODE=auto settles once it answers", exc)
        deferred = DeferredRedis(url, options)
        return deferred.as_client()


def is_cluster(client: AnyRedis) -> bool:
    if isinstance(client, DeferredRedis):
        return client.settled is not None and is_cluster(client.settled)
    return isinstance(client, RedisCluster)


class DeferredRedis:
    """Stands in for the client until Redis first answers the `auto` mode question.

    Attribute access goes to the settled client; before that it raises a redis ConnectionError
    and starts one more attempt to settle (at most one at a time). Lua scripts may be registered
    before: an AsyncScript only keeps the client and the script's hash.
    """

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self.settled: AnyRedis | None = None
        self._settling: asyncio.Task[None] | None = None

    def as_client(self) -> AnyRedis:
        """This object, typed as the client it stands in for (it answers the same attributes)."""
        client: Any = self
        return client  # type: ignore[no-any-return]

    async def settle(self) -> bool:
        if self.settled is None:
            try:
                self.settled = await connect(self._url, "auto", **self._options)
            except RedisConnectionError as exc:
                log.debug("Redis still not answering: %s", exc)
                return False
            log.info("Redis answered: %s client", "cluster" if is_cluster(self.settled) else "single-server")
        return True

    def register_script(self, script: str) -> AsyncScript:
        return AsyncScript(self.as_client(), script.encode())

    async def aclose(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
        if self.settled is not None:
            await self.settled.aclose()

    def __getattr__(self, name: str) -> Any:
        settled = self.__dict__.get("settled")
        if settled is not None:
            return getattr(settled, name)
        if self._settling is None or self._settling.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to settle from
                loop = asyncio.get_running_loop()
                self._settling = loop.create_task(self._settle_quietly(), name="redis-settle")
        host = urlparse(self._url).hostname
        raise RedisConnectionFailure(f"Redis at {host} has not answered yet (REDIS_MODE=auto)")

    async def _settle_quietly(self) -> None:
        await self.settle()
