"""Hot scripts pipelined on held connections (state/script_calls): the same replies and errors as
redis-py's AsyncScript, each of many calls in one write with its own reply or error, NOSCRIPT
handled, a killed connection or a restarted Redis survived, a failure with calls in flight failing
exactly those, a cancelled call never disturbing the others, the bounded queue per connection, and
the cluster client on its normal path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError

from agent_contracts.redis_connection import AnyRedis, connect
from local_stack import processes
from streaming_gateway.state.script_calls import ScriptCalls, pack
from tests.fixtures.services import ON_BOTH, ON_SERVER
from tests.polling import eventually

#: Echoes its key and arguments, and counts its runs in its key (a write: CLIENT PAUSE WRITE holds it).
ECHO = """
redis.call('INCR', KEYS[1])
return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}
"""
FAILS = "return redis.error_reply('ERR refused: ' .. ARGV[1])"

pytestmark = ON_BOTH


@pytest.fixture
async def calls(aredis: AnyRedis) -> AsyncIterator[ScriptCalls]:
    scripts = ScriptCalls(aredis, lanes=2)
    yield scripts
    await scripts.close()


async def test_a_call_answers_as_redis_pys_script(aredis: AnyRedis, calls: ScriptCalls) -> None:
    """A call gives the same decoded reply as AsyncScript, with str, bytes, int and float arguments."""
    echo = calls.script(ECHO)
    args: list[str | int | float] = ["é and ☃", 42, 1.5]
    assert await echo(keys=["k:{a}"], args=args) == await aredis.register_script(ECHO)(
        keys=["k:{a}"], args=args
    )
    assert await echo(keys=[b"k:{a}"], args=[b"raw", -7, 0.25]) == ["k:{a}", "raw", "-7", "0.25"]
    assert await aredis.get("k:{a}") == "3"
    # Held connections on one server only: a cluster client routes each call to its key's node.
    assert calls.held == (0 if isinstance(aredis, RedisCluster) else 1)


async def test_a_refused_argument_is_a_data_error(calls: ScriptCalls) -> None:
    """A bool or None argument raises redis-py's DataError before anything is sent, as redis-py does."""
    echo = calls.script(ECHO)
    with pytest.raises(DataError):
        await echo(keys=["k:{a}"], args=[True, "b", "c"])
    assert await echo(keys=["k:{a}"], args=["a", "b", "c"]) == ["k:{a}", "a", "b", "c"]


async def test_a_script_error_is_a_response_error_and_the_connection_goes_on(calls: ScriptCalls) -> None:
    """An error reply raises ResponseError with the script's message; the next call on the same
    connection gets its own reply."""
    fails, echo = calls.script(FAILS), calls.script(ECHO)
    with pytest.raises(ResponseError, match="refused: no"):
        await fails(keys=["k:{a}"], args=["no"])
    assert await echo(keys=["k:{a}"], args=["a", "b", "c"]) == ["k:{a}", "a", "b", "c"]


async def test_noscript_loads_the_script_again(aredis: AnyRedis, calls: ScriptCalls) -> None:
    """After SCRIPT FLUSH (as after a restart) a call loads the script and runs it once."""
    echo = calls.script(ECHO)
    assert await echo(keys=["k:{a}"], args=["a", "b", "c"]) == ["k:{a}", "a", "b", "c"]
    await aredis.script_flush()
    assert await echo(keys=["k:{a}"], args=["d", "e", "f"]) == ["k:{a}", "d", "e", "f"]
    assert await aredis.get("k:{a}") == "2"


async def test_more_calls_than_lanes_each_get_their_own_reply(aredis: AnyRedis, calls: ScriptCalls) -> None:
    """Calls beyond the held connections go through the pool; every call gets its own reply."""
    echo = calls.script(ECHO)
    replies = await asyncio.gather(*(echo(keys=[f"k:{{{i}}}"], args=[i, "b", "c"]) for i in range(20)))
    assert replies == [[f"k:{{{i}}}", str(i), "b", "c"] for i in range(20)]
    assert calls.held <= 2


@ON_SERVER  # a single server's pool
async def test_the_held_connections_leave_the_pool_most_of_its_limit(redis_url: str) -> None:
    """On a pool of 16 connections at most 2 are held for scripts: 16 calls at once on connections
    that carry 4 each all answer (the rest through the pool), and 14 other commands at once still
    find a connection."""
    client = await connect(redis_url, "standalone", decode_responses=True, max_connections=16)
    calls = ScriptCalls(client, depth=4)
    echo = calls.script(ECHO)
    try:
        replies = await asyncio.gather(*(echo(keys=[f"k:{{{i}}}"], args=[i, "b", "c"]) for i in range(16)))
        assert replies == [[f"k:{{{i}}}", str(i), "b", "c"] for i in range(16)]
        assert calls.held == 2
        assert await asyncio.gather(*(client.get(f"k:{{{i}}}") for i in range(14))) == ["1"] * 14
    finally:
        await calls.close()
        await client.aclose()


@ON_SERVER  # kills the single server's connections
async def test_a_killed_connection_is_dialled_again(aredis: AnyRedis, calls: ScriptCalls) -> None:
    """CLIENT KILL of every connection between two calls: the next call reconnects and answers."""
    echo = calls.script(ECHO)
    assert await echo(keys=["k:{a}"], args=["a", "b", "c"]) == ["k:{a}", "a", "b", "c"]
    # Every other connection, the held one among them (the killing one is skipped).
    assert await aredis.execute_command("CLIENT KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
    assert await echo(keys=["k:{a}"], args=["d", "e", "f"]) == ["k:{a}", "d", "e", "f"]
    assert await aredis.get("k:{a}") == "2"  # the second call ran once


@ON_SERVER  # pauses the single server
async def test_a_cancelled_call_leaves_no_reply_to_the_next(aredis: AnyRedis) -> None:
    """A call cancelled after its command reached Redis, before the reply: the next call on the same
    held connection gets its own reply, not the cancelled one's."""
    single = ScriptCalls(aredis, lanes=1)
    echo = single.script(ECHO)
    try:
        assert await echo(keys=["k:{a}"], args=["warm", "b", "c"]) == ["k:{a}", "warm", "b", "c"]
        await aredis.execute_command("CLIENT PAUSE", 30_000, "WRITE")  # holds the script's reply
        try:
            cancelled = asyncio.create_task(echo(keys=["k:{a}"], args=["cancelled", "b", "c"]))
            await eventually(lambda: _script_held(aredis), "the call's EVALSHA held by the pause")
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        finally:
            await aredis.execute_command("CLIENT UNPAUSE")
        assert single.held == 1
        assert await echo(keys=["k:{a}"], args=["next", "b", "c"]) == ["k:{a}", "next", "b", "c"]
    finally:
        await single.close()


@ON_SERVER  # held connections on a single server
async def test_many_calls_in_one_write_each_get_their_own_reply_or_error(aredis: AnyRedis) -> None:
    """Calls queued at once on one held connection: each gets its own reply, and a script's error
    reply fails only its own call."""
    single = ScriptCalls(aredis, lanes=1)
    echo, fails = single.script(ECHO), single.script(FAILS)
    try:
        replies = await asyncio.gather(
            *(
                echo(keys=[f"k:{{{i}}}"], args=[i, "b", "c"]) if i % 3 else fails(keys=["k:{f}"], args=[i])
                for i in range(30)
            ),
            return_exceptions=True,
        )
        for i, reply in enumerate(replies):
            if i % 3:
                assert reply == [f"k:{{{i}}}", str(i), "b", "c"]
            else:
                assert isinstance(reply, ResponseError) and f"refused: {i}" in str(reply)
        assert single.held == 1
    finally:
        await single.close()


@ON_SERVER  # held connections on a single server
async def test_noscript_for_calls_in_flight_sends_each_again_once(aredis: AnyRedis) -> None:
    """After SCRIPT FLUSH, calls queued together all get NOSCRIPT: each is sent again once, after the
    script is loaded, and gets its own reply."""
    single = ScriptCalls(aredis, lanes=1)
    echo = single.script(ECHO)
    try:
        assert await echo(keys=["k:{w}"], args=["warm", "b", "c"]) == ["k:{w}", "warm", "b", "c"]
        await aredis.script_flush()
        replies = await asyncio.gather(*(echo(keys=[f"k:{{{i}}}"], args=[i, "b", "c"]) for i in range(10)))
        assert replies == [[f"k:{{{i}}}", str(i), "b", "c"] for i in range(10)]
        assert await asyncio.gather(*(aredis.get(f"k:{{{i}}}") for i in range(10))) == ["1"] * 10
    finally:
        await single.close()


@ON_SERVER  # pauses the single server
async def test_a_cancelled_call_in_flight_leaves_the_connection_to_the_next(aredis: AnyRedis) -> None:
    """A call cancelled while its command waits in Redis (CLIENT PAUSE WRITE): the calls queued behind
    it and the next ones get their own replies, on the same connection (its reply read and dropped)."""
    single = ScriptCalls(aredis, lanes=1)
    echo = single.script(ECHO)
    try:
        assert await echo(keys=["k:{a}"], args=["warm", "b", "c"]) == ["k:{a}", "warm", "b", "c"]
        await aredis.execute_command("CLIENT PAUSE", 30_000, "WRITE")  # holds the script's reply
        try:
            cancelled = asyncio.create_task(echo(keys=["k:{a}"], args=["cancelled", "b", "c"]))
            behind = [asyncio.create_task(echo(keys=["k:{a}"], args=[i, "b", "c"])) for i in range(3)]
            await eventually(lambda: _script_held(aredis), "the call's EVALSHA held by the pause")
            held_by = await _script_clients(aredis)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        finally:
            await aredis.execute_command("CLIENT UNPAUSE")
        assert await asyncio.gather(*behind) == [["k:{a}", str(i), "b", "c"] for i in range(3)]
        assert await echo(keys=["k:{a}"], args=["next", "b", "c"]) == ["k:{a}", "next", "b", "c"]
        assert await _script_clients(aredis) == held_by  # the same connection throughout
        assert await aredis.get("k:{a}") == "6"  # the cancelled one ran too: it had reached Redis
    finally:
        await single.close()


@ON_SERVER  # kills the single server's connections
async def test_a_killed_connection_fails_the_calls_in_flight_and_is_replaced(aredis: AnyRedis) -> None:
    """CLIENT KILL of the held connection with calls in flight on it: each of them raises a redis
    ConnectionError (none hangs), and the next call answers on another connection."""
    single = ScriptCalls(aredis, lanes=1)
    echo = single.script(ECHO)
    try:
        assert await echo(keys=["k:{a}"], args=["warm", "b", "c"]) == ["k:{a}", "warm", "b", "c"]
        await aredis.execute_command("CLIENT PAUSE", 30_000, "WRITE")
        try:
            in_flight = [asyncio.create_task(echo(keys=["k:{a}"], args=[i, "b", "c"])) for i in range(3)]
            await eventually(lambda: _script_held(aredis), "the calls' EVALSHA held by the pause")
            assert await aredis.execute_command("CLIENT KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
            for task in in_flight:
                with pytest.raises(RedisConnectionError):
                    await task
        finally:
            await aredis.execute_command("CLIENT UNPAUSE")
        assert await echo(keys=["k:{a}"], args=["next", "b", "c"]) == ["k:{a}", "next", "b", "c"]
    finally:
        await single.close()


@ON_SERVER  # pauses the single server
async def test_a_reply_that_never_comes_ends_with_the_socket_timeout(
    redis_url: str, aredis: AnyRedis
) -> None:
    """Calls whose replies do not come (CLIENT PAUSE WRITE) fail with a redis ConnectionError once the
    client's socket_timeout passes; the next call after the pause answers."""
    client = await connect(redis_url, "standalone", decode_responses=True, socket_timeout=0.5)
    calls = ScriptCalls(client, lanes=1)
    echo = calls.script(ECHO)
    try:
        assert await echo(keys=["k:{a}"], args=["warm", "b", "c"]) == ["k:{a}", "warm", "b", "c"]
        await aredis.execute_command("CLIENT PAUSE", 30_000, "WRITE")
        try:
            replies = await asyncio.gather(
                *(echo(keys=["k:{a}"], args=[i, "b", "c"]) for i in range(3)), return_exceptions=True
            )
        finally:
            await aredis.execute_command("CLIENT UNPAUSE")
        assert all(isinstance(reply, RedisConnectionError) for reply in replies), replies
        assert await echo(keys=["k:{a}"], args=["next", "b", "c"]) == ["k:{a}", "next", "b", "c"]
    finally:
        await calls.close()
        await client.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[processes.Service]:
    """A Redis only this test uses, so restarting it disturbs no other test."""
    service = processes.redis_server(data_dir=tmp_path)
    service.start()
    yield service
    service.stop()


@ON_SERVER  # restarts a single server
async def test_a_call_after_a_redis_restart_answers(own_redis: processes.Service) -> None:
    """Redis restarts between two calls (its scripts gone, the held connection stale): the next call
    reconnects, loads the script again and answers; a call while it is down raises ConnectionError."""
    client = await connect(f"redis://127.0.0.1:{own_redis.port}/0", "standalone", decode_responses=True)
    calls = ScriptCalls(client)
    echo = calls.script(ECHO)
    try:
        assert await echo(keys=["k:{a}"], args=["a", "b", "c"]) == ["k:{a}", "a", "b", "c"]
        own_redis.stop()
        with pytest.raises(RedisConnectionError):
            await echo(keys=["k:{a}"], args=["down", "b", "c"])
        own_redis.start()
        assert await echo(keys=["k:{a}"], args=["d", "e", "f"]) == ["k:{a}", "d", "e", "f"]
        assert calls.held == 1
    finally:
        await calls.close()
        await client.aclose()


def test_pack_is_redis_pys_wire_form() -> None:
    """`pack` gives the bytes redis-py's own packer sends for the same command."""
    args = ("EVALSHA", "a" * 40, 2, "k:{a}", b"raw", "é", 12, 0.5, "")
    assert pack(*args) == b"".join(Connection().pack_command(*args))


async def _script_held(client: AnyRedis) -> bool:
    """Whether a connection's EVALSHA waits in Redis (a client blocked by the pause)."""
    return any(c["cmd"] == "evalsha" and "b" in c["flags"] for c in await client.client_list())


async def _script_clients(client: AnyRedis) -> set[str]:
    """The ids of the connections whose last command was an EVALSHA."""
    return {c["id"] for c in await client.client_list() if c["cmd"] == "evalsha"}
