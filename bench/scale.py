"""Scale: how many open streams one gateway process holds before p99 time to first token passes
the budget, and its resident memory per open stream (VmRSS of the gateway process, from /proc).

Idle streams are real SSE followers (`GET /v1/conversations/{id}/events`), one conversation and
one user each; at every level a probe of active streams measures TTFT through the gateway while
the idle ones stay open. Before the probe, a quiet window counts what the idle streams alone cost
each second: the gateway's CPU (utime + stime from /proc) and, given the Redis URL, the commands
Redis ran (INFO commandstats before and after); the machine's load average is noted with each level.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench.clients import Target, wave
from bench.stack import open_fds, rss_bytes, token
from bench.stats import fmt, summary, table

log = logging.getLogger(__name__)

TTFT_BUDGET_MS = 250.0
#: The quiet window at each level in which the idle streams' own cost is counted.
IDLE_WINDOW_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def command_calls(redis_url: str) -> dict[str, int]:
    """Commands Redis has run so far, by name (INFO commandstats)."""
    client = aioredis.from_url(redis_url)
    try:
        info = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


async def idle_cost(gateway_pid: int, redis_url: str | None, seconds: float) -> dict[str, Any]:
    """The gateway's CPU share and Redis's commands per second over a window with no request."""
    calls = await command_calls(redis_url) if redis_url else {}
    cpu, t0 = process_cpu_s(gateway_pid), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    cost: dict[str, Any] = {"cpu_pct": round(100 * (process_cpu_s(gateway_pid) - cpu) / elapsed, 1)}
    if redis_url:
        after = await command_calls(redis_url)
        per_s = {name: (n - calls.get(name, 0)) / elapsed for name, n in after.items()}
        cost["redis_commands_per_s"] = {
            name: round(rate, 1) for name, rate in sorted(per_s.items()) if rate >= 0.5
        }
    return cost


class IdleStreams:
    """SSE followers held open by this process (each read continuously, so none backs up)."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        self.readers: list[asyncio.Task[None]] = []
        self.failed = 0

    async def _conversation(self, user: str) -> str:
        headers = {"Authorization": f"Bearer {token(user)}"}
        async with self.session.post(
            f"{self.gateway}/v1/conversations", json={}, headers=headers
        ) as response:
            response.raise_for_status()
            return str((await response.json())["id"])

    async def _hold(self, user: str, cid: str, opened: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {token(user)}", "Accept": "text/event-stream"}
        try:
            async with self.session.get(
                f"{self.gateway}/v1/conversations/{cid}/events", headers=headers
            ) as response:
                response.raise_for_status()
                opened.set()
                async for _ in response.content.iter_any():
                    pass
            self.failed += 1  # an idle stream the gateway ended (e.g. it could not follow the log)
            log.warning("idle stream %s ended by the gateway", cid)
        except aiohttp.ClientError as exc:
            self.failed += 1
            log.warning("idle stream %s ended: %s", cid, exc)
        finally:
            opened.set()

    async def grow_to(self, count: int, parallel: int = 64) -> None:
        semaphore = asyncio.Semaphore(parallel)

        async def one(index: int) -> None:
            async with semaphore:
                user = f"idle-{index}"
                try:
                    cid = await self._conversation(user)
                except aiohttp.ClientError as exc:
                    self.failed += 1
                    log.warning("idle stream %d: no conversation: %s", index, exc)
                    return
                opened = asyncio.Event()
                self.readers.append(asyncio.create_task(self._hold(user, cid, opened)))
                await opened.wait()

        await asyncio.gather(*(one(i) for i in range(len(self.readers), count)))

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.session.close()


async def active_streams(gateway: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_active_streams{")
    )


async def measure(
    gateway: str,
    gateway_pid: int,
    levels: list[int],
    probe_concurrency: int,
    probe_rounds: int,
    *,
    stop_over_budget: bool = True,
    at_level: Callable[[], Awaitable[Any]] | None = None,
    redis_url: str | None = None,
    idle_window_s: float = IDLE_WINDOW_S,
) -> dict[str, Any]:
    """Grow idle streams level by level, probing TTFT at each. Stops at the first level with probe
    errors or failed idle streams, and (unless stop_over_budget is False) at the first over budget.
    `at_level`, when given, is awaited at each level with the streams open; its result goes in the row.
    With `redis_url`, the idle window also counts the Redis commands run per second."""
    idle = IdleStreams(gateway)
    probe = Target("gateway", f"{gateway}/v1", model="default", jwt_per_user=True)
    rows: list[dict[str, Any]] = []
    try:
        await wave(probe, probe_concurrency, "scale", -1)
        for level in levels:
            t0 = time.monotonic()
            await idle.grow_to(level)
            opened_s = round(time.monotonic() - t0, 1)
            deadline = time.monotonic() + 60
            # Polls another process's /metrics: there is no event to await.
            while (  # noqa: ASYNC110
                await active_streams(gateway) < level - idle.failed and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.2)
            gc.collect()
            rss = rss_bytes(gateway_pid)
            idle_s = await idle_cost(gateway_pid, redis_url, idle_window_s) if idle_window_s > 0 else {}
            samples = []
            for round_ in range(probe_rounds):
                samples += await wave(probe, probe_concurrency, "scale", round_)
            ok = [s.ttft_ms for s in samples if s.error is None and s.ttft_ms is not None]
            row: dict[str, Any] = {
                "idle_streams": level,
                "open_by_gateway": await active_streams(gateway),
                "rss_mb": rss / 2**20,
                "fds": open_fds(gateway_pid),
                "probe_errors": len(samples) - len(ok),
                "idle_failed": idle.failed,
                "seconds_to_open": opened_s,
                "ttft_ms": summary(ok),
                "idle": idle_s,
                "load_1m": round(os.getloadavg()[0], 2),
            }
            if at_level is not None:  # e.g. the Redis nodes' connection counts while the streams are open
                row["at_level"] = await at_level()
            rows.append(row)
            log.info(
                "scale: %d idle streams, rss %.1f MB, ttft p99 %.1f ms",
                level,
                row["rss_mb"],
                row["ttft_ms"]["p99"],
            )
            if row["probe_errors"] or idle.failed:
                break
            if stop_over_budget and row["ttft_ms"]["p99"] > TTFT_BUDGET_MS:
                break
    finally:
        await idle.close()
        await probe.close()
    return _conclude(rows, probe_concurrency)


def _conclude(rows: list[dict[str, Any]], probe_concurrency: int) -> dict[str, Any]:
    within = [r for r in rows if r["ttft_ms"]["p99"] <= TTFT_BUDGET_MS and not r["probe_errors"]]
    base = rows[0]
    per_stream = []
    for row in rows[1:]:
        extra = row["idle_streams"] - base["idle_streams"]
        if extra > 0:
            per_stream.append((row["rss_mb"] - base["rss_mb"]) * 2**20 / extra)
    held = max((r["idle_streams"] for r in within), default=0) + probe_concurrency if within else 0
    return {
        "levels": rows,
        "budget_ms": TTFT_BUDGET_MS,
        "probe_concurrency": probe_concurrency,
        "max_open_streams_within_budget": held,
        "budget_exceeded": len(within) < len(rows),
        "rss_per_stream_kb": [round(v / 1024, 1) for v in per_stream],
    }


def _maybe(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else fmt(value, digits)


def render(result: dict[str, Any]) -> str:
    redis = any("redis_commands_per_s" in r.get("idle", {}) for r in result["levels"])
    rows = [
        [
            r["idle_streams"],
            int(r["open_by_gateway"]),
            fmt(r["rss_mb"]),
            r["fds"],
            fmt(r["ttft_ms"]["p50"]),
            fmt(r["ttft_ms"]["p99"]),
            r["probe_errors"],
            _maybe(r.get("idle", {}).get("cpu_pct")),
            _maybe(sum(r.get("idle", {}).get("redis_commands_per_s", {}).values()) if redis else None),
            _maybe(r.get("load_1m"), 2),
        ]
        for r in result["levels"]
    ]
    text = table(
        [
            "idle streams",
            "open (gauge)",
            "rss MB",
            "fds",
            "ttft p50",
            "ttft p99",
            "err",
            "idle cpu %",
            "redis cmd/s",
            "load 1m",
        ],
        rows,
    )
    verdict = (
        f"held {result['max_open_streams_within_budget']} open streams (idle + {result['probe_concurrency']}"
        f" active) with p99 TTFT <= {result['budget_ms']:.0f} ms"
        + ("" if result["budget_exceeded"] else " (budget not reached: the largest level tried)")
    )
    per = result["rss_per_stream_kb"]
    return f"{text}\n{verdict}; RSS per open stream: {', '.join(map(str, per)) or '-'} KB by level"
