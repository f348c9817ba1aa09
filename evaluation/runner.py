"""Runs cases against one config version on a gateway and scores them.

With `repeat` > 1 each case runs that many times in fresh conversations: a non-deterministic
model passes a case some of the time, and the report gives each case's pass rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from evaluation.cases import Case
from evaluation.checks import CheckResult, TurnResult, check_turn
from evaluation.client import GatewayClient
from evaluation.errors import GatewayCallFailed
from evaluation.harness import Target
from evaluation.judge import Judge

log = logging.getLogger(__name__)


@dataclass
class CaseResult:
    case: Case
    turns: list[TurnResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    failure: str | None = None  # the case could not run at all
    attempt: int = 1

    @property
    def passed(self) -> bool:
        return self.failure is None and all(check.passed for check in self.checks)

    @property
    def score(self) -> float:
        if self.failure is not None or not self.checks:
            return 0.0
        return sum(check.passed for check in self.checks) / len(self.checks)

    @property
    def latency_ms(self) -> float:
        return sum(turn.latency_ms for turn in self.turns)

    @property
    def ttft_ms(self) -> float | None:
        values = [turn.ttft_ms for turn in self.turns if turn.ttft_ms is not None]
        return max(values) if values else None

    @property
    def tokens(self) -> int:
        return sum(turn.completion_tokens for turn in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "attempt": self.attempt,
            "passed": self.passed,
            "score": round(self.score, 4),
            "latency_ms": round(self.latency_ms, 1),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "tokens": self.tokens,
            "failure": self.failure,
            "checks": [check.to_dict() for check in self.checks],
            "turns": [turn.to_dict() for turn in self.turns],
        }


@dataclass(frozen=True)
class CaseSummary:
    """One case over its repeated runs."""

    case_id: str
    runs: list[CaseResult]

    @property
    def passes(self) -> int:
        return sum(r.passed for r in self.runs)

    @property
    def pass_rate(self) -> float:
        return self.passes / len(self.runs)

    @property
    def mean_score(self) -> float:
        return sum(r.score for r in self.runs) / len(self.runs)

    @property
    def mean_latency_ms(self) -> float:
        return sum(r.latency_ms for r in self.runs) / len(self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.case_id,
            "runs": len(self.runs),
            "passed": self.passes,
            "pass_rate": round(self.pass_rate, 4),
            "mean_score": round(self.mean_score, 4),
        }


@dataclass
class RunResult:
    config_version: str
    target: str
    model: str
    cases_file: str
    threshold: float
    results: list[CaseResult] = field(default_factory=list)
    repeat: int = 1
    judge_model: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def pass_rate(self) -> float:
        return sum(r.passed for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def mean_score(self) -> float:
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def gate_passed(self) -> bool:
        return self.pass_rate >= self.threshold

    def per_case(self) -> list[CaseSummary]:
        """Each case with all its runs, in the cases file's order."""
        grouped: dict[str, list[CaseResult]] = {}
        for result in self.results:
            grouped.setdefault(result.case.id, []).append(result)
        return [CaseSummary(case_id, runs) for case_id, runs in grouped.items()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_version": self.config_version,
            "target": self.target,
            "model": self.model,
            "cases_file": self.cases_file,
            "started_at": self.started_at,
            "repeat": self.repeat,
            "judge_model": self.judge_model,
            "summary": {
                "cases": len(self.per_case()),
                "runs": len(self.results),
                "passed": sum(r.passed for r in self.results),
                "pass_rate": round(self.pass_rate, 4),
                "mean_score": round(self.mean_score, 4),
                "threshold": self.threshold,
                "gate_passed": self.gate_passed,
            },
            "per_case": [summary.to_dict() for summary in self.per_case()],
            "cases": [r.to_dict() for r in self.results],
        }


async def run_case(
    client: GatewayClient, case: Case, config_version: str, *, judge: Judge | None = None, attempt: int = 1
) -> CaseResult:
    result = CaseResult(case, attempt=attempt)
    try:
        conversation_id = await client.create_conversation(config_version, title=f"eval {case.id}")
    except GatewayCallFailed as exc:
        result.failure = str(exc)
        return result
    for number, turn in enumerate(case.turns, start=1):
        try:
            outcome = await client.run_turn(
                conversation_id, turn.user, wait_for_actions=turn.wait_for_actions
            )
        except GatewayCallFailed as exc:
            result.failure = f"turn {number}: {exc}"
            return result
        result.turns.append(outcome)
        result.checks.extend(check_turn(number, turn.expect, outcome))
        if turn.expect.judge is not None:
            if judge is None:
                result.checks.append(CheckResult(number, "judge", False, "no judge model configured"))
            else:
                spec = turn.expect.judge
                result.checks.append(await judge.grade(number, spec.rubric, spec.threshold, result.turns))
        if outcome.config_version and outcome.config_version != config_version:
            result.checks.append(
                CheckResult(
                    number,
                    "config_version",
                    False,
                    f"answered by {outcome.config_version}, not {config_version}",
                )
            )
    return result


async def run_cases(
    target: Target,
    cases: list[Case],
    config_version: str,
    *,
    cases_file: str = "",
    threshold: float = 0.9,
    turn_timeout_s: float = 120.0,
    repeat: int = 1,
    judge: Judge | None = None,
) -> RunResult:
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    run = RunResult(
        config_version,
        target.base_url,
        target.model,
        cases_file,
        threshold,
        repeat=repeat,
        judge_model=judge.model_name if judge else None,
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
        client = GatewayClient(target.base_url, target.token, session, turn_timeout_s=turn_timeout_s)
        for case in cases:
            for attempt in range(1, repeat + 1):
                outcome = await run_case(client, case, config_version, judge=judge, attempt=attempt)
                log.info(
                    "case %s run %d: %s (score %.2f)",
                    case.id,
                    attempt,
                    "pass" if outcome.passed else "FAIL",
                    outcome.score,
                )
                run.results.append(outcome)
    return run
