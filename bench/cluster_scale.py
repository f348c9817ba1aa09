"""The scale run on one Redis node and on a three-node Redis Cluster, side by side in one run.

Each layout gets a Redis of its own and a fresh gateway (the same code, REDIS_MODE set for it); the
scale run (bench/scale.py: idle SSE followers level by level, a probe of active turns at each)
runs against each. Per node, `INFO commandstats` before and after gives the traffic the run sent
there (commands, including those the append script runs, and the microseconds Redis spent on
them), and `CLIENT LIST` at each level gives the connections the gateway holds open on that node:
all of them (mostly its pool, as large as the most commands it ever had in flight at once) and its
log readers' (blocked in XREAD on one server, sharded pub/sub subscribers on a cluster).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

from bench import scale
from bench.redis_trips import primary_urls
from bench.stack import Stack
from bench.stats import fmt, table

log = logging.getLogger(__name__)

LAYOUTS = (("1 node", 1), ("3 nodes", 3))
#: The commands shown per node (the log's: the append script, its XADD and wake, and the reads).
SHOWN = ("evalsha", "xadd", "spublish", "xread")


async def node_stats(urls: list[str]) -> dict[str, dict[str, Any]]:
    """Per node: calls and microseconds per command so far, and the clients connected besides us."""
    found: dict[str, dict[str, Any]] = {}
    for url in urls:
        async with aioredis.Redis.from_url(url, decode_responses=True) as client:
            stats = await client.info("commandstats")
            clients = await client.client_list()
        node = url.split("//", 1)[1].rsplit("/", 1)[0]
        found[node] = {
            "calls": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
            "usec": sum(int(v["usec"]) for v in stats.values()),
            "clients": len(clients) - 1,  # this query's own connection left out
            # The gateway's log readers: blocked in XREAD (one server) or subscribed (a cluster).
            "readers": sum(1 for c in clients if "b" in c.get("flags", "") or int(c.get("ssub", 0))),
        }
    return found


def traffic(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the run sent each node: command calls and Redis CPU between the two snapshots."""
    out: dict[str, dict[str, Any]] = {}
    for node, end in after.items():
        start = before.get(node, {"calls": {}, "usec": 0})
        calls = {k: v - start["calls"].get(k, 0) for k, v in end["calls"].items()}
        calls.pop("info", None)
        calls.pop("client|list", None)
        out[node] = {
            "commands": sum(calls.values()),
            "redis_cpu_s": (end["usec"] - start["usec"]) / 1e6,
            **{name: calls.get(name, 0) for name in SHOWN},
        }
    return out


async def measure(
    stack: Stack, levels: list[int], probe_concurrency: int, probe_rounds: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, nodes in LAYOUTS:
        cluster = stack.redis_cluster(nodes) if nodes > 1 else None
        if cluster is None:
            stack.own_redis()
        name = f"gateway-{nodes}"
        stack.gateway(name)
        urls = await primary_urls(stack.urls["redis"])

        async def connections(urls: list[str] = urls) -> dict[str, Any]:
            stats = await node_stats(urls)
            return {node: {k: v[k] for k in ("clients", "readers")} for node, v in stats.items()}

        try:
            before = await node_stats(urls)
            run = await scale.measure(
                stack.urls[name],
                stack.pid(name),
                levels,
                probe_concurrency,
                probe_rounds,
                stop_over_budget=False,
                at_level=connections,
            )
            after = await node_stats(urls)
        finally:
            stack.stop(name)
            if cluster is not None:
                stack.stop_cluster(cluster)
            else:
                stack.stop("redis-server")
        results[label] = {"nodes": nodes, "scale": run, "traffic": traffic(before, after)}
        log.info("cluster scale: %s done", label)
    return results


def render(result: dict[str, Any]) -> str:
    rows = []
    for label, one in result.items():
        for row in one["scale"]["levels"]:
            held = row.get("at_level", {})
            rows.append(
                [
                    label,
                    row["idle_streams"],
                    fmt(row["ttft_ms"]["p50"]),
                    fmt(row["ttft_ms"]["p99"]),
                    row["fds"],
                    " / ".join(str(v["clients"]) for v in held.values()),
                    " / ".join(str(v["readers"]) for v in held.values()),
                    row["probe_errors"] + row["idle_failed"],
                ]
            )
    levels = table(
        [
            "layout",
            "idle streams",
            "ttft p50",
            "ttft p99",
            "gw fds",
            "conns per node",
            "log readers per node",
            "err",
        ],
        rows,
    )
    per_node = [
        [label, node, t["commands"], fmt(t["redis_cpu_s"], 2), *(t[name] for name in SHOWN)]
        for label, one in result.items()
        for node, t in one["traffic"].items()
    ]
    spread = table(["layout", "node", "commands", "redis cpu s", *SHOWN], per_node)
    return f"{levels}\n\nTraffic per node over the whole scale run:\n{spread}"
