"""The hot Lua scripts (the token appends) pipelined on a few connections held for them.

redis-py's way to run a script (`AsyncScript.__call__` -> `evalsha` -> `execute_command`) takes a
connection from the pool and gives it back, encodes every argument through its generic packer and
writes each command to the socket on its own, on every call (bench/README.md). An answer's appends
are one script call per batch of tokens, so on the single-server client (or a proxy in front of a
cluster) a `HotScript` call here:

- packs its EVALSHA itself, the command and the script's hash encoded once;
- is queued onto one of a few connections its `ScriptCalls` took from the client's pool and keeps
  (`lanes`, at most an eighth of the pool's limit, so the other commands keep the rest). Each held
  connection has a writer task, which sends every command queued since its last write in one
  socket write, and a reader task, which reads the replies in order and resolves each caller's
  future: the appends of every stream on the pod made in one event-loop pass go out in one send.
  A call takes the first held connection with fewer than `depth` commands queued or unanswered
  (so one connection carries them all while it can); past that bound on every one the call takes
  the normal path, through the pool;
- gets exactly its own reply: an error reply (a script's error) is that call's ResponseError only;
  NOSCRIPT (a restart, SCRIPT FLUSH, a failover) -> SCRIPT LOAD and that command sent again;
- when cancelled, leaves the connection as it is: a command not written yet is skipped, one
  written has its reply read and dropped by the reader;
- when the connection fails (a send or read error, CLIENT KILL, a restart, no reply within the
  client's `socket_timeout`: redis-py disconnects it) every command written on it and not
  answered, and every one queued on it, fails with a redis ConnectionError (the engine ends such
  an answer with a retryable error; whether the failed ones ran is unknown, as for any command
  whose reply was lost), and the connection goes back to the pool to be dialled again; the next
  calls take another. A held connection idle since its last reply is checked first, as the pool
  checks one it lends (closed by the server, marked for reconnect, the health check's PING when
  due): a connection killed while idle is dialled again, not failed.

Order: commands on one connection run in the order they were queued, and a caller's commands on
different connections in any order; the log's appends need no more, because a LogWriter has one
append in flight at a time (the next one is queued once the previous one is answered).

On a Redis Cluster client (or a deferred one that has not settled yet) a call is the normal
`AsyncScript` call: the cluster client routes it to the node of its keys' slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, DataError, NoScriptError, ResponseError

from agent_contracts.redis_connection import DeferredRedis
from streaming_gateway.state.redis_replies import Redis
from streaming_gateway.state.task_stop import stop

log = logging.getLogger(__name__)

#: Connections a `ScriptCalls` holds at most. One carries every call while it has room (`DEPTH`);
#: the next ones are opened only when the held ones are full.
LANES = 16
#: The held connections are the pool's (counted in its limit, closed with it), so they take at most
#: this share of it: the other commands keep the rest (a pool of fewer than 8 lends none).
POOL_SHARE = 8
#: Commands one held connection carries at once (queued for its writer or waiting for their reply):
#: a bound on what one failure can fail and on a command's wait behind the others (a pod's answers
#: have one append in flight each, so 64 is 64 answers writing at the same moment).
DEPTH = 64

#: Arguments a script call takes: redis-py's encodable values (str, bytes, int, float).
Arg = str | bytes | int | float
#: Keys a script call names.
Key = str | bytes
#: A command queued on a held connection: its bytes and its caller's future.
_Call = tuple[bytes, "asyncio.Future[Any]"]


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
    """The scripts of one client pipelined on a few connections held for them (see the module)."""

    def __init__(self, redis: Redis, *, lanes: int = LANES, depth: int = DEPTH) -> None:
        if lanes < 0 or depth < 1:
            raise ValueError("lanes must not be negative and depth must be positive")
        self._redis = redis
        self._size = lanes
        self._depth = depth
        #: Held connections in use, in the order they were opened (the first with room is taken).
        self._pipes: list[_Pipe] = []
        #: Connections held (in use, being opened or being given back).
        self._held = 0
        #: Set while a connection is being taken from the pool: callers wait for it, not open more.
        self._opening: asyncio.Future[None] | None = None
        #: Failed pipes being given back to the pool.
        self._ending: set[asyncio.Task[None]] = set()
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

    async def _pipe(self, client: aioredis.Redis) -> _Pipe | None:
        """The first held connection with room, a new one while fewer than `lanes` are held, else
        None (the caller takes the pool's path)."""
        while True:
            for pipe in self._pipes:
                if pipe.load < self._depth:
                    return pipe
            if self._opening is not None:
                await asyncio.shield(self._opening)
                continue
            pool = client.connection_pool
            if self._closed or self._held >= min(self._size, pool.max_connections // POOL_SHARE):
                return None
            if self._pool is not None and pool is not self._pool:
                return None  # the client's pool was replaced: its own path from now on
            self._opening = asyncio.get_running_loop().create_future()
            self._held += 1
            try:
                conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
            except BaseException:
                self._held -= 1
                raise
            finally:
                self._opening.set_result(None)
                self._opening = None
            self._pool = pool
            if self._closed:  # closed while the pool was lending it
                self._held -= 1
                await pool.release(conn)
                return None
            pipe = _Pipe(self, conn)
            self._pipes.append(pipe)
            return pipe

    def _failed(self, pipe: _Pipe) -> None:
        """A held connection failed: no call is queued on it any more; it is given back."""
        if pipe in self._pipes:
            self._pipes.remove(pipe)
        task = asyncio.get_running_loop().create_task(self._give_back(pipe))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _give_back(self, pipe: _Pipe) -> None:
        if await pipe.end() and self._pool is not None:
            self._held -= 1
            await self._pool.release(pipe.conn)

    async def close(self) -> None:
        """Let the calls queued on the held connections end, then give those back to the client's
        pool; calls from now on take the normal path."""
        self._closed = True
        pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            await pipe.settled()
            await self._give_back(pipe)
        while self._ending:
            await asyncio.gather(*self._ending)


class _Pipe:
    """One held connection: calls queued, one writer sending them, one reader answering them."""

    def __init__(self, owner: ScriptCalls, conn: AbstractConnection) -> None:
        self._owner = owner
        self.conn = conn
        #: Queued, not written yet.
        self._waiting: list[_Call] = []
        #: Written, their replies not read yet, oldest first.
        self._sent: deque[_Call] = deque()
        self._failed = False
        self._ended = False
        self._to_write = asyncio.Event()
        self._to_read = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = (loop.create_task(self._writes()), loop.create_task(self._reads()))

    @property
    def load(self) -> int:
        return len(self._waiting) + len(self._sent)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Queue a packed command; its future gets the reply (an error reply as its exception)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, future))
        self._to_write.set()
        return future

    async def _writes(self) -> None:
        conn = self.conn
        while True:
            await self._to_write.wait()
            self._to_write.clear()
            # A caller cancelled before its command was written: it is not sent at all.
            batch = [call for call in self._waiting if not call[1].done()]
            self._waiting.clear()
            if not batch:
                continue
            try:
                if not self._sent:
                    # Idle: no reply is owed, so the reader is not reading and the connection can
                    # be checked and dialled again as the pool would before lending it.
                    await self._ready()
                if self._failed:
                    return
                self._sent.extend(batch)
                self._to_read.set()
                await conn.send_packed_command(
                    batch[0][0] if len(batch) == 1 else b"".join(command for command, _ in batch),
                    check_health=False,  # replies may be owed: a PING now would take one of them
                )
            except Exception as exc:  # redis-py disconnected it; the callers get a ConnectionError
                self._fail(exc, batch)
                return

    async def _ready(self) -> None:
        conn = self.conn
        if conn.should_reconnect():  # type: ignore[no-untyped-call]
            await conn.disconnect()  # marked by the pool (a server's maintenance notice)
        if conn.is_connected and await conn.can_read():
            await conn.disconnect()  # closed by the server (a restart, CLIENT KILL) while idle
        if not conn.is_connected:
            await conn.connect()  # type: ignore[no-untyped-call]
        await conn.check_health()  # type: ignore[no-untyped-call]

    async def _reads(self) -> None:
        conn = self.conn
        sent = self._sent
        while True:
            if not sent:
                self._to_read.clear()
                await self._to_read.wait()
                continue
            reply: Any
            try:
                reply = await conn.read_response()
            except ResponseError as exc:  # this command's error reply; the connection goes on
                reply = exc
            except Exception as exc:  # read failed or timed out: redis-py disconnected it
                self._fail(exc)
                return
            if self._failed:
                return
            _command, future = sent.popleft()
            if future.done():
                continue  # its caller was cancelled: the reply is dropped
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _fail(self, exc: Exception, batch: Sequence[_Call] = ()) -> None:
        """Fail every call on this connection (written or queued) and have it given back."""
        if self._failed:
            return
        self._failed = True
        calls = [*self._sent, *(call for call in batch if call not in self._sent), *self._waiting]
        self._sent.clear()
        self._waiting.clear()
        log.warning("held Redis connection failed with %d script calls on it: %r", len(calls), exc)
        for _command, future in calls:
            if not future.done():
                error = ConnectionError(f"Redis connection failed with the script call on it: {exc}")
                error.__cause__ = exc
                future.set_exception(error)
        self._owner._failed(self)

    async def settled(self) -> None:
        """Until every call queued on this connection has its reply or error (or was cancelled)."""
        pending = [future for _command, future in (*self._waiting, *self._sent)]
        if pending:
            await asyncio.wait(pending)

    async def end(self) -> bool:
        """Stop the writer and the reader; True the first time (the connection is to be given back:
        disconnected if a reply may still be owed on it, so the pool never lends that)."""
        if self._ended:
            return False
        self._ended = True
        for task in self._tasks:
            await stop(task)  # cancelled until it ends (a cancel lost in wait_for on 3.11: task_stop)
        if self._failed or self._sent or self._waiting:
            await self.conn.disconnect()
        return True


class HotScript:
    """One Lua script, called like redis-py's `AsyncScript` (`await script(keys=..., args=...)`)."""

    def __init__(self, calls: ScriptCalls, text: str) -> None:
        self._calls = calls
        #: The normal path: a cluster, the pool when every held connection is full.
        self._script = calls._redis.register_script(text)
        self._text = text.encode()
        self._head = bulks(("EVALSHA", self._script.sha))
        self._load = pack("SCRIPT", "LOAD", self._text)

    async def __call__(self, *, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        calls = self._calls
        client = calls._plain_client()
        pipe = None if client is None else await calls._pipe(client)
        if pipe is None:
            return await self._script(keys=keys, args=args)
        command = b"*%d\r\n%b%b%b" % (
            len(keys) + len(args) + 3,
            self._head,
            bulks((len(keys), *keys)),
            bulks(args),
        )
        try:
            return await pipe.call(command)
        except NoScriptError:
            # The server lost its scripts (a restart, SCRIPT FLUSH, a failover to a new primary):
            # load it (the same hash: the text's SHA1) and send this command again, only this one.
            assert client is not None
            pipe = await calls._pipe(client)
            if pipe is None:
                return await self._script(keys=keys, args=args)
            await pipe.call(self._load)
            log.info("script %s loaded again", self._script.sha)
            return await pipe.call(command)
