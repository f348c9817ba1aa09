"""Judged checks and repeated runs: a model grades answers through the LLM port; pass rates per case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_registry import version_of
from evaluation.cases import Case, load_cases
from evaluation.checks import CheckResult, TurnResult
from evaluation.harness import in_process_gateway
from evaluation.judge import JUDGE_MARKER, build_prompt, openai_judge, parse_verdict
from evaluation.report import compare_table, run_table
from evaluation.runner import CaseResult, RunResult, run_cases
from tests.fixtures.evaluation import DEFAULT_CONFIG, ROOT

JUDGED_CASES = ROOT / "evaluation" / "cases" / "judged.yaml"


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 0.8, "reasoning": "good"}', 0.8),
        ('Sure.\n```json\n{"score": 1, "reasoning": "all there"}\n```', 1.0),
        ('{"score": 0, "reasoning": "missed"}', 0.0),
    ],
)
def test_verdicts_are_read_from_the_reply(reply: str, score: float) -> None:
    """The JSON object in the judge's reply gives the score, with prose or fences around it."""
    verdict = parse_verdict(reply)
    assert verdict.score == score and verdict.reasoning


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("I think it is fine", "did not reply with a JSON object"),
        ('{"score": 7, "reasoning": "out of ten"}', "not a number from 0 to 1"),
        ('{"score": true}', "not a number from 0 to 1"),
        ('{"score": "high"}', "not a number from 0 to 1"),
        ("[0.5]", "did not reply with a JSON object"),
    ],
)
def test_unusable_verdicts_fail_the_check(reply: str, problem: str) -> None:
    """A reply without a usable 0-1 score has no score and says why."""
    verdict = parse_verdict(reply)
    assert verdict.score is None and problem in verdict.reasoning


def test_prompt_puts_the_graded_answer_last() -> None:
    """The prompt starts with the marker, holds the rubric and the earlier turns, and ends with the answer."""
    turns = [
        TurnResult(user="first", text="one"),
        TurnResult(user="second", tool_calls=[{"name": "get_ticket", "arguments": {"ticket_id": "T-1"}}]),
    ]
    prompt = build_prompt("Be brief.", turns)
    assert prompt.startswith(JUDGE_MARKER) and "Rubric:\nBe brief." in prompt
    assert prompt.index("User: first") < prompt.index("Answer to grade:")
    assert prompt.endswith('[tool call get_ticket({"ticket_id": "T-1"})]')


async def test_judged_cases_are_graded_with_their_reasoning(
    redis_url: str, default_document: dict[str, Any]
) -> None:
    """Through the real gateway and the scripted upstream as judge: one judged check passes, one fails."""
    version = version_of(default_document)
    async with in_process_gateway([default_document], redis_url=redis_url) as target:
        assert target.llm_base_url and target.llm_api_key
        judge = openai_judge(target.llm_base_url, target.llm_api_key, "judge")
        try:
            run = await run_cases(target, load_cases(JUDGED_CASES), version, judge=judge)
        finally:
            await judge.close()
    greeting, ticket = run.results
    [judged] = [c for c in greeting.checks if c.check.startswith("judge")]
    assert judged.passed and judged.check == "judge>=0.7"
    assert judged.detail.startswith("score 0.90: The answer speaks to the user's request")
    assert ticket.passed  # "I'll open a ticket for that." is in the answer
    table = run_table(run)
    assert "t1 judge>=0.7 pass: score 0.90" in table and "judge: judge" in table


async def test_a_failing_grade_and_an_unreachable_judge_fail_the_check(
    redis_url: str, default_document: dict[str, Any], tmp_path: Path
) -> None:
    """A low score fails with the judge's reasoning; a judge that cannot be reached fails, not crashes."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- id: status\n"
        "  turns: ['What is the status of ticket T-1?']\n"
        "  expect: {judge: {rubric: Explains the ticket's status in words., threshold: 0.5}}\n"
    )
    version = version_of(default_document)
    async with in_process_gateway([default_document], redis_url=redis_url) as target:
        assert target.llm_base_url
        judge = openai_judge(target.llm_base_url, "k", "judge")
        down = openai_judge("http://127.0.0.1:9/v1", "k", "judge", timeout_s=5)
        try:
            graded = await run_cases(target, load_cases(cases), version, judge=judge)
            unreachable = await run_cases(target, load_cases(cases), version, judge=down)
            unjudged = await run_cases(target, load_cases(cases), version)
        finally:
            await judge.close()
            await down.close()
    [check] = graded.results[0].checks
    assert not check.passed and check.detail.startswith("score 0.20: The answer neither addresses")
    [check] = unreachable.results[0].checks
    assert not check.passed and "the judge model failed" in check.detail
    [check] = unjudged.results[0].checks
    assert not check.passed and check.detail == "no judge model configured"


async def test_repeat_runs_each_case_in_fresh_conversations(
    redis_url: str, default_document: dict[str, Any], tmp_path: Path
) -> None:
    """--repeat 3 runs every case three times and reports each case's pass rate."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- {id: hello, turns: [hi], expect: {contains: ['You said: hi']}}\n"
        "- {id: never, turns: [hi], expect: {contains: [zebra]}}\n"
    )
    async with in_process_gateway([default_document], redis_url=redis_url) as target:
        run = await run_cases(target, load_cases(cases), version_of(default_document), repeat=3)
    assert len(run.results) == 6 and [r.attempt for r in run.results] == [1, 2, 3, 1, 2, 3]
    assert len({turn.message_id for r in run.results for turn in r.turns}) == 6
    assert [(s.case_id, s.passes, len(s.runs)) for s in run.per_case()] == [("hello", 3, 3), ("never", 0, 3)]
    data = run.to_dict()
    assert data["summary"] == {**data["summary"], "cases": 2, "runs": 6, "passed": 3, "pass_rate": 0.5}
    assert data["per_case"][0] == {"id": "hello", "runs": 3, "passed": 3, "pass_rate": 1.0, "mean_score": 1.0}
    table = run_table(run)
    assert "3 runs per case" in table and "3/6 runs passed (50%) over 2 cases" in table
    with pytest.raises(ValueError, match="repeat"):
        await run_cases(target, load_cases(cases), "v", repeat=0)


def _result(case: Case, attempt: int, passed: bool) -> CaseResult:
    return CaseResult(
        case, checks=[CheckResult(1, "contains 'x'", passed, "" if passed else "reply: y")], attempt=attempt
    )


def test_pass_rates_of_a_flaky_case_are_shown_and_compared() -> None:
    """A case passing 2 of 3 runs shows 2/3 (67 %); against 3/3 the comparison calls it a regression."""
    case = Case.model_validate({"id": "flaky", "turns": ["hi"], "expect": {"contains": ["x"]}})
    flaky = RunResult("a@1", "t", "m", "f", 0.9, [_result(case, n, n != 2) for n in (1, 2, 3)], repeat=3)
    steady = RunResult("b@1", "t", "m", "f", 0.9, [_result(case, n, True) for n in (1, 2, 3)], repeat=3)
    line = next(row for row in run_table(flaky).splitlines() if row.startswith("flaky"))
    assert " 2/3 " in line and "67%" in line and "reply: y" in line
    assert not flaky.gate_passed and steady.gate_passed
    compared = next(row for row in compare_table(steady, flaky).splitlines() if row.startswith("flaky"))
    assert "3/3" in compared and "2/3" in compared and compared.endswith("REGRESSED")


def test_cli_run_with_judge_and_repeat(tmp_path: Path) -> None:
    """The CLI grades the shipped judged cases in-process, twice each, and writes the reasoning to the report."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--config",
            str(DEFAULT_CONFIG),
            "--cases",
            str(JUDGED_CASES),
            "--repeat",
            "2",
            "--report",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "4/4 runs passed (100%) over 2 cases" in result.stdout
    data = json.loads(report.read_text())
    assert data["repeat"] == 2 and data["judge_model"]
    judged = [c for case in data["cases"] for c in case["checks"] if c["check"].startswith("judge")]
    assert len(judged) == 4 and all(c["detail"].startswith("score 0.90") for c in judged)


def test_cli_refuses_judged_cases_without_a_judge_for_a_remote_gateway() -> None:
    """Against a running gateway the judge's endpoint must be named; bad --repeat values exit 2."""
    env = {**os.environ, "EVAL_TOKEN": "t", "REDIS_URL": "redis://127.0.0.1:9/0"}
    base = [sys.executable, "-m", "evaluation", "run", "--config", str(DEFAULT_CONFIG), "--cases"]
    result = subprocess.run(
        [*base, str(JUDGED_CASES), "--gateway-url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2 and "--judge-base-url" in result.stderr
    result = subprocess.run(
        [*base, str(JUDGED_CASES), "--repeat", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--repeat" in result.stderr
