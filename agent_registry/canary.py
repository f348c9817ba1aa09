"""Canary analysis: is the candidate worse than stable, beyond chance and beyond a margin?

Each metric is compared on what the two versions served since the rollout started (their online
counters minus the snapshot taken at its start), with a one-sided test of "the candidate is worse":

- error rate and action success rate: two-proportion z-test (pooled variance) on the share of bad
  outcomes (stream errors; actions not succeeded);
- time to first token: Mann-Whitney U over the histogram buckets (a bucket is a tie group: mid-ranks
  and the tie-corrected variance), with the p95 bucket bound as the effect;
- feedback mean: Welch's t-test, the means and variances exact from the per-rating counts, degrees
  of freedom by Welch-Satterthwaite.

A metric is `worse` only when p < alpha AND the effect passes its margin (a significant but tiny
change is no reason to roll back); `too_few` while either side has fewer than its minimum samples.
The decision: `abort` when any metric is worse; `healthy` when error rate and TTFT (every answer
feeds them) have enough samples and nothing is worse; `wait` otherwise.

Only conversations whose version the gateway chose are samples: those pinned by the client (an
operator, an evaluation run against the live gateway) are counted apart (observability/online.py's
`pinned_` counters), and the analysis shows how many answers it left out that way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from agent_registry.errors import RegistryError, RolloutRefused
from agent_registry.registry import AgentRegistry, Rollout
from observability.online import TTFT_BUCKETS_MS, OnlineMetrics, VersionMetrics

log = logging.getLogger(__name__)

REQUIRED = ("error_rate", "ttft_p95_ms")


@dataclass(frozen=True)
class Policy:
    """Thresholds of the analysis; the defaults suit a few hundred conversations per hour."""

    alpha: float = 0.05
    min_streams: int = 100
    min_actions: int = 50
    min_feedback: int = 20
    #: Absolute rise of the error rate that counts (0.02 = two percentage points).
    error_rate_margin: float = 0.02
    #: Absolute fall of the action success rate that counts.
    action_success_margin: float = 0.05
    #: Relative rise of the TTFT p95 that counts (0.2 = 20 %).
    ttft_p95_margin: float = 0.2
    #: Absolute fall of the mean rating (1-5) that counts.
    feedback_margin: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, not {self.alpha}")
        for name in ("min_streams", "min_actions", "min_feedback"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2")


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    test: str
    status: str  # ok | worse | too_few
    stable: float | None
    candidate: float | None
    effect: float | None
    p_value: float | None
    samples: tuple[int, int]  # (stable, candidate)
    minimum: int


@dataclass
class Analysis:
    agent: str
    stable: str
    candidate: str
    percent: float
    decision: str  # abort | healthy | wait
    reason: str
    policy: Policy
    metrics: list[MetricVerdict] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    aborted: bool = False
    dry_run: bool = False
    #: Answers in pinned conversations over the window (stable, candidate): not samples.
    pinned_streams: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "stable": self.stable,
            "candidate": self.candidate,
            "percent": self.percent,
            "decision": self.decision,
            "reason": self.reason,
            "aborted": self.aborted,
            "dry_run": self.dry_run,
            "at": self.at,
            "pinned_streams": list(self.pinned_streams),
            "policy": asdict(self.policy),
            "metrics": [{**asdict(m), "samples": list(m.samples)} for m in self.metrics],
        }


# --- distributions -------------------------------------------------------------------------------


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-14
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


# --- tests ---------------------------------------------------------------------------------------


def two_proportion_worse(bad_stable: float, n_stable: int, bad_candidate: float, n_candidate: int) -> float:
    """One-sided p-value of "the candidate's share of bad outcomes is higher" (pooled z-test)."""
    pooled = (bad_stable + bad_candidate) / (n_stable + n_candidate)
    variance = pooled * (1.0 - pooled) * (1.0 / n_stable + 1.0 / n_candidate)
    difference = bad_candidate / n_candidate - bad_stable / n_stable
    if variance <= 0.0:
        return 1.0 if difference <= 0 else 0.0
    return normal_sf(difference / math.sqrt(variance))


def mann_whitney_worse(stable: Sequence[float], candidate: Sequence[float]) -> float:
    """One-sided p-value of "candidate values are larger" from counts per ordered bucket.

    Values within one bucket are ties: each gets the bucket's mid-rank, and the variance of U is
    corrected for the tie groups. Normal approximation with a continuity correction.
    """
    n_s, n_c = sum(stable), sum(candidate)
    total = n_s + n_c
    if n_s == 0 or n_c == 0:
        return 1.0
    rank_sum, below, ties = 0.0, 0.0, 0.0
    for a, b in zip(stable, candidate, strict=True):
        group = a + b
        rank_sum += b * (below + (group + 1.0) / 2.0)
        below += group
        ties += group**3 - group
    u = rank_sum - n_c * (n_c + 1.0) / 2.0
    variance = n_s * n_c / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)))
    if variance <= 0.0:
        return 1.0
    return normal_sf((u - n_s * n_c / 2.0 - 0.5) / math.sqrt(variance))


def rating_moments(counts: dict[int, float]) -> tuple[float, float, float]:
    """(n, mean, sample variance) of ratings given as {rating: count}."""
    n = sum(counts.values())
    if n == 0:
        return 0.0, math.nan, math.nan
    mean = sum(r * c for r, c in counts.items()) / n
    variance = sum(c * (r - mean) ** 2 for r, c in counts.items()) / (n - 1) if n > 1 else 0.0
    return n, mean, variance


def welch_worse(stable: tuple[float, float, float], candidate: tuple[float, float, float]) -> float:
    """One-sided p-value of "the candidate's mean is lower" (Welch's t-test) from (n, mean, var)."""
    (n_s, m_s, v_s), (n_c, m_c, v_c) = stable, candidate
    se2_s, se2_c = v_s / n_s, v_c / n_c
    se = math.sqrt(se2_s + se2_c)
    if se == 0.0:
        return 1.0 if m_c >= m_s else 0.0
    df = (se2_s + se2_c) ** 2 / (
        (se2_s**2 / (n_s - 1) if n_s > 1 else 0.0) + (se2_c**2 / (n_c - 1) if n_c > 1 else 0.0)
    )
    return student_t_sf((m_s - m_c) / se, df)


# --- analysis ------------------------------------------------------------------------------------


def since(current: VersionMetrics, baseline: dict[str, float]) -> VersionMetrics:
    """The counters added since the baseline snapshot."""
    return VersionMetrics(
        current.version, {name: value - baseline.get(name, 0.0) for name, value in current.counters.items()}
    )


def _ttft_buckets(m: VersionMetrics) -> list[float]:
    return [m.counters.get(f"ttft_le_{bound}", 0.0) for bound in TTFT_BUCKETS_MS] + [
        m.counters.get("ttft_le_inf", 0.0)
    ]


def _ratings(m: VersionMetrics) -> dict[int, float]:
    return {r: m.counters.get(f"feedback_rating_{r}", 0.0) for r in range(1, 6)}


def _relative(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    if math.isinf(before) or before == 0:
        return 0.0 if after == before else math.inf
    return after / before - 1.0


def compare(stable: VersionMetrics, candidate: VersionMetrics, policy: Policy) -> list[MetricVerdict]:
    verdicts: list[MetricVerdict] = []

    def verdict(
        metric: str,
        test: str,
        samples: tuple[int, int],
        minimum: int,
        values: tuple[float | None, float | None],
        effect: float | None,
        p_value: float | None,
        beyond_margin: bool,
    ) -> None:
        if min(samples) < minimum:
            status, effect, p_value = "too_few", None, None
        else:
            assert p_value is not None
            status = "worse" if p_value < policy.alpha and beyond_margin else "ok"
        verdicts.append(MetricVerdict(metric, test, status, *values, effect, p_value, samples, minimum))

    n = (stable.streams, candidate.streams)
    error_p = effect = None
    if min(n) > 0:
        error_p = two_proportion_worse(
            stable.counters.get("stream_errors", 0.0),
            n[0],
            candidate.counters.get("stream_errors", 0.0),
            n[1],
        )
    er = (stable.error_rate, candidate.error_rate)
    effect = None if None in er else (er[1] or 0.0) - (er[0] or 0.0)
    verdict(
        "error_rate",
        "two-proportion z-test",
        n,
        policy.min_streams,
        er,
        effect,
        error_p,
        effect is not None and effect > policy.error_rate_margin,
    )

    n = (stable.ttft_count, candidate.ttft_count)
    p95 = (stable.ttft_quantile_ms(0.95), candidate.ttft_quantile_ms(0.95))
    rel = _relative(*p95)
    verdict(
        "ttft_p95_ms",
        "Mann-Whitney U on TTFT buckets",
        n,
        policy.min_streams,
        p95,
        rel,
        mann_whitney_worse(_ttft_buckets(stable), _ttft_buckets(candidate)) if min(n) > 0 else None,
        rel is not None and rel > policy.ttft_p95_margin,
    )

    n = (stable.actions_total, candidate.actions_total)
    sr = (stable.action_success_rate, candidate.action_success_rate)
    effect = None if None in sr else (sr[1] or 0.0) - (sr[0] or 0.0)
    verdict(
        "action_success_rate",
        "two-proportion z-test",
        n,
        policy.min_actions,
        sr,
        effect,
        two_proportion_worse(
            n[0] - stable.counters.get("action_succeeded", 0.0),
            n[0],
            n[1] - candidate.counters.get("action_succeeded", 0.0),
            n[1],
        )
        if min(n) > 0
        else None,
        effect is not None and effect < -policy.action_success_margin,
    )

    moments = (rating_moments(_ratings(stable)), rating_moments(_ratings(candidate)))
    n = (int(moments[0][0]), int(moments[1][0]))
    fb = (stable.feedback_mean, candidate.feedback_mean)
    effect = None if None in fb else (fb[1] or 0.0) - (fb[0] or 0.0)
    verdict(
        "feedback_mean",
        "Welch's t-test",
        n,
        policy.min_feedback,
        fb,
        effect,
        welch_worse(*moments) if min(n) > 1 else None,
        effect is not None and effect < -policy.feedback_margin,
    )
    return verdicts


def decide(verdicts: list[MetricVerdict]) -> tuple[str, str]:
    worse = [v for v in verdicts if v.status == "worse"]
    if worse:
        return "abort", "candidate worse on " + ", ".join(
            f"{v.metric} ({_fmt(v.stable)} -> {_fmt(v.candidate)}, p={v.p_value:.3g})" for v in worse
        )
    waiting = [v for v in verdicts if v.metric in REQUIRED and v.status == "too_few"]
    if waiting:
        return "wait", "too few samples for " + ", ".join(
            f"{v.metric} ({min(v.samples)}/{v.minimum})" for v in waiting
        )
    return "healthy", "no metric worse beyond its margin"


async def analyze(
    registry: AgentRegistry,
    online: OnlineMetrics,
    agent: str,
    policy: Policy | None = None,
    *,
    apply: bool = True,
    actor: str = "canary-analysis",
) -> Analysis:
    """Compare the agent's candidate with stable; abort the rollout when it is worse (unless not apply)."""
    policy = policy or Policy()
    rollout = await registry.rollout(agent)
    if rollout is None:
        raise RolloutRefused(agent, "has no rollout under way to analyze")
    stable, candidate = await online.many([rollout.stable, rollout.candidate])
    stable = since(stable, rollout.baseline.get(rollout.stable, {}))
    candidate = since(candidate, rollout.baseline.get(rollout.candidate, {}))
    verdicts = compare(stable, candidate, policy)
    decision, reason = decide(verdicts)
    result = Analysis(
        agent,
        rollout.stable,
        rollout.candidate,
        rollout.percent,
        decision,
        reason,
        policy,
        verdicts,
        dry_run=not apply,
        pinned_streams=(stable.pinned_streams, candidate.pinned_streams),
    )
    log.info("canary %s: %s vs %s: %s (%s)", agent, rollout.candidate, rollout.stable, decision, reason)
    if decision == "abort" and apply:
        await _abort(registry, rollout, result, actor)
    await registry.record_analysis(agent, result.to_dict())
    return result


async def _abort(registry: AgentRegistry, rollout: Rollout, result: Analysis, actor: str) -> None:
    try:
        await registry.abort_rollout(rollout.agent, actor=actor, reason=result.reason)
    except RolloutRefused:
        return  # someone promoted or aborted it a moment ago: nothing left to stop
    result.aborted = True


async def analysis_loop(
    registry: AgentRegistry,
    online: OnlineMetrics,
    agent: str,
    interval_s: float,
    stop: asyncio.Event,
    policy: Policy | None = None,
) -> None:
    """Analyze the agent's rollout every interval until stop is set, aborting it when worse.

    Every gateway pod may run this; a lock per interval lets one of them analyze each time. A
    failure (Redis away) is logged and the next interval tries again.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{id(stop)}"
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
            return
        except TimeoutError:
            pass
        try:
            if await registry.rollout(agent) is None:
                continue
            if not await registry.claim_analysis(agent, holder, interval_s * 0.9):
                continue
            result = await analyze(registry, online, agent, policy, actor="canary-analysis")
            if result.aborted:
                log.warning("canary %s: %s aborted: %s", agent, result.candidate, result.reason)
        except (RegistryError, RedisError) as exc:
            log.warning("canary analysis of %s skipped this interval: %s", agent, exc)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"


def render(result: Analysis) -> str:
    lines = [
        f"agent {result.agent}: candidate {result.candidate} at {result.percent:g}% "
        f"vs stable {result.stable}",
        f"{'metric':<20} {'test':<31} {'stable':>8} {'cand.':>8} {'effect':>8} {'p':>8} "
        f"{'n stable/cand':>14}  verdict",
    ]
    for v in result.metrics:
        effect = (
            "-"
            if v.effect is None
            else f"{v.effect:+.1%}"
            if v.metric == "ttft_p95_ms"
            else f"{v.effect:+.3f}"
        )
        p_value = "-" if v.p_value is None else f"{v.p_value:.3g}"
        verdict = f"too few (min {v.minimum})" if v.status == "too_few" else v.status
        lines.append(
            f"{v.metric:<20} {v.test:<31} {_fmt(v.stable):>8} {_fmt(v.candidate):>8} {effect:>8} "
            f"{p_value:>8} {v.samples[0]:>7}/{v.samples[1]:<6}  {verdict}"
        )
    if any(result.pinned_streams):
        lines.append(
            "not counted: {}/{} answers in pinned conversations (evaluation traffic)".format(
                *result.pinned_streams
            )
        )
    lines.append(f"decision: {result.decision.upper()}: {result.reason}{outcome(result.to_dict())}")
    return "\n".join(lines)


def outcome(record: dict[str, Any]) -> str:
    """What became of an analysis's abort: a dry run or a rollout that had already ended stops nothing,
    and `status` must not read as if it had."""
    if record.get("decision") != "abort":
        return ""
    if record.get("aborted"):
        return "; rollout aborted"
    if "dry_run" not in record:  # kept before analyses said whether they were dry runs
        return "; not aborted"
    if record["dry_run"]:
        return "; dry run, nothing aborted"
    return "; not aborted: the rollout had already ended"
