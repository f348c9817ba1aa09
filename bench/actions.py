"""Action pipeline throughput, end to end: a user message makes the model call `create_ticket`; the
gateway accepts the action into its outbox (the client sees `action_status: queued`), the relay
puts it on the local bus, the worker runs the function app's orchestrator and activities against
the tickets backend and records the result in the Cosmos DB server, and the update comes back to
the client as `action_status: succeeded`. Measured with 0% and 10% transient backend failures, each
with one worker process and with two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp

from bench.stack import token
from bench.stats import fmt, summary, table

log = logging.getLogger(__name__)

FINAL = {"succeeded", "failed", "dead_lettered"}

SCRIPT: list[dict[str, Any]] = [
    {
        "match": "ticket",
        "reply": "Opening it.",
        "tool_calls": [
            {"name": "create_ticket", "arguments": {"title": "bench ticket", "priority": "normal"}}
        ],
    },
    {"on_tool_result": True, "match": "", "reply": "Done."},
]


async def one_action(session: aiohttp.ClientSession, gateway: str, user: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with session.post(f"{gateway}/v1/conversations", json={}, headers=headers) as response:
        cid = (await response.json())["id"]
    sent = time.monotonic()
    queued = final = None
    status = attempts = None
    async with session.post(
        f"{gateway}/v1/conversations/{cid}/messages",
        json={"content": "open a ticket"},
        headers={**headers, "Accept": "text/event-stream"},
    ) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event.get("type") != "action_status":
                continue
            if event["status"] == "queued" and queued is None:
                queued = time.monotonic()
            if event["status"] in FINAL:
                final, status, attempts = time.monotonic(), event["status"], event.get("attempts")
                break
    return {"sent": sent, "queued": queued, "final": final, "status": status, "attempts": attempts}


async def run(gateway: str, actions: int, concurrency: int) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=300)

    async def limited(session: aiohttp.ClientSession, index: int) -> dict[str, Any]:
        async with semaphore:
            return await one_action(session, gateway, f"actions-{index}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        sequential = [await one_action(session, gateway, f"actions-seq-{i}") for i in range(5)]
        started = time.monotonic()
        done = await asyncio.gather(*(limited(session, i) for i in range(actions)))
        elapsed = time.monotonic() - started
    finished = [d for d in done if d["final"] is not None and d["queued"] is not None]
    statuses: dict[str, int] = {}
    for d in done:
        statuses[str(d["status"])] = statuses.get(str(d["status"]), 0) + 1
    retried = sum(1 for d in finished if (d["attempts"] or 1) > 1)
    return {
        "actions": actions,
        "concurrency": concurrency,
        "seconds": elapsed,
        "actions_per_s": len(finished) / elapsed if elapsed else 0.0,
        "statuses": statuses,
        "retried": retried,
        "latency_ms": summary([(d["final"] - d["queued"]) * 1000 for d in finished]),
        "single_action_latency_ms": summary(
            [(d["final"] - d["queued"]) * 1000 for d in sequential if d["final"] and d["queued"]]
        ),
    }


def render(results: dict[str, Any]) -> str:
    rows = [
        [
            name,
            r["actions"],
            r["concurrency"],
            fmt(r["actions_per_s"], 2),
            ", ".join(f"{k} {v}" for k, v in r["statuses"].items()),
            r["retried"],
            fmt(r["latency_ms"]["p50"], 0),
            fmt(r["latency_ms"]["p95"], 0),
            fmt(r["single_action_latency_ms"]["p50"], 0),
        ]
        for name, r in results.items()
    ]
    return table(
        [
            "failures, workers",
            "actions",
            "conc",
            "actions/s",
            "outcomes",
            "retried",
            "lat p50 ms",
            "lat p95 ms",
            "alone p50 ms",
        ],
        rows,
    )
