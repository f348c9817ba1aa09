"""Comparing two versions side by side through one in-process gateway (needs the registry-backed
gateway config store: conversations pinned to any published version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_registry import version_of
from evaluation.cases import load_cases
from evaluation.harness import in_process_gateway
from evaluation.report import compare_table
from evaluation.runner import run_cases
from tests.fixtures.evaluation import DEFAULT_CASES


async def test_compare_shows_a_regression(
    redis_url: str, default_document: dict[str, Any], tmp_path: Path
) -> None:
    """A config whose output limit truncates answers regresses the greeting case in the comparison."""
    short = {
        **default_document,
        "label": "short",
        "limits": {**default_document["limits"], "max_output_tokens": 3},
    }
    cases = load_cases(DEFAULT_CASES)
    async with in_process_gateway([default_document, short], redis_url=redis_url) as target:
        run_a = await run_cases(target, cases, version_of(default_document))
        run_b = await run_cases(target, cases, version_of(short))
    greeting_b = run_b.results[0]
    assert not greeting_b.passed
    assert greeting_b.turns[0].finish_reason == "length"
    assert greeting_b.turns[0].config_version == version_of(short)
    table = compare_table(run_a, run_b)
    assert "REGRESSED" in next(line for line in table.splitlines() if line.startswith("greeting"))
    assert run_b.pass_rate < run_a.pass_rate
