"""Redis memory per turn: what one turn leaves in Redis, right after its answer and once kept.

Two kinds of turn, each in a new conversation of a new user (so every key found is that turn's):

- **stateful**: `POST /v1/conversations` (not counted: the conversation exists first), then one
  `POST /v1/conversations/{id}/messages` streamed over SSE to its end;
- **stateless**: one streamed `POST /v1/chat/completions` without `X-Conversation-Id` (it creates
  its conversation; the id comes back in the response header).

Bytes are `MEMORY USAGE key SAMPLES 0` (the allocation Redis reports, key and overhead included)
summed over the keys carrying the conversation's hash tag, split into the log and the rest
(conversation hash, messages); the user's keys (conversation index, stream slots, rate window)
are counted apart. "end" is read as soon as the client has the answer's end; "kept" after
SETTLE_S, past the gateways' compaction delay (the bench starts them with
GATEWAY_LOG_COMPACT_DELAY_SECONDS=1), which is what stays for the keys' TTLs (also recorded).

Redis CPU per turn is the server's own `used_cpu_user + used_cpu_sys` (INFO cpu) from the turn's
start to the end of its settle window, less the bench's own reads: the turn, its compaction, and
whatever the gateways' idle loops cost meanwhile (the idle share is recorded beside it, from a
window of the same length with no turn, and subtracted by bench/capacity.py). INFO's CPU counters
move in steps of a few milliseconds: a figure of a turn is noisy, the median of several less so.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench.stack import token
from bench.stats import table

#: Longer than the compaction delay the bench gives its gateways (1 s), with room for a loaded machine.
SETTLE_S = 4.0
COMPACT_DELAY_S = "1"
MODEL = "default"


async def _keys_bytes(redis: aioredis.Redis, pattern: str) -> dict[str, tuple[int, int]]:
    """Each key matching `pattern`: its bytes and its TTL in seconds (-1 none)."""
    found: dict[str, tuple[int, int]] = {}
    async for key in redis.scan_iter(match=pattern, count=1000):
        size = await redis.memory_usage(key, samples=0)
        if size is not None:
            found[key] = (int(size), int(await redis.ttl(key)))
    return found


async def snapshot(redis: aioredis.Redis, cid: str, user: str) -> dict[str, Any]:
    conversation = await _keys_bytes(redis, f"*{{{cid}}}*")
    users = await _keys_bytes(redis, f"*{{{user}}}*")
    log_bytes = sum(size for key, (size, _) in conversation.items() if key.endswith(":log"))
    return {
        "log_bytes": log_bytes,
        "conversation_bytes": sum(size for size, _ in conversation.values()) - log_bytes,
        "user_bytes": sum(size for size, _ in users.values()),
        "ttl_s": {key.rsplit("}", 1)[-1] or ":conv": ttl for key, (_, ttl) in conversation.items()},
    }


async def redis_cpu_s(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _stateful(session: aiohttp.ClientSession, gateway: str) -> str:
    async with session.post(f"{gateway}/v1/conversations", json={}) as response:
        cid = str((await response.json())["id"])
    async with session.post(
        f"{gateway}/v1/conversations/{cid}/messages",
        json={"content": "how much memory does this take"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        response.raise_for_status()
        async for _line in response.content:
            pass
    return cid


async def _stateless(session: aiohttp.ClientSession, gateway: str) -> str:
    async with session.post(
        f"{gateway}/v1/chat/completions",
        json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "how much memory"}]},
    ) as response:
        response.raise_for_status()
        async for _line in response.content:
            pass
        return response.headers["X-Conversation-Id"]


async def measure(gateway: str, redis_url: str, turns: int, label: str) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    result: dict[str, Any] = {}
    try:
        for kind, run in (("stateful", _stateful), ("stateless", _stateless)):
            samples: list[dict[str, Any]] = []
            for i in range(turns):
                user = f"memory-{label}-{kind}-{i}"
                cpu = await redis_cpu_s(redis)
                async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {token(user)}"}
                ) as session:
                    cid = await run(session, gateway)
                looking = await redis_cpu_s(redis)
                end = await snapshot(redis, cid, user)
                # Not counted: the bench's own SCAN and MEMORY USAGE.
                cpu += await redis_cpu_s(redis) - looking
                await asyncio.sleep(SETTLE_S)
                cpu = await redis_cpu_s(redis) - cpu
                kept = await snapshot(redis, cid, user)
                idle = await redis_cpu_s(redis)
                await asyncio.sleep(SETTLE_S)
                idle = await redis_cpu_s(redis) - idle
                samples.append(
                    {
                        "cid": cid,
                        "end": end,
                        "kept": kept,
                        "redis_cpu_ms": cpu * 1000,
                        "idle_cpu_ms": idle * 1000,
                    }
                )
            result[kind] = {"samples": samples, **summary(samples)}
    finally:
        await redis.aclose()
    return result


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def median(when: str, field: str) -> int:
        return int(statistics.median(s[when][field] for s in samples))

    return {
        when: {field: median(when, field) for field in ("log_bytes", "conversation_bytes", "user_bytes")}
        for when in ("end", "kept")
    } | {
        "ttl_s": samples[-1]["kept"]["ttl_s"],
        "redis_cpu_ms": statistics.median(s["redis_cpu_ms"] for s in samples),
        "idle_cpu_ms": statistics.median(s["idle_cpu_ms"] for s in samples),
    }


def render(results: dict[str, dict[str, Any]]) -> str:
    """One row per gateway and kind of turn: median bytes at the end and kept, and the keys' TTLs."""
    rows = []
    for name, result in results.items():
        for kind in ("stateful", "stateless"):
            r = result[kind]
            end, kept = r["end"], r["kept"]
            rows.append(
                [
                    name,
                    kind,
                    end["log_bytes"],
                    end["conversation_bytes"],
                    kept["log_bytes"],
                    kept["conversation_bytes"],
                    kept["log_bytes"] + kept["conversation_bytes"],
                    kept["user_bytes"],
                    f"{r['redis_cpu_ms']:.1f} ({r['idle_cpu_ms']:.1f})",
                    ", ".join(f"{k} {v}" for k, v in sorted(r["ttl_s"].items())),
                ]
            )
    return table(
        [
            "gateway",
            "turn",
            "log at end",
            "conv at end",
            "log kept",
            "conv kept",
            "kept total",
            "user keys",
            "Redis CPU ms (idle)",
            "TTL s",
        ],
        rows,
    )
