"""Tables for the terminal and the JSON report file."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.runner import CaseResult, RunResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _failed(result: CaseResult) -> str:
    if result.failure:
        return result.failure
    failed = [
        f"t{c.turn} {c.check}: {c.detail}" if c.detail else f"t{c.turn} {c.check}"
        for c in result.checks
        if not c.passed
    ]
    return "; ".join(failed)


def run_table(run: RunResult) -> str:
    width = max([len("case"), *(len(r.case.id) for r in run.results)])
    lines = [
        f"config {run.config_version} on {run.target} (model: {run.model})",
        f"{'case':<{width}}  result  score  latency_ms  ttft_ms  tokens  failed checks",
    ]
    for r in run.results:
        lines.append(
            f"{r.case.id:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.score:>5.2f}  "
            f"{_ms(r.latency_ms):>10}  {_ms(r.ttft_ms):>7}  {r.tokens:>6}  {_failed(r)}".rstrip()
        )
    passed = sum(r.passed for r in run.results)
    verdict = "PASSED" if run.gate_passed else "FAILED"
    lines.append(
        f"{passed}/{len(run.results)} cases passed ({run.pass_rate:.0%}), mean score {run.mean_score:.2f}; "
        f"threshold {run.threshold:.0%}: {verdict}"
    )
    return "\n".join(lines)


def compare_table(a: RunResult, b: RunResult) -> str:
    by_id = {r.case.id: r for r in b.results}
    width = max([len("case"), *(len(r.case.id) for r in a.results)])
    lines = [
        f"A = {a.config_version}    B = {b.config_version}",
        f"{'case':<{width}}  {'A':<4} {'score':>5} {'ms':>6}  {'B':<4} {'score':>5} {'ms':>6}  change",
    ]
    for ra in a.results:
        rb = by_id.get(ra.case.id)
        if rb is None:
            continue
        if ra.passed and not rb.passed:
            change = "REGRESSED"
        elif rb.passed and not ra.passed:
            change = "fixed"
        elif rb.score != ra.score:
            change = f"score {rb.score - ra.score:+.2f}"
        else:
            change = ""
        lines.append(
            f"{ra.case.id:<{width}}  {'pass' if ra.passed else 'FAIL':<4} {ra.score:>5.2f} "
            f"{_ms(ra.latency_ms):>6}  {'pass' if rb.passed else 'FAIL':<4} {rb.score:>5.2f} "
            f"{_ms(rb.latency_ms):>6}  {change}".rstrip()
        )
    lines.append(f"{'pass rate':<{width}}  {a.pass_rate:>10.0%} {'':>6}  {b.pass_rate:>10.0%}")
    lines.append(f"{'mean score':<{width}}  {a.mean_score:>10.2f} {'':>6}  {b.mean_score:>10.2f}")
    return "\n".join(lines)


def write_report(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
