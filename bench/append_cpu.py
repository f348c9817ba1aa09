"""Client CPU per token append: redis-py's script call through the pool against the call pipelined on
a held connection (state/script_calls.py), alternating rounds in one process, on uvloop as the
gateway runs.

`python -m bench.append_cpu [appends per round] [tokens per append]` starts its own redis-server,
builds the client as the gateway does (`open_redis` with a BlockingConnectionPool), and runs the
log's real write script (`stream_log._WRITE`) with a plain append's keys and arguments, one after
another (1 in flight) and from 16 tasks at once; CPU is `time.process_time` of this process over
the round, so Redis's own time is not in it. Prints the median and range of 5 rounds each.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from agent_contracts.events import TokenEvent
from agent_contracts.redis_connection import open_redis
from local_stack import processes
from streaming_gateway.state import redis_keys
from streaming_gateway.state.script_calls import ScriptCalls
from streaming_gateway.state.stream_log import _WRITE, triple

Call = Callable[..., Awaitable[Any]]
ROUNDS = 5


def arguments(cid: str, tokens: int) -> tuple[list[str], list[Any]]:
    """A plain append's keys and arguments (StreamLog.write), `tokens` token events."""
    keys = [
        redis_keys.conversation(cid),
        redis_keys.event_log(cid),
        redis_keys.log_owner(cid),
        redis_keys.log_deferred(cid),
    ]
    args: list[Any] = [10_000, 86_400, "", "", 30_000, 0, 0, "", "", 0, ""]
    for i in range(tokens):
        args += triple(TokenEvent(id=1, conversation_id=cid, text=f"word{i} "))
    return keys, args


async def one_round(call: Call, appends: int, tasks: int, tokens: int) -> float:
    """Client CPU microseconds per append over `appends` appends from `tasks` tasks at once."""

    async def worker(index: int) -> None:
        keys, args = arguments(f"conv_bench{index}", tokens)
        for _ in range(appends // tasks):
            await call(keys=keys, args=args)

    start = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return (time.process_time() - start) / appends * 1e6


async def measure(url: str, appends: int, tokens: int) -> dict[str, dict[str, list[float]]]:
    client = await open_redis(
        url,
        "standalone",
        pool_timeout=5,
        max_connections=2000,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )
    calls = ScriptCalls(client)
    paths: dict[str, Call] = {"pool": client.register_script(_WRITE), "held": calls.script(_WRITE)}
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for tasks in (1, 16):
            for i in range(tasks):
                await client.hset(redis_keys.conversation(f"conv_bench{i}"), "seq", 0)
            for call in paths.values():  # warm-up: connections made, script loaded
                await one_round(call, 320, tasks, tokens)
            found = results[f"{tasks} in flight"] = {name: [] for name in paths}
            for round_ in range(ROUNDS):
                order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
                for name in order:
                    found[name].append(await one_round(paths[name], appends, tasks, tokens))
                await client.delete(*(redis_keys.event_log(f"conv_bench{i}") for i in range(tasks)))
    finally:
        await calls.close()
        await client.aclose()
    return results


def main() -> None:
    appends = int(sys.argv[1]) if len(sys.argv) > 1 else 3200
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    workdir = Path(tempfile.mkdtemp(prefix="bench-append-"))
    redis = processes.redis_server(data_dir=workdir, log_path=workdir / "redis.log")
    redis.start()
    try:
        results = uvloop.run(measure(f"redis://127.0.0.1:{redis.port}/0", appends, tokens))
    finally:
        redis.stop()
    print(f"client CPU per append, us ({appends} appends a round, {tokens} tokens each, {ROUNDS} rounds)")
    for load, paths in results.items():
        pool, held = (statistics.median(paths[name]) for name in ("pool", "held"))
        print(
            f"{load:>12}: through the pool {pool:5.1f} ({min(paths['pool']):.1f}-{max(paths['pool']):.1f}), "
            f"held {held:5.1f} ({min(paths['held']):.1f}-{max(paths['held']):.1f}), {held / pool:.2f}x"
        )


if __name__ == "__main__":
    main()
