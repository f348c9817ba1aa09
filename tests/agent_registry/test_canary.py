"""Canary analysis: the statistical tests, the decision, and the automatic abort on a real Redis."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_registry import AgentRegistry, RolloutRefused
from agent_registry.canary import (
    Policy,
    analyze,
    mann_whitney_worse,
    normal_sf,
    render,
    student_t_sf,
    two_proportion_worse,
    welch_worse,
)
from observability.online import OnlineMetrics
from tests.agent_registry.conftest import ROOT


def test_distributions_match_reference_values() -> None:
    """The normal and Student t tails agree with published tables."""
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert student_t_sf(2.228, 10) == pytest.approx(0.025, abs=1e-4)  # t table, df 10
    assert student_t_sf(-1.0, 5) == pytest.approx(0.8183913, abs=1e-6)
    assert student_t_sf(1.0, 1) == pytest.approx(0.25, abs=1e-9)  # Cauchy


def test_mann_whitney_on_buckets_equals_the_ranked_values() -> None:
    """From bucket counts, U and its tie-corrected variance are those of the expanded samples."""
    stable, candidate = [10, 20, 5, 0], [2, 10, 15, 5]
    xs = [b for b, n in enumerate(stable) for _ in range(n)]
    ys = [b for b, n in enumerate(candidate) for _ in range(n)]
    u = sum(1.0 if y > x else 0.5 if y == x else 0.0 for x in xs for y in ys)
    n1, n2 = len(xs), len(ys)
    ties = sum((a + b) ** 3 - (a + b) for a, b in zip(stable, candidate, strict=True))
    variance = n1 * n2 / 12 * ((n1 + n2 + 1) - ties / ((n1 + n2) * (n1 + n2 - 1)))
    expected = normal_sf((u - n1 * n2 / 2 - 0.5) / variance**0.5)
    assert mann_whitney_worse(stable, candidate) == pytest.approx(expected)
    assert mann_whitney_worse(candidate, stable) > 0.99
    assert mann_whitney_worse([5, 0], [5, 0]) == 1.0  # one tie group: no evidence


def test_proportion_and_welch_tests() -> None:
    """A clearly higher error share and a clearly lower mean are significant; equal ones are not."""
    assert two_proportion_worse(4, 200, 30, 200) < 0.001
    assert two_proportion_worse(10, 200, 10, 200) == pytest.approx(0.5)
    assert two_proportion_worse(0, 100, 0, 100) == 1.0
    # Welch by hand: t = 0.6 / sqrt(1/30 + 1.2/30) = 2.2156, df = 57.5 -> p = 0.0153.
    assert welch_worse((30, 4.0, 1.0), (30, 3.4, 1.2)) == pytest.approx(0.0153, abs=2e-4)
    assert welch_worse((30, 4.0, 0.0), (30, 4.0, 0.0)) == 1.0


async def _canary(aredis: aioredis.Redis, document: dict[str, Any]) -> tuple[AgentRegistry, str, str]:
    registry = AgentRegistry(aredis)
    stable = (await registry.publish({**document, "label": "stable"}))[0].version
    candidate = (await registry.publish({**document, "label": "cand"}))[0].version
    await registry.activate("default", stable)
    online = OnlineMetrics(aredis)
    # Before the rollout: an offline evaluation of the candidate that failed a lot. The baseline
    # snapshot keeps it out of the comparison.
    for _ in range(50):
        await online.record_stream(candidate, ttft_s=9.0, error_kind="upstream_error")
    baseline = {m.version: m.counters for m in await online.many([stable, candidate])}
    await registry.start_rollout("default", candidate, 10, baseline=baseline)
    return registry, stable, candidate


async def _serve(
    online: OnlineMetrics, version: str, n: int, *, error_share: float, ttft_s: float, seed: int
) -> None:
    rng = random.Random(seed)
    for i in range(n):
        failed = i < round(n * error_share)
        await online.record_stream(
            version,
            ttft_s=None if failed else ttft_s * rng.uniform(0.8, 1.2),
            tokens=20,
            error_kind="upstream_error" if failed else None,
        )


async def test_worse_error_rate_aborts_the_rollout(aredis: aioredis.Redis, document: dict[str, Any]) -> None:
    """15 % errors against 2 % over 150 answers each: abort, rollout gone, decision logged with its numbers."""
    registry, stable, candidate = await _canary(aredis, document)
    online = OnlineMetrics(aredis)
    await _serve(online, stable, 150, error_share=0.02, ttft_s=0.3, seed=1)
    await _serve(online, candidate, 150, error_share=0.15, ttft_s=0.3, seed=2)
    result = await analyze(registry, online, "default")
    assert result.decision == "abort" and result.aborted
    error_rate = next(m for m in result.metrics if m.metric == "error_rate")
    assert error_rate.status == "worse" and error_rate.samples == (150, 150)
    assert error_rate.candidate == pytest.approx(0.15, abs=0.01)  # the earlier evaluation is not counted
    assert error_rate.p_value is not None and error_rate.p_value < 0.001
    assert await registry.rollout("default") is None
    entry = (await registry.activation_log("default"))[0]
    assert entry["action"] == "abort" and entry["actor"] == "canary-analysis"
    assert "error_rate (0.020 -> 0.147" in entry["reason"]
    [recorded] = await registry.analyses("default")
    assert recorded["decision"] == "abort" and recorded["aborted"]
    assert "rollout aborted" in render(result)


async def test_slower_first_tokens_abort(aredis: aioredis.Redis, document: dict[str, Any]) -> None:
    """The same error rate but first tokens three times slower: TTFT p95 is worse (Mann-Whitney)."""
    registry, stable, candidate = await _canary(aredis, document)
    online = OnlineMetrics(aredis)
    await _serve(online, stable, 120, error_share=0.0, ttft_s=0.2, seed=3)
    await _serve(online, candidate, 120, error_share=0.0, ttft_s=0.6, seed=4)
    result = await analyze(registry, online, "default", apply=False)
    verdicts = {m.metric: m.status for m in result.metrics}
    assert verdicts["ttft_p95_ms"] == "worse" and verdicts["error_rate"] == "ok"
    assert result.decision == "abort" and not result.aborted and result.dry_run
    assert await registry.rollout("default") is not None
    [recorded] = await registry.analyses("default")
    assert recorded["dry_run"] and not recorded["aborted"]
    assert render(result).endswith("; dry run, nothing aborted")


async def test_lower_feedback_aborts(aredis: aioredis.Redis, document: dict[str, Any]) -> None:
    """Ratings around 4.4 against 3.2 (Welch's t) abort even when the streams look alike."""
    registry, stable, candidate = await _canary(aredis, document)
    online = OnlineMetrics(aredis)
    await _serve(online, stable, 100, error_share=0.0, ttft_s=0.2, seed=5)
    await _serve(online, candidate, 100, error_share=0.0, ttft_s=0.2, seed=6)
    for version, ratings in ((stable, [5, 4, 4, 5, 4]), (candidate, [3, 4, 2, 3, 4])):
        for i in range(30):
            await online.record_feedback(
                version, conversation_id=f"c{i}", message_id=f"{version}-{i}", rating=ratings[i % 5]
            )
    result = await analyze(registry, online, "default")
    feedback = next(m for m in result.metrics if m.metric == "feedback_mean")
    assert feedback.status == "worse" and feedback.test == "Welch's t-test"
    assert result.decision == "abort" and result.aborted


async def test_similar_versions_are_healthy_and_small_samples_wait(
    aredis: aioredis.Redis, document: dict[str, Any]
) -> None:
    """Below the minimum the decision is wait; with enough alike samples it is healthy, nothing aborted."""
    registry, stable, candidate = await _canary(aredis, document)
    online = OnlineMetrics(aredis)
    await _serve(online, stable, 200, error_share=0.03, ttft_s=0.3, seed=7)
    await _serve(online, candidate, 40, error_share=0.05, ttft_s=0.3, seed=8)
    waiting = await analyze(registry, online, "default")
    assert waiting.decision == "wait" and "error_rate (40/100)" in waiting.reason
    await _serve(online, candidate, 160, error_share=0.03, ttft_s=0.3, seed=9)
    healthy = await analyze(registry, online, "default")
    assert healthy.decision == "healthy"
    assert {m.metric: m.status for m in healthy.metrics}["action_success_rate"] == "too_few"
    assert await registry.rollout("default") is not None
    with pytest.raises(ValueError, match="alpha"):
        Policy(alpha=1.5)


async def test_analysis_without_rollout_is_refused(aredis: aioredis.Redis) -> None:
    """Analyzing an agent with no rollout says so instead of comparing nothing."""
    with pytest.raises(RolloutRefused, match="no rollout"):
        await analyze(AgentRegistry(aredis), OnlineMetrics(aredis), "default")


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_registry", "--redis-url", redis_url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_rollout_status_analyze_abort(
    redis_url: str, aredis: aioredis.Redis, document: dict[str, Any]
) -> None:
    """rollout, status, analyze (which aborts) and the refusals, as an operator runs them."""
    registry = AgentRegistry(aredis)
    stable = (await registry.publish({**document, "label": "stable"}))[0].version
    candidate = (await registry.publish({**document, "label": "cand"}))[0].version
    await registry.activate("default", stable)
    started = _cli(redis_url, "rollout", "default", candidate, "--percent", "10")
    assert started.returncode == 0, started.stderr
    assert f"rollout of {candidate} at 10% of new conversations (stable {stable}" in started.stdout
    online = OnlineMetrics(aredis)
    await _serve(online, stable, 120, error_share=0.0, ttft_s=0.2, seed=10)
    await _serve(online, candidate, 120, error_share=0.2, ttft_s=0.2, seed=11)
    dry = _cli(redis_url, "analyze", "default", "--dry-run")
    assert dry.returncode == 5, dry.stderr  # abort, even when nothing was stopped
    assert "decision: ABORT" in dry.stdout and "dry run, nothing aborted" in dry.stdout
    status = _cli(redis_url, "status", "default")
    assert f"rollout of {candidate} at 10%" in status.stdout
    [dry_line] = [line for line in status.stdout.splitlines() if "analysis " in line]
    assert dry_line.endswith("; dry run, nothing aborted"), status.stdout  # not read as an abort
    analysis = _cli(redis_url, "analyze", "default")
    assert analysis.returncode == 5, analysis.stderr
    assert "two-proportion z-test" in analysis.stdout and "decision: ABORT" in analysis.stdout
    assert "; rollout aborted" in analysis.stdout
    status = _cli(redis_url, "status", "default")
    assert "no rollout under way" in status.stdout
    applied = [line for line in status.stdout.splitlines() if "analysis " in line]
    assert applied[0].endswith("; rollout aborted") and applied[1].endswith("dry run, nothing aborted")
    assert f"abort    {candidate}" in status.stdout and "canary-analysis" in status.stdout
    data = json.loads(_cli(redis_url, "status", "default", "--json").stdout)
    assert data["rollout"] is None and data["analyses"][0]["decision"] == "abort"
    assert [a["dry_run"] for a in data["analyses"]] == [False, True]
    refused = _cli(redis_url, "promote", "default")
    assert refused.returncode == 1 and "no rollout under way to promote" in refused.stderr
    again = _cli(redis_url, "rollout", "default", candidate, "--percent", "5")
    assert again.returncode == 0
    promoted = _cli(redis_url, "promote", "default")
    assert f"active version is now {candidate} (was {stable})" in promoted.stdout


async def test_cli_analyze_exit_status_follows_the_decision(
    redis_url: str, aredis: aioredis.Redis, document: dict[str, Any]
) -> None:
    """A scheduled job gates on the status: 4 while samples are too few, 0 once healthy (the
    rollout left running), 1 when there is no rollout; abort's 5 is in the test above."""
    registry = AgentRegistry(aredis)
    stable = (await registry.publish({**document, "label": "stable"}))[0].version
    candidate = (await registry.publish({**document, "label": "cand"}))[0].version
    await registry.activate("default", stable)
    assert _cli(redis_url, "rollout", "default", candidate, "--percent", "10").returncode == 0
    online = OnlineMetrics(aredis)
    await _serve(online, stable, 30, error_share=0.0, ttft_s=0.2, seed=20)
    await _serve(online, candidate, 30, error_share=0.0, ttft_s=0.2, seed=21)
    waiting = _cli(redis_url, "analyze", "default", "--json")
    assert waiting.returncode == 4, waiting.stderr
    assert json.loads(waiting.stdout)["decision"] == "wait"
    healthy = _cli(redis_url, "analyze", "default", "--min-streams", "20")
    assert healthy.returncode == 0, healthy.stderr
    assert "decision: HEALTHY" in healthy.stdout
    assert await registry.rollout("default") is not None
    await registry.abort_rollout("default", reason="test")
    none = _cli(redis_url, "analyze", "default")
    assert none.returncode == 1 and "no rollout" in none.stderr
