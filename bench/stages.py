"""Added time to first token, stage by stage (`BENCH_ONLY=stages`): single streams with the `openai`
SDK to the upstream directly and through gateways whose stages are timed (bench/staged_gateway.py),
alternating every round; with BENCH_BASELINE a baseline revision's gateway is timed beside this
checkout's. Each stage is the median over the rounds of its time after the request reached the
app (`arrived`); TTFT is the client's, to the first chunk carrying text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.clients import Sample, Target, stream_once
from bench.stack import Stack
from bench.stats import percentile, summary, table

STAGED = Path(__file__).resolve().parent / "staged_gateway.py"
WARM_UP = 3
#: Stages in request order (bench/staged_gateway.py names them).
ORDER = [
    "client_started",
    "arrived",
    "authenticated",
    "body_read",
    "agent_resolved",
    "rate_limited",
    "create_start",
    "created",
    "slot_taken",
    "following",
    "setup_start",
    "begin_turn_start",
    "user_steps_done",
    "begin_turn_done",
    "setup_done",
    "answer_task_started",
    "upstream_request_sent",
    "upstream_headers",
    "upstream_first_chunk",
    "first_append_start",
    "first_append_done",
    "follower_first_entry",
    "first_client_write",
    "client_first_token_written",
    "client_got_first_token",
]


def start(stack: Stack, name: str, source: Path | None) -> tuple[str, Path]:
    out = stack.workdir / f"{name}.stages.jsonl"
    url = stack.gateway(name, source, script=STAGED, BENCH_STAGES_OUT=str(out))
    return url, out


async def measure(stack: Stack, rounds: int, model: str, baseline: Path | None) -> dict[str, Any]:
    gateways = {"gateway": start(stack, "staged", None)}
    if baseline is not None:
        gateways["baseline"] = start(stack, "staged-baseline", baseline)
    targets = [Target("direct", stack.urls["upstream"])] + [
        Target(name, f"{url}/v1", model=model, jwt_per_user=True) for name, (url, _) in gateways.items()
    ]
    ttft: dict[str, list[float]] = {t.name: [] for t in targets}
    samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
    try:
        for target in targets:
            for _ in range(WARM_UP):
                await stream_once(target, "stages-user", "warm")
        for round_ in range(rounds):
            for target in targets if round_ % 2 == 0 else list(reversed(targets)):
                sample = await stream_once(target, "stages-user", f"stages {round_}")
                samples[target.name].append(sample)
                if sample.error is None and sample.ttft_ms is not None:
                    ttft[target.name].append(sample.ttft_ms)
    finally:
        for target in targets:
            await target.close()
    direct = percentile(ttft["direct"], 50)
    result: dict[str, Any] = {"direct_ttft_ms": summary(ttft["direct"])}
    for name, (_, out) in gateways.items():
        lines = [json.loads(line) for line in out.read_text().splitlines()][WARM_UP:]
        for line, sample in zip(lines, samples[name], strict=False):
            # The client's side on the same clock: its request's start and its first text.
            line["client_started"] = (sample.started_at - line["arrived_at"]) * 1000
            if sample.first_at is not None:
                line["client_got_first_token"] = (sample.first_at - line["arrived_at"]) * 1000
        result[name] = {
            "ttft_ms": summary(ttft[name]),
            "added_p50_ms": percentile(ttft[name], 50) - direct,
            "stages_p50_ms": {
                stage: percentile([line[stage] for line in lines if stage in line], 50)
                for stage in ORDER
                if any(stage in line for line in lines)
            },
            "requests": len(lines),
        }
    return result


def render(result: dict[str, Any]) -> str:
    names = [name for name in ("baseline", "gateway") if name in result]
    rows: list[list[Any]] = []
    for stage in ORDER:
        cells = [result[name]["stages_p50_ms"].get(stage) for name in names]
        if any(cell is not None for cell in cells):
            rows.append([stage, *("-" if c is None else f"{c:.2f}" for c in cells)])
    rows.append(["client TTFT p50", *(f"{result[n]['ttft_ms']['p50']:.2f}" for n in names)])
    rows.append(["added TTFT p50 (minus direct)", *(f"{result[n]['added_p50_ms']:+.2f}" for n in names)])
    direct = result["direct_ttft_ms"]["p50"]
    return table(["stage (ms after the request reached the app, p50)", *names], rows) + (
        f"\ndirect upstream TTFT p50: {direct:.2f} ms"
    )
