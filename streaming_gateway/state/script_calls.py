"""The hot Lua scripts (the token appends) run on a few connections held for them.

redis-py's way to run a script (`AsyncScript.__call__` -> `evalsha` -> `execute_command`) takes a
connection from the pool and gives it back, and encodes every argument through its generic
packer, on every call: about twice the client CPU of the same command sent on a connection in
hand (bench/README.md). An answer's appends are one script call per batch of tokens, so on the
single-server client (or a proxy in front of a cluster) a `HotScript` call here:

- packs its EVALSHA itself, the command and the script's hash encoded once;
- runs on one of a few connections its `ScriptCalls` took from the client's pool and keeps
  (`lanes`, at most an eighth of the pool's limit, so the other commands keep the rest); when all
  are busy it takes the normal path, through the pool;
- keeps redis-py's semantics: the client's retry when a connection broke (a stale connection after
  a Redis restart: the connection is dropped and the call sent again), NOSCRIPT -> SCRIPT LOAD and
  the call again, errors raised as redis exceptions. A send or read that fails or is cancelled
  disconnects its connection (redis-py's `Connection` does that itself), so a connection given
  back never holds the rest of a reply: the next call on it reconnects.

On a Redis Cluster client (or a deferred one that has not settled yet) a call is the normal
`AsyncScript` call: the cluster client routes it to the node of its keys' slot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError, NoScriptError

from agent_contracts.redis_connection import DeferredRedis
from streaming_gateway.state.redis_replies import Redis

log = logging.getLogger(__name__)

#: Connections a `ScriptCalls` holds at most: about the appends in flight at once on a busy pod
#: (one per answer being written); more calls at once take the pool's connections meanwhile.
LANES = 16
#: The held connections are the pool's (counted in its limit, closed with it), so they take at most
#: this share of it: the other commands keep the rest (a pool of fewer than 8 lends none).
POOL_SHARE = 8

#: Arguments a script call takes: redis-py's encodable values (str, bytes, int, float).
Arg = str | bytes | int | float
#: Keys a script call names.
Key = str | bytes


def _encoded(value: Arg) -> bytes:
    """One argument's bytes, as redis-py's Encoder gives them (UTF-8, strict)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    raise DataError(f"Invalid input of type {type(value).__name__!r}: a str, bytes, int or float is needed")


def bulks(values: Iterable[Arg]) -> bytes:
    """Arguments as RESP bulk strings, in one piece (the hot part of a call: text first)."""
    out: list[bytes] = []
    for value in values:
        data = value.encode() if isinstance(value, str) else _encoded(value)
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def pack(*args: Arg) -> bytes:
    """A command in the Redis protocol (RESP), in one piece."""
    return b"*%d\r\n%b" % (len(args), bulks(args))


class ScriptCalls:
    """The scripts of one client run through a few connections held for them (see the module)."""

    def __init__(self, redis: Redis, *, lanes: int = LANES) -> None:
        if lanes < 0:
            raise ValueError("lanes must not be negative")
        self._redis = redis
        self._size = lanes
        #: Held connections not in a call now, the last given back on top (it stays warm).
        self._idle: list[AbstractConnection] = []
        #: Connections held (idle or in a call).
        self._held = 0
        self._pool: aioredis.ConnectionPool | None = None
        self._closed = False

    def script(self, text: str) -> HotScript:
        return HotScript(self, text)

    @property
    def held(self) -> int:
        """How many connections this holds now (tests, diagnostics)."""
        return self._held

    def _plain_client(self) -> aioredis.Redis | None:
        """The single-server client whose pool the lanes come from, or None: a cluster, a deferred
        client not settled yet, a client on a single connection, or closed."""
        client: Any = self._redis
        if isinstance(client, DeferredRedis):
            client = client.settled
        if not isinstance(client, aioredis.Redis) or client.connection is not None or self._closed:
            return None
        return client

    async def _take(self, client: aioredis.Redis) -> AbstractConnection | None:
        """An idle lane, a new one from the pool while fewer than `lanes` are held, else None."""
        if self._idle:
            return self._idle.pop()
        pool = client.connection_pool
        if self._held >= min(self._size, pool.max_connections // POOL_SHARE):
            return None
        if self._pool is not None and pool is not self._pool:
            return None  # the client's pool was replaced: its own path from now on
        self._held += 1
        try:
            conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._held -= 1
            raise
        self._pool = pool
        return conn

    async def _give_back(self, conn: AbstractConnection) -> None:
        if not self._closed:
            self._idle.append(conn)
            return
        self._held -= 1
        if self._pool is not None:
            await self._pool.release(conn)

    async def close(self) -> None:
        """Give the held connections back to the client's pool (the ones in a call as it ends);
        calls from now on take the normal path."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._give_back(conn)


class HotScript:
    """One Lua script, called like redis-py's `AsyncScript` (`await script(keys=..., args=...)`)."""

    def __init__(self, calls: ScriptCalls, text: str) -> None:
        self._calls = calls
        #: The normal path: a cluster, the pool when every lane is busy.
        self._script = calls._redis.register_script(text)
        self._text = text.encode()
        self._head = bulks(("EVALSHA", self._script.sha))
        self._load = pack("SCRIPT", "LOAD", self._text)

    async def __call__(self, *, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        calls = self._calls
        client = calls._plain_client()
        conn = None if client is None else await calls._take(client)
        if conn is None:
            return await self._script(keys=keys, args=args)
        try:
            # Marked by the pool (a server's maintenance notice): redis-py drops it on release.
            if conn.should_reconnect():  # type: ignore[no-untyped-call]
                await conn.disconnect()
            command = b"*%d\r\n%b%b%b" % (
                len(keys) + len(args) + 3,
                self._head,
                bulks((len(keys), *keys)),
                bulks(args),
            )
            return await conn.retry.call_with_retry(
                lambda: self._run(conn, command), lambda _error: conn.disconnect()
            )
        finally:
            await calls._give_back(conn)

    async def _run(self, conn: AbstractConnection, command: bytes) -> Any:
        await conn.send_packed_command(command)
        try:
            return await conn.read_response()
        except NoScriptError:
            # The server lost its scripts (a restart, SCRIPT FLUSH, a failover to a new primary).
            await conn.send_packed_command(self._load)
            await conn.read_response()  # the hash, the same: it is the text's SHA1
            log.info("script %s loaded again", self._script.sha)
            await conn.send_packed_command(command)
            return await conn.read_response()
