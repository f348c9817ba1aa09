"""Redis traffic per user turn, counted with MONITOR on the benchmark's own Redis (on a Redis
Cluster, on every primary: MONITOR shows one node's commands only; the counts add up, and each
node's share is kept).

One turn = `POST /v1/conversations/{id}/messages` streamed over SSE until its `message_end`.
MONITOR lists every command the gateway sends (and, marked `lua`, those its scripts run). Commands
of one pipeline or transaction reach Redis together, so round trips are estimated by grouping a
connection's commands that arrive within PIPELINE_GAP_S of each other. The gateway's background
loops (outbox relay, update consumer) also talk to Redis: an idle window of the same length is
counted the same way and subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from agent_contracts.redis_connection import cluster_enabled
from bench.stack import token
from bench.stats import table

PIPELINE_GAP_S = 0.00005


async def primary_urls(redis_url: str) -> list[str]:
    """The URL of every primary: the one server, or each primary of the cluster `redis_url` is in."""
    if not await cluster_enabled(redis_url):
        return [redis_url]
    async with aioredis.Redis.from_url(redis_url, decode_responses=True) as client:
        nodes = str(await client.execute_command("CLUSTER", "NODES"))  # type: ignore[no-untyped-call]
    found = []
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) > 2 and "master" in fields[2].split(","):
            found.append(f"redis://{fields[1].split('@', 1)[0]}/0")
    return sorted(found)


class Recorder:
    """MONITOR on each of the given nodes at once; every command is tagged with its node."""

    def __init__(self, urls: list[str]) -> None:
        self._clients = [aioredis.Redis.from_url(url, decode_responses=True) for url in urls]
        self._urls = urls
        self.commands: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Recorder:
        ready = [asyncio.Event() for _ in self._clients]
        self._tasks = [
            asyncio.create_task(self._run(client, url, event))
            for client, url, event in zip(self._clients, self._urls, ready, strict=True)
        ]
        for event in ready:
            await event.wait()
        return self

    async def _run(self, client: aioredis.Redis, url: str, ready: asyncio.Event) -> None:
        node = url.split("//", 1)[1].rsplit("/", 1)[0]
        async with client.monitor() as monitor:
            ready.set()
            while True:
                command = await monitor.next_command()
                command["node"] = node
                self.commands.append(command)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # let MONITOR deliver the last lines
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self._clients:
            await client.aclose()


def count(commands: list[dict[str, Any]]) -> dict[str, Any]:
    client = [c for c in commands if c["client_type"] != "lua"]
    lua = [c for c in commands if c["client_type"] == "lua"]
    trips, last_seen = 0, dict[Any, Any]()
    for c in sorted(client, key=lambda c: c["time"]):
        port = (c.get("node"), c["client_port"])
        if port not in last_seen or c["time"] - last_seen[port] > PIPELINE_GAP_S:
            trips += 1
        last_seen[port] = c["time"]
    names = Counter(c["command"].split(" ", 1)[0].upper() for c in client)
    return {
        "round_trips_est": trips,
        "client_commands": len(client),
        "lua_commands": len(lua),
        "by_command": dict(names.most_common()),
        "by_node": dict(sorted(Counter(c.get("node", "") for c in client).items())),
    }


async def new_conversation(gateway: str, user: str) -> str:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token(user)}"}) as session:
        async with session.post(f"{gateway}/v1/conversations", json={}) as response:
            return str((await response.json())["id"])


async def one_turn(gateway: str, user: str, cid: str, prompt: str) -> tuple[float, int]:
    """One message and its whole streamed answer (the conversation exists already: not part of the turn)."""
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        started = time.monotonic()
        tokens = 0
        async with session.post(
            f"{gateway}/v1/conversations/{cid}/messages",
            json={"content": prompt},
            headers={"Accept": "text/event-stream"},
        ) as response:
            response.raise_for_status()
            async for line in response.content:
                tokens += line.startswith(b"event: token")
        return time.monotonic() - started, tokens


async def measure(gateway: str, redis_url: str, turns: int) -> dict[str, Any]:
    nodes = await primary_urls(redis_url)
    await one_turn(gateway, "trips-warm", await new_conversation(gateway, "trips-warm"), "warm up")
    per_turn: list[dict[str, Any]] = []
    for i in range(turns):
        cid = await new_conversation(gateway, f"trips-{i}")
        async with Recorder(nodes) as busy:
            elapsed, tokens = await one_turn(gateway, f"trips-{i}", cid, "count my round trips")
        async with Recorder(nodes) as idle:
            await asyncio.sleep(elapsed)
        turn, background = count(busy.commands), count(idle.commands)
        names = Counter(turn["by_command"])
        names.subtract(background["by_command"])
        by_node = Counter(turn["by_node"])
        by_node.subtract(background["by_node"])
        per_turn.append(
            {
                "tokens": tokens,
                "seconds": elapsed,
                "round_trips_est": turn["round_trips_est"] - background["round_trips_est"],
                "client_commands": turn["client_commands"] - background["client_commands"],
                "lua_commands": turn["lua_commands"] - background["lua_commands"],
                "background_commands": background["client_commands"],
                "by_command": {k: v for k, v in names.most_common() if v > 0},
                "by_node": dict(sorted(by_node.items())),
            }
        )
    return {"nodes": len(nodes), "turns": per_turn}


def render(result: dict[str, Any]) -> str:
    rows = [
        [
            i,
            t["tokens"],
            f"{t['seconds']:.2f}",
            t["round_trips_est"],
            t["client_commands"],
            t["lua_commands"],
            t["background_commands"],
            ", ".join(f"{k} {v}" for k, v in list(t["by_command"].items())[:6]),
            *(
                [" / ".join(str(v) for v in t.get("by_node", {}).values())]
                if result.get("nodes", 1) > 1
                else []
            ),
        ]
        for i, t in enumerate(result["turns"])
    ]
    head = ["turn", "tokens", "s", "round trips", "commands", "in lua", "idle bg", "top commands"]
    return table(head + (["commands per node"] if result.get("nodes", 1) > 1 else []), rows)
