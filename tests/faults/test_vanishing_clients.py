"""Clients that connect and vanish without closing: the socket is reset (SO_LINGER 0) while the
client follows a conversation, in the middle of an answer, or halfway through its request
headers. The gateway must let go of everything each one held: tasks, sockets, stream slots,
watcher leases, model requests, memory.

The gateway runs in this process (the real app factory, with handler cancellation on as
`python -m streaming_gateway` runs it) so its asyncio tasks can be counted."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio.cluster import RedisCluster

from agent_contracts.redis_connection import AnyRedis
from streaming_gateway.app import create_app
from streaming_gateway.keys import engine_key, streams_key
from streaming_gateway.settings import Settings
from tests.faults.conftest import Scenario
from tests.fixtures.gateway import make_token, upstream_stats
from tests.polling import eventually

KINDS = ("follow", "answer", "half")


@pytest.fixture
async def server(gateway_env: dict[str, str]) -> AsyncIterator[TestServer]:
    settings = Settings.from_env(
        {
            **gateway_env,
            "GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000",
            "GATEWAY_MAX_STREAMS_PER_USER": "10000",
            "GATEWAY_ORPHAN_GRACE_SECONDS": "0",
        }
    )
    server = TestServer(create_app(settings), host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    yield server
    await server.close()


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tcp(local_port: int | None = None, remote_port: int | None = None) -> int:
    """Open TCP sockets on this machine by port (TIME_WAIT and LISTEN hold no descriptor: left out)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local, remote, state = (
                    int(fields[1].rsplit(":", 1)[1], 16),
                    int(fields[2].rsplit(":", 1)[1], 16),
                    fields[3],
                )
                if state in ("06", "0A"):
                    continue
                if (local_port is None or local == local_port) and (
                    remote_port is None or remote == remote_port
                ):
                    count += 1
    return count


def outbound(*ports: int) -> int:
    """Pooled client connections of the gateway (Redis, the model): they are kept for reuse, not leaked."""
    return sum(tcp(remote_port=port) for port in ports)


def redis_ports(redis: AnyRedis) -> tuple[int, ...]:
    """The port of each Redis node the gateway may hold connections to (every node of a cluster)."""
    if isinstance(redis, RedisCluster):
        return tuple(int(node.port) for node in redis.get_nodes())
    return (int(redis.connection_pool.connection_kwargs["port"]),)


async def vanish(server: TestServer, kind: str, cid: str, token: str) -> None:
    """Open a connection, get as far as `kind` says, then reset it: no FIN, no close handshake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    headers = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    if kind == "half":
        writer.write(f"GET /v1/conversations/{cid}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthor".encode())
        await writer.drain()
    elif kind == "follow":
        writer.write(f"GET /v1/conversations/{cid}/events HTTP/1.1\r\n{headers}\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the stream is open on the server
    else:
        body = b'{"content": "tell me a long story"}'
        writer.write(
            f"POST /v1/conversations/{cid}/messages HTTP/1.1\r\n{headers}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        await reader.readuntil(b"event: token")  # the model is answering
    writer.transport.abort()


async def crowd(server: TestServer, count: int, parallel: int = 100) -> dict[str, int]:
    token = make_token("vanisher")
    async with aiohttp.ClientSession() as session:

        async def conversation() -> str:
            async with session.post(
                str(server.make_url("/v1/conversations")),
                json={},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                return (await response.json())["id"]

        cids = [await conversation() for _ in range(count)]
    done: dict[str, int] = dict.fromkeys(KINDS, 0)
    semaphore = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        kind = KINDS[index % len(KINDS)]
        async with semaphore:
            await asyncio.wait_for(vanish(server, kind, cids[index], token), 30)
        done[kind] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return done


async def idle(server: TestServer, upstream: TestServer) -> bool:
    app = server.app
    return (
        len(app[streams_key]) == 0
        and len(app[engine_key].answers) == 0
        and (await upstream_stats(upstream))["active_streams"] == 0
    )


async def leftovers_in_redis(redis: AnyRedis) -> dict[str, int]:
    watchers = sum([await redis.zcard(key) async for key in redis.scan_iter("*watchers*")])
    slots = sum(
        [
            await redis.zcard(key)
            async for key in redis.scan_iter("*streams*")
            if await redis.type(key) == "zset"
        ]
    )
    return {"watcher_leases": watchers, "stream_slots": slots}


async def check(
    server: TestServer,
    upstream: TestServer,
    aredis: AnyRedis,
    script: Callable[..., Any],
    count: int,
    scenario: Scenario,
) -> None:
    await script([{"match": "story", "tokens": 200, "token_delay_ms": 20}])
    await crowd(
        server, count
    )  # warm-up of the same size: pools, caches, lazy imports reach their working size
    await eventually(lambda: idle(server, upstream), "warm-up clients released")
    gc.collect()
    assert upstream.port is not None  # the upstream test server is started
    ports = (*redis_ports(aredis), upstream.port)
    base_tasks, base_fds, base_rss, base_pooled = len(asyncio.all_tasks()), fds(), rss_kb(), outbound(*ports)
    done = await crowd(server, count)
    await eventually(lambda: idle(server, upstream), "every vanished client released", timeout=60)

    async def let_go() -> bool:  # handler tasks and sockets of reset connections finish a moment later
        gc.collect()
        return len(asyncio.all_tasks()) <= base_tasks and tcp(local_port=server.port) == 0

    with contextlib.suppress(AssertionError):  # the asserts below say what is left, if anything
        await eventually(let_go, "tasks and client sockets released", timeout=30)
    tasks, open_fds, rss, pooled = len(asyncio.all_tasks()), fds(), rss_kb(), outbound(*ports)
    client_sockets = tcp(local_port=server.port)
    redis_left = await leftovers_in_redis(aredis)
    scenario.observed = (
        f"{sum(done.values())} vanished {done}; open streams 0, answers 0, upstream 0; tasks "
        f"{base_tasks} -> {tasks}; client sockets left {client_sockets}; fds {base_fds} -> {open_fds} "
        f"(pooled Redis/model connections {base_pooled} -> {pooled}); RSS {base_rss} -> {rss} KB; "
        f"redis {redis_left}"
    )
    assert sum(done.values()) == count
    assert tasks <= base_tasks
    assert client_sockets == 0
    assert open_fds - base_fds <= pooled - base_pooled + 5
    assert rss <= base_rss + 16 * 1024
    assert redis_left == {"watcher_leases": 0, "stream_slots": 0}


@pytest.mark.scenario(
    "clients vanish without closing (fast)",
    "150 connections reset mid-follow / mid-answer / mid-headers",
    "no leaked tasks, sockets, stream slots, watcher leases or model requests",
)
async def test_vanished_clients_leave_nothing_behind(
    server: TestServer,
    upstream: TestServer,
    aredis: AnyRedis,
    script: Callable[..., Any],
    scenario: Scenario,
) -> None:
    """150 reset connections: tasks, descriptors, Redis leases and upstream requests all return to baseline."""
    await check(server, upstream, aredis, script, 150, scenario)


@pytest.mark.slow
@pytest.mark.scenario(
    "1,000 clients vanish without closing",
    "1,000 connections reset mid-follow / mid-answer / mid-headers, 100 at a time",
    "no leaked tasks, sockets, stream slots, watcher leases, model requests; RSS within 16 MB",
)
async def test_thousand_vanished_clients_leave_nothing_behind(
    server: TestServer,
    upstream: TestServer,
    aredis: AnyRedis,
    script: Callable[..., Any],
    scenario: Scenario,
) -> None:
    """1,000 reset connections: everything the gateway held for them is released."""
    await check(server, upstream, aredis, script, 1000, scenario)
