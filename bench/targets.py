"""The gateway's hot-path targets, measured side by side in one run with one harness.

1. Added time to first token at 1 stream: p50 through the gateway (and LiteLLM's proxy) minus p50
   to the upstream directly, sequential streams with the `openai` SDK, alternating target per round.
2. Throughput at 16 concurrent: completed streams/s of the scripted answer through
   `/v1/chat/completions`, per target, alternating windows; tokens relayed per CPU second of the
   target's own process tree (utime + stime from /proc), i.e. tokens/s per core. The load is made
   by a plain aiohttp SSE client (the same for every target), because the `openai` SDK's per-chunk
   parsing would saturate the load generator before the targets on a 2-core machine.
3. Idle open streams: RSS and descriptors per idle SSE follower, and the scale run up to 10,000 open
   streams with the p99 TTFT of active streams at each level (bench/scale.py, not stopped at the
   first level over budget so every level of the target is reported).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import scale
from bench.clients import Target, stream_once
from bench.profile import render as render_profile
from bench.stack import token
from bench.stats import fmt, summary, table

log = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The answer of the throughput and TTFT targets: 50 tokens, all sent at once by the upstream.
TOKENS = 50


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its live descendants (LiteLLM may run workers as children)."""
    pids = {pid}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in pids:
                pids.add(child)
                todo.append(child)
    total = 0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


async def added_ttft(targets: list[Target], rounds: int) -> dict[str, Any]:
    """Sequential single streams, alternating target each round (order reversed every other round)."""
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    errors: dict[str, int] = {t.name: 0 for t in targets}
    for target in targets:  # warm-up: connections, lazy imports, the gateway's first config read
        for _ in range(3):
            await stream_once(target, "ttft-user", "warm")
    for round_ in range(rounds):
        order = targets if round_ % 2 == 0 else list(reversed(targets))
        for target in order:
            sample = await stream_once(target, "ttft-user", f"ttft {round_}")
            if sample.error is None and sample.ttft_ms is not None:
                samples[target.name].append(sample.ttft_ms)
            else:
                errors[target.name] += 1
    result: dict[str, dict[str, Any]] = {
        name: {"ttft_ms": summary(got), "errors": errors[name]} for name, got in samples.items()
    }
    direct = result["direct"]["ttft_ms"]["p50"]
    for got in result.values():
        got["added_p50_ms"] = got["ttft_ms"]["p50"] - direct
    return result


@dataclass
class RawTarget:
    """A target for the throughput client: where to POST, with which model and key."""

    name: str
    base_url: str
    pid: int
    model: str = "scripted"
    api_key: str = "bench"
    jwt: bool = False


@functools.cache
def _token(user: str) -> str:
    """One token per user for the whole run, as a client keeps its token until it expires (a new
    one per request, as before, cost the load generator and left the gateway verifying a new
    token each second)."""
    return token(user)


async def _raw_stream(session: aiohttp.ClientSession, target: RawTarget, user: str, n: int) -> int:
    """One streamed completion read as raw SSE; returns the number of content chunks."""
    headers = {"Authorization": f"Bearer {_token(user) if target.jwt else target.api_key}"}
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": f"throughput {n}"}],
        "stream": True,
    }
    chunks = 0
    async with session.post(f"{target.base_url}/chat/completions", json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                break
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                chunks += 1
    return chunks


async def _window(
    session: aiohttp.ClientSession, target: RawTarget, concurrency: int, seconds: float, users: list[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    done = tokens = errors = 0

    async def worker(slot: int) -> None:
        nonlocal done, tokens, errors
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                got = await _raw_stream(session, target, users[slot], n)
                tokens += got  # not `tokens += await ...`: that reads `tokens` before the await
                done += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors += 1
                log.warning("throughput %s: %s", target.name, exc)

    cpu0, t0 = cpu_seconds(target.pid), time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall, cpu = time.monotonic() - t0, cpu_seconds(target.pid) - cpu0
    return {"streams": done, "tokens": tokens, "errors": errors, "wall_s": wall, "cpu_s": cpu}


async def throughput(
    targets: list[RawTarget], concurrency: int, seconds: float, windows: int
) -> dict[str, Any]:
    """Alternating windows of `seconds` per target; sums per target over all windows."""
    totals: dict[str, dict[str, Any]] = {
        t.name: {"streams": 0, "tokens": 0, "errors": 0, "wall_s": 0.0, "cpu_s": 0.0} for t in targets
    }
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        users = [f"tput-user-{i}" for i in range(concurrency)]
        for target in targets:
            await _window(session, target, concurrency, 1.0, users)  # warm-up, unmeasured
        for index in range(windows):
            order = targets if index % 2 == 0 else list(reversed(targets))
            for target in order:
                got = await _window(session, target, concurrency, seconds, users)
                log.info("throughput %s window %d: %s", target.name, index, got)
                for key, value in got.items():
                    totals[target.name][key] += value
    for got in totals.values():
        got["streams_per_s"] = got["streams"] / got["wall_s"] if got["wall_s"] else 0.0
        got["tokens_per_s"] = got["tokens"] / got["wall_s"] if got["wall_s"] else 0.0
        got["tokens_per_cpu_s"] = got["tokens"] / got["cpu_s"] if got["cpu_s"] else 0.0
        got["cpu_ms_per_stream"] = 1000 * got["cpu_s"] / got["streams"] if got["streams"] else 0.0
    return totals


def render(result: dict[str, Any]) -> str:
    parts: list[str] = []
    ttft = result.get("ttft")
    if ttft:
        rows = [
            [
                name,
                got["ttft_ms"]["n"],
                got["errors"],
                fmt(got["ttft_ms"]["p50"], 2),
                fmt(got["ttft_ms"]["p99"], 2),
                fmt(got["added_p50_ms"], 2),
            ]
            for name, got in ttft.items()
        ]
        parts.append(
            "Added TTFT at 1 stream (target <= 1.0 ms)\n"
            + table(["target", "streams", "err", "ttft p50", "ttft p99", "added p50"], rows)
        )
    tput = result.get("throughput")
    if tput:
        rows = [
            [
                name,
                got["streams"],
                got["errors"],
                fmt(got["streams_per_s"]),
                fmt(got["tokens_per_s"], 0),
                fmt(got["cpu_s"]),
                fmt(got["cpu_ms_per_stream"], 2),
                fmt(got["tokens_per_cpu_s"], 0),
            ]
            for name, got in tput.items()
        ]
        text = table(
            ["target", "streams", "err", "streams/s", "tokens/s", "cpu s", "cpu ms/stream", "tokens/cpu-s"],
            rows,
        )
        if "gateway" in tput and "litellm" in tput and tput["litellm"]["streams_per_s"]:
            times = tput["gateway"]["streams_per_s"] / tput["litellm"]["streams_per_s"]
            text += f"\ngateway / litellm streams/s: {times:.2f}x"
        if "gateway" in tput and "baseline" in tput and tput["baseline"]["cpu_ms_per_stream"]:
            gateway, baseline = tput["gateway"], tput["baseline"]
            text += (
                f"\ngateway / baseline ({result.get('baseline')}): streams/s"
                f" {gateway['streams_per_s'] / baseline['streams_per_s']:.2f}x, CPU per stream"
                f" {gateway['cpu_ms_per_stream'] / baseline['cpu_ms_per_stream']:.2f}x"
            )
        for name in result.get("variants", {}):
            if name in tput and tput[name]["cpu_ms_per_stream"] and "gateway" in tput:
                gateway, variant = tput["gateway"], tput[name]
                speed = gateway["streams_per_s"] / variant["streams_per_s"]
                cpu = gateway["cpu_ms_per_stream"] / variant["cpu_ms_per_stream"]
                text += f"\ngateway / {name}: streams/s {speed:.2f}x, CPU per stream {cpu:.2f}x"
        parts.append(
            "Throughput at 16 concurrent (targets: >= 300 streams/s, >= 15,000 tokens/cpu-s, >= 6x LiteLLM)\n"
            + text
        )
    if result.get("profile"):
        parts.append(
            "Gateway profile during a throughput window (py-spy, 100 Hz)\n"
            + render_profile(result["profile"])
        )
    idle = result.get("idle")
    if idle:
        parts.append("Idle open streams (targets: <= 30 KB and <= 1.1 descriptors each)\n" + json.dumps(idle))
    if "scale" in result:
        parts.append(
            "Scale run (target: 10,000 open streams, p99 TTFT < 250 ms)\n" + scale.render(result["scale"])
        )
    if "fd_limit" in result:
        parts.append(f"descriptor limit allowed on this machine: {result['fd_limit']}")
    return "\n\n".join(parts)


def idle_cost(scale_result: dict[str, Any]) -> dict[str, Any]:
    """Per idle stream, from the first and the largest level reached without errors."""
    levels = [
        r for r in scale_result["levels"] if not r["probe_errors"] and not r["idle_failed"]
    ] or scale_result["levels"][:1]
    base, top = scale_result["levels"][0], levels[-1]
    extra = top["idle_streams"] - base["idle_streams"]
    if extra <= 0:
        return {}
    return {
        "streams": extra,
        "rss_kb_per_stream": round((top["rss_mb"] - base["rss_mb"]) * 1024 / extra, 1),
        "fds_per_stream": round((top["fds"] - base["fds"]) / extra, 3),
    }
