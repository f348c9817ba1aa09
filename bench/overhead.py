"""Gateway overhead: the same streamed completions sent directly to the scripted upstream, through
the gateway and (when installed) through LiteLLM's proxy, alternating round by round so that any
drift of the machine affects every target alike."""

from __future__ import annotations

import logging
from typing import Any

from bench.clients import Sample, Target, wave
from bench.stats import fmt, ratio, summary, table

log = logging.getLogger(__name__)


async def measure(targets: list[Target], levels: dict[int, int], prompt: str = "bench") -> dict[str, Any]:
    """levels: concurrency -> rounds per target. Returns per level, per target, TTFT and total summaries."""
    results: dict[str, Any] = {}
    for concurrency, rounds in levels.items():
        samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
        for warm in targets:  # one unmeasured wave: connections, caches, JIT-free but lazy imports
            await wave(warm, min(concurrency, 8), prompt, -1)
        for round_ in range(rounds):
            order = targets if round_ % 2 == 0 else list(reversed(targets))
            for target in order:
                samples[target.name] += await wave(target, concurrency, prompt, round_)
        level: dict[str, Any] = {}
        for name, got in samples.items():
            ok = [s for s in got if s.error is None and s.ttft_ms is not None]
            errors = sorted({s.error for s in got if s.error})
            level[name] = {
                "ttft_ms": summary([s.ttft_ms for s in ok]),  # type: ignore[misc]
                "total_ms": summary([s.total_ms for s in ok]),  # type: ignore[misc]
                "streams": len(got),
                "errors": len(got) - len(ok),
                "error_kinds": errors[:3],
            }
            log.info(
                "concurrency %d %s: %d streams, %d errors", concurrency, name, len(got), len(got) - len(ok)
            )
        results[str(concurrency)] = level
    return results


def render(results: dict[str, Any], baseline: str = "direct") -> str:
    rows: list[list[Any]] = []
    for concurrency, level in results.items():
        base = level[baseline]
        for name, got in level.items():
            ttft, total = got["ttft_ms"], got["total_ms"]
            rows.append(
                [
                    concurrency,
                    name,
                    got["streams"],
                    got["errors"],
                    fmt(ttft["p50"]),
                    fmt(ttft["p95"]),
                    fmt(ttft["p99"]),
                    fmt(total["p50"]),
                    fmt(total["p95"]),
                    fmt(total["p99"]),
                    fmt(ratio(ttft["p50"], base["ttft_ms"]["p50"]), 2),
                    fmt(ratio(total["p50"], base["total_ms"]["p50"]), 2),
                ]
            )
    header = [
        "conc",
        "target",
        "streams",
        "err",
        "ttft p50",
        "ttft p95",
        "ttft p99",
        "total p50",
        "total p95",
        "total p99",
        "ttft x",
        "total x",
    ]
    return table(header, rows)
