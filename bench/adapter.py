"""The model adapter alone (`python -m bench.adapter`): CPU per streamed answer of
`streaming_gateway.llm.openai_adapter` against the scripted upstream, in this process, on uvloop.

No gateway, no Redis: the SDK's request (options, headers, the httpx2 request, aiohttp's send) and
the stream's decoding (reads, server-sent events, JSON, deltas) are all that runs. With
BENCH_BASELINE=<git rev> that revision's adapter (its `openai_adapter.py`, loaded beside this one)
runs in the same rounds, alternating, for a before/after ratio in one run. Scenarios: the 50-token
answer sent at once (the targets' answer) with a short prompt and with a 60-message history, and
the same answer paced 1 ms a token (a read per token, as a model generating it gives). Prints the
median over the rounds of CPU milliseconds per answer (`time.process_time`, this process only: the
upstream is its own process). Then answers one at a time (the paced one): the median time to the
first text and the upstream connections opened (counted by wrapping aiohttp's
`TCPConnector._create_connection` here, in the benchmark only). BENCH_ADAPTER_ROUNDS (default 7)
and BENCH_ADAPTER_STREAMS (per round and scenario, default 160) size it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import uvloop

from bench.stack import new_stack, put_script
from bench.stats import fmt, table
from streaming_gateway.llm import openai_adapter
from streaming_gateway.llm.port import ChatRequest, Finish, TextDelta
from streaming_gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 50
CONCURRENCY = 16
SYSTEM = {"role": "system", "content": "You are the support assistant of a ticketing service. " * 8}
HISTORY = [
    {
        "role": "user" if n % 2 else "assistant",
        "content": f"Turn {n}: about ticket T-{n}, its status, é ü. " * 5,
    }
    for n in range(60)
]
#: scenario -> (messages, what the scripted upstream matches to pace its tokens)
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "50 tokens at once, short prompt": [SYSTEM, {"role": "user", "content": "burst: hello"}],
    "50 tokens at once, 60-message history": [SYSTEM, *HISTORY, {"role": "user", "content": "burst: hello"}],
    "50 tokens 1 ms apart, short prompt": [SYSTEM, {"role": "user", "content": "paced: hello"}],
}
SEQUENTIAL = "50 tokens 1 ms apart, short prompt"
#: Upstream connections opened by this process (see the docstring).
CONNECTIONS = [0]
SCRIPT = [
    {"match": "paced:", "tokens": TOKENS, "token_delay_ms": 1},
    {"match": "", "tokens": TOKENS, "token_delay_ms": 0},
]


def load_baseline(rev: str) -> ModuleType:
    """That revision's adapter module, under another name, beside this checkout's."""
    source = subprocess.run(
        ["git", "show", f"{rev}:streaming_gateway/llm/openai_adapter.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-adapter-")) / "baseline_openai_adapter.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_openai_adapter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def answer(model: Any, request: ChatRequest) -> None:
    async for item in model.stream(request):
        if isinstance(item, Finish) and item.reason != "stop":
            raise RuntimeError(f"unexpected finish: {item}")


async def cpu_per_answer(model: Any, request: ChatRequest, streams: int) -> float:
    started = time.process_time()
    for _ in range(streams // CONCURRENCY):
        await asyncio.gather(*(answer(model, request) for _ in range(CONCURRENCY)))
    return (time.process_time() - started) * 1000 / (streams // CONCURRENCY * CONCURRENCY)


def count_connections() -> None:
    create = aiohttp.TCPConnector._create_connection

    async def counted(self: aiohttp.TCPConnector, *args: Any, **kwargs: Any) -> Any:
        CONNECTIONS[0] += 1
        return await create(self, *args, **kwargs)

    aiohttp.TCPConnector._create_connection = counted  # type: ignore[method-assign]


async def one_at_a_time(model: Any, request: ChatRequest, answers: int) -> tuple[list[float], int]:
    """Answers one after another: each one's time to its first text (ms), and connections opened."""
    before = CONNECTIONS[0]
    firsts = []
    for _ in range(answers):
        started = time.perf_counter()
        first = None
        async for item in model.stream(request):
            if first is None and isinstance(item, TextDelta):
                first = (time.perf_counter() - started) * 1000
        assert first is not None
        firsts.append(first)
    return firsts, CONNECTIONS[0] - before


async def measure(upstream: str, baseline: str | None, rounds: int, streams: int) -> dict[str, Any]:
    settings = Settings.from_env(
        {
            "AUTH_JWT_SECRET": "bench-adapter-secret-0123456789abcdef",
            "OPENAI_BASE_URL": upstream,
            "OPENAI_API_KEY": "scripted",
        }
    )
    modules = {"adapter": openai_adapter}
    if baseline:
        modules = {"baseline": load_baseline(baseline), **modules}
    models = {name: module.create_chat_model(settings) for name, module in modules.items()}
    requests = {
        scenario: ChatRequest(model="scripted", messages=messages) for scenario, messages in SCENARIOS.items()
    }
    samples: dict[str, dict[str, list[float]]] = {s: {n: [] for n in models} for s in SCENARIOS}
    try:
        for model in models.values():  # warm-up: connections, lazy imports
            for request in requests.values():
                await cpu_per_answer(model, request, CONCURRENCY * 2)
        firsts: dict[str, list[float]] = {n: [] for n in models}
        connections = dict.fromkeys(models, 0)
        for round_ in range(rounds):
            order = list(models) if round_ % 2 == 0 else list(reversed(models))
            for scenario, request in requests.items():
                for name in order:
                    samples[scenario][name].append(await cpu_per_answer(models[name], request, streams))
            for name in order:
                times, opened = await one_at_a_time(models[name], requests[SEQUENTIAL], streams // 4)
                firsts[name] += times
                connections[name] += opened
    finally:
        for model in models.values():
            await model.close()
    return {
        "cpu_ms": {
            scenario: {name: sorted(values)[len(values) // 2] for name, values in by_model.items()}
            for scenario, by_model in samples.items()
        },
        "one_at_a_time": {
            name: {
                "answers": len(firsts[name]),
                "first_text_ms_p50": sorted(firsts[name])[len(firsts[name]) // 2],
                "connections": connections[name],
            }
            for name in models
        },
    }


def render(result: dict[str, Any], baseline: str | None) -> str:
    names = ["baseline", "adapter"] if baseline else ["adapter"]
    header = ["scenario", *(f"{n} ms/answer" for n in names)] + (["ratio"] if baseline else [])
    rows = []
    for scenario, got in result["cpu_ms"].items():
        row = [scenario, *(fmt(got[n], 3) for n in names)]
        if baseline:
            row.append(fmt(got["adapter"] / got["baseline"], 2) + "x")
        rows.append(row)
    sequential = table(
        ["adapter", "answers", "first text p50 ms", "connections opened"],
        [
            [n, got["answers"], fmt(got["first_text_ms_p50"], 2), got["connections"]]
            for n, got in result["one_at_a_time"].items()
        ],
    )
    return f"{table(header, rows)}\n\nOne at a time ({SEQUENTIAL})\n{sequential}"


async def main() -> None:
    baseline = os.environ.get("BENCH_BASELINE")
    rounds = int(os.environ.get("BENCH_ADAPTER_ROUNDS", "7"))
    streams = int(os.environ.get("BENCH_ADAPTER_STREAMS", "160"))
    count_connections()
    stack = new_stack(ROOT / "bench" / "results")
    try:
        upstream = stack.upstream()
        await put_script(upstream, SCRIPT)
        result = await measure(upstream, baseline, rounds, streams)
    finally:
        stack.close()
    label = f" (baseline {baseline})" if baseline else ""
    print(
        f"CPU per answer of the model adapter alone{label}, {CONCURRENCY} concurrent, "
        f"median of {rounds} rounds of {streams}\n" + render(result, baseline)
    )


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
