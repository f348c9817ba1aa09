"""Tables for the terminal and the JSON report file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.runner import CaseResult, CaseSummary, RunResult


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


def _judged(result: CaseResult) -> list[str]:
    """The judge's reasoning for each judged check, passed or not."""
    return [
        f"    t{c.turn} {c.check} {'pass' if c.passed else 'FAIL'}: {c.detail}"
        for c in result.checks
        if c.check.startswith("judge")
    ]


def run_table(run: RunResult) -> str:
    if run.repeat > 1:
        return _repeated_table(run)
    width = max([len("case"), *(len(r.case.id) for r in run.results)])
    judge = f", judge: {run.judge_model}" if run.judge_model else ""
    lines = [
        f"config {run.config_version} on {run.target} (model: {run.model}{judge})",
        f"{'case':<{width}}  result  score  latency_ms  ttft_ms  tokens  failed checks",
    ]
    for r in run.results:
        lines.append(
            f"{r.case.id:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.score:>5.2f}  "
            f"{_ms(r.latency_ms):>10}  {_ms(r.ttft_ms):>7}  {r.tokens:>6}  {_failed(r)}".rstrip()
        )
        lines += _judged(r)
    passed = sum(r.passed for r in run.results)
    verdict = "PASSED" if run.gate_passed else "FAILED"
    lines.append(
        f"{passed}/{len(run.results)} cases passed ({run.pass_rate:.0%}), mean score {run.mean_score:.2f}; "
        f"threshold {run.threshold:.0%}: {verdict}"
    )
    return "\n".join(lines)


def _repeated_table(run: RunResult) -> str:
    summaries = run.per_case()
    width = max([len("case"), *(len(s.case_id) for s in summaries)])
    judge = f", judge: {run.judge_model}" if run.judge_model else ""
    lines = [
        f"config {run.config_version} on {run.target} (model: {run.model}{judge}), "
        f"{run.repeat} runs per case",
        f"{'case':<{width}}  passed  pass_rate  mean_score  mean_ms  failed checks (runs that failed)",
    ]
    for summary in summaries:
        failures = sorted({_failed(r) for r in summary.runs if not r.passed})
        lines.append(
            f"{summary.case_id:<{width}}  {summary.passes:>2}/{len(summary.runs):<3}  "
            f"{summary.pass_rate:>9.0%}  {summary.mean_score:>10.2f}  {_ms(summary.mean_latency_ms):>7}  "
            f"{' | '.join(failures)}".rstrip()
        )
    verdict = "PASSED" if run.gate_passed else "FAILED"
    lines.append(
        f"{sum(r.passed for r in run.results)}/{len(run.results)} runs passed ({run.pass_rate:.0%}) "
        f"over {len(summaries)} cases, mean score {run.mean_score:.2f}; "
        f"threshold {run.threshold:.0%}: {verdict}"
    )
    return "\n".join(lines)


def _outcome(summary: CaseSummary) -> str:
    if len(summary.runs) == 1:
        return "pass" if summary.passes else "FAIL"
    return f"{summary.passes}/{len(summary.runs)}"


def compare_table(a: RunResult, b: RunResult) -> str:
    by_id = {s.case_id: s for s in b.per_case()}
    summaries = a.per_case()
    width = max([len("case"), *(len(s.case_id) for s in summaries)])
    lines = [
        f"A = {a.config_version}    B = {b.config_version}",
        f"{'case':<{width}}  {'A':<4} {'score':>5} {'ms':>6}  {'B':<4} {'score':>5} {'ms':>6}  change",
    ]
    for sa in summaries:
        sb = by_id.get(sa.case_id)
        if sb is None:
            continue
        if sa.pass_rate > sb.pass_rate:
            change = "REGRESSED"
        elif sb.pass_rate > sa.pass_rate:
            change = "fixed" if sb.pass_rate == 1.0 else "improved"
        elif sb.mean_score != sa.mean_score:
            change = f"score {sb.mean_score - sa.mean_score:+.2f}"
        else:
            change = ""
        lines.append(
            f"{sa.case_id:<{width}}  {_outcome(sa):<4} {sa.mean_score:>5.2f} "
            f"{_ms(sa.mean_latency_ms):>6}  {_outcome(sb):<4} {sb.mean_score:>5.2f} "
            f"{_ms(sb.mean_latency_ms):>6}  {change}".rstrip()
        )
    lines.append(f"{'pass rate':<{width}}  {a.pass_rate:>10.0%} {'':>6}  {b.pass_rate:>10.0%}")
    lines.append(f"{'mean score':<{width}}  {a.mean_score:>10.2f} {'':>6}  {b.mean_score:>10.2f}")
    return "\n".join(lines)


def write_report(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
