"""Find where an online metric moved in the ordered history of an agent's versions.

Every version's aggregates are one hash read, so instead of probing O(log n) versions the walk
reads them all and reports: the baseline (the first version with enough samples), the first
version whose value moved past the tolerance from that baseline, and the largest step between
two neighbouring versions. Versions with too few samples are shown but never blamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_registry import AgentRegistry
from evaluation.errors import UnknownMetric
from observability.online import METRICS, OnlineMetrics


@dataclass(frozen=True)
class Step:
    version: str
    value: float | None
    samples: int
    enough: bool
    change_from_baseline: float | None = None


@dataclass
class BisectResult:
    agent: str
    metric: str
    higher_is_better: bool
    tolerance: float
    steps: list[Step] = field(default_factory=list)
    baseline: str | None = None
    first_moved: str | None = None
    largest_step: tuple[str, str, float] | None = None  # (from, to, change)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "tolerance": self.tolerance,
            "baseline": self.baseline,
            "first_moved": self.first_moved,
            "largest_step": list(self.largest_step) if self.largest_step else None,
            "steps": [step.__dict__ for step in self.steps],
        }


def relative_change(before: float, after: float) -> float:
    if before == 0:
        return 0.0 if after == 0 else float("inf") if after > 0 else float("-inf")
    return (after - before) / abs(before)


async def bisect_versions(
    registry: AgentRegistry,
    metrics: OnlineMetrics,
    agent: str,
    start: str,
    end: str,
    metric: str,
    *,
    tolerance: float = 0.1,
    min_samples: int = 20,
) -> BisectResult:
    if metric not in METRICS:
        raise UnknownMetric(metric, tuple(METRICS))
    read, samples_of, higher_is_better = METRICS[metric]
    versions = await registry.history_between(agent, start, end)
    aggregates = await metrics.many(versions)
    result = BisectResult(agent, metric, higher_is_better, tolerance)
    baseline_value: float | None = None
    previous: Step | None = None
    for aggregate in aggregates:
        value, samples = read(aggregate), samples_of(aggregate)
        enough = value is not None and samples >= min_samples
        change = relative_change(baseline_value, value) if enough and baseline_value is not None else None
        step = Step(aggregate.version, value, samples, enough, change)
        result.steps.append(step)
        if not enough or value is None:
            continue
        if baseline_value is None:
            baseline_value, result.baseline = value, aggregate.version
        elif result.first_moved is None and change is not None and abs(change) > tolerance:
            result.first_moved = aggregate.version
        if previous is not None and previous.value is not None:
            jump = relative_change(previous.value, value)
            if result.largest_step is None or abs(jump) > abs(result.largest_step[2]):
                result.largest_step = (previous.version, aggregate.version, jump)
        previous = step
    return result


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def render(result: BisectResult) -> str:
    direction = "higher is better" if result.higher_is_better else "lower is better"
    lines = [
        f"agent {result.agent}: {result.metric} ({direction}), tolerance {result.tolerance:.0%}",
        f"{'version':<40} {'samples':>8} {'value':>10} {'vs base':>9}",
    ]
    for step in result.steps:
        change = "-" if step.change_from_baseline is None else f"{step.change_from_baseline:+.1%}"
        marks = []
        if step.version == result.baseline:
            marks.append("baseline")
        if step.version == result.first_moved:
            marks.append("<- moved here")
        if not step.enough:
            marks.append("(too few samples)")
        lines.append(
            f"{step.version:<40} {step.samples:>8} {_fmt(step.value):>10} {change:>9}  "
            f"{' '.join(marks)}".rstrip()
        )
    if result.first_moved:
        moved = next(s for s in result.steps if s.version == result.first_moved)
        worse = (
            (moved.change_from_baseline or 0) < 0
            if result.higher_is_better
            else (moved.change_from_baseline or 0) > 0
        )
        lines.append(
            f"{result.metric} moved at {result.first_moved} "
            f"({moved.change_from_baseline:+.1%} from {result.baseline}, {'worse' if worse else 'better'})"
        )
    elif result.baseline:
        lines.append(f"{result.metric} stayed within {result.tolerance:.0%} of {result.baseline}")
    else:
        lines.append("no version in the range has enough samples")
    if result.largest_step:
        a, b, jump = result.largest_step
        lines.append(f"largest step: {a} -> {b} ({jump:+.1%})")
    return "\n".join(lines)
