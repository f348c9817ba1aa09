"""Online per-version aggregates in Redis, and bisecting a metric across the version history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_contracts.redis_connection import connect
from agent_registry import AgentRegistry, read_document
from evaluation.bisect import bisect_versions, render
from evaluation.errors import UnknownMetric
from observability.errors import InvalidFeedback
from observability.online import OnlineMetrics, feedback_key, version_key
from tests.fixtures.services import ON_BOTH

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def metrics(aredis: aioredis.Redis) -> OnlineMetrics:
    return OnlineMetrics(aredis)


async def test_stream_aggregates(metrics: OnlineMetrics) -> None:
    """Streams, errors by kind, time to first token and tokens add up per version."""
    for ttft in (0.05, 0.2, 0.4, 3.0):
        await metrics.record_stream("v@1", ttft_s=ttft, tokens=10)
    await metrics.record_stream("v@1", ttft_s=None, tokens=0, error_kind="upstream_timeout")
    await metrics.record_stream("v@1", ttft_s=None, error_kind="something-new")  # folded into internal_error
    await metrics.record_stream("other@2", ttft_s=1.0, tokens=5)
    m = await metrics.get("v@1")
    assert m.streams == 6 and m.ttft_count == 4
    assert m.error_rate == pytest.approx(2 / 6)
    assert m.errors_by_kind() == {"upstream_timeout": 1, "internal_error": 1}
    assert m.ttft_mean_ms == pytest.approx((50 + 200 + 400 + 3000) / 4)
    assert m.ttft_quantile_ms(0.5) == 250 and m.ttft_quantile_ms(0.95) == 5000
    assert m.tokens_per_stream == pytest.approx(40 / 6)
    assert (await metrics.get("other@2")).streams == 1


async def test_action_outcomes(metrics: OnlineMetrics) -> None:
    """Only final outcomes count; the success rate is succeeded over all final outcomes."""
    for outcome in ("succeeded", "succeeded", "succeeded", "failed", "dead_lettered", "running", "queued"):
        await metrics.record_action("v@1", outcome)
    m = await metrics.get("v@1")
    assert m.actions_total == 5 and m.action_success_rate == pytest.approx(0.6)


async def test_feedback_counts_once_per_message(metrics: OnlineMetrics) -> None:
    """Rating a message again replaces the earlier rating instead of counting twice."""
    assert await metrics.record_feedback(
        "v@1", conversation_id="c1", message_id="m1", rating=2, comment="meh"
    )
    assert await metrics.record_feedback("v@1", conversation_id="c1", message_id="m2", rating=5)
    assert not await metrics.record_feedback("v@1", conversation_id="c1", message_id="m1", rating=4)
    m = await metrics.get("v@1")
    assert m.feedback_count == 2 and m.feedback_mean == pytest.approx(4.5)
    assert m.counters.get("feedback_rating_2", 0) == 0 and m.counters["feedback_rating_4"] == 1
    recent = await metrics.recent_feedback("v@1")
    assert [entry["rating"] for entry in recent] == [4, 5, 2]
    assert recent[2]["comment"] == "meh"


async def test_pinned_traffic_is_counted_apart(metrics: OnlineMetrics) -> None:
    """Answers, actions and ratings of pinned conversations land in pinned_ counters: none of the
    numbers the canary analysis and bisect read moves, and a re-rating stays on its own side."""
    await metrics.record_stream("v@1", ttft_s=0.2, tokens=5)
    await metrics.record_stream("v@1", ttft_s=9.0, tokens=5, error_kind="upstream_error", pinned=True)
    await metrics.record_action("v@1", "failed", pinned=True)
    await metrics.record_action("v@1", "succeeded")
    assert await metrics.record_feedback("v@1", conversation_id="c1", message_id="m1", rating=5)
    assert await metrics.record_feedback("v@1", conversation_id="e1", message_id="m1", rating=1, pinned=True)
    assert not await metrics.record_feedback(
        "v@1", conversation_id="e1", message_id="m1", rating=2, pinned=True
    )
    m = await metrics.get("v@1")
    assert m.streams == 1 and m.error_rate == 0 and m.ttft_quantile_ms(0.95) == 250
    assert m.actions_total == 1 and m.action_success_rate == 1
    assert m.feedback_count == 1 and m.feedback_mean == 5
    summary = m.summary()
    assert summary["pinned_streams"] == 1 and summary["pinned_feedback_count"] == 1
    assert m.counters["pinned_feedback_sum"] == 2 and m.counters["pinned_action_failed"] == 1
    recent = await metrics.recent_feedback("v@1")
    assert recent[0]["pinned"] is True and "pinned" not in recent[-1]


@pytest.mark.parametrize("rating", [0, 6, 3.5, True, "5"])
async def test_invalid_ratings_are_refused(metrics: OnlineMetrics, rating: Any) -> None:
    """Ratings outside the integers 1-5 raise InvalidFeedback and record nothing."""
    with pytest.raises(InvalidFeedback, match="rating"):
        await metrics.record_feedback("v@1", conversation_id="c", message_id="m", rating=rating)
    assert (await metrics.get("v@1")).feedback_count == 0


async def test_long_comment_is_refused(metrics: OnlineMetrics) -> None:
    """A comment over the limit is refused, not truncated silently."""
    with pytest.raises(InvalidFeedback, match="comment"):
        await metrics.record_feedback(
            "v@1", conversation_id="c", message_id="m", rating=3, comment="x" * 2001
        )


async def test_version_count_is_bounded(aredis: aioredis.Redis) -> None:
    """Past max_versions, the least recently written version is dropped with its hash and comments."""
    metrics = OnlineMetrics(aredis, max_versions=3)
    await metrics.record_feedback("v@0", conversation_id="c", message_id="m", rating=5)
    for n in range(1, 4):
        await aredis.zadd("online:{m}:versions", {"v@0": 0})  # make v@0 the oldest whatever the clock says
        await metrics.record_stream(f"v@{n}", ttft_s=0.1)
    assert sorted(await metrics.versions()) == ["v@1", "v@2", "v@3"]
    assert not await aredis.exists(version_key("v@0"), feedback_key("v@0"))
    assert await aredis.ttl(version_key("v@1")) > 0


async def _history(registry: AgentRegistry, n: int) -> list[str]:
    base = read_document(ROOT / "agent_configs" / "default.json")
    return [(await registry.publish({**base, "label": f"v{i}"}))[0].version for i in range(n)]


async def test_bisect_finds_where_time_to_first_token_moved(
    aredis: aioredis.Redis, metrics: OnlineMetrics
) -> None:
    """TTFT steady for three versions, then doubled: bisect names the fourth version."""
    registry = AgentRegistry(aredis)
    versions = await _history(registry, 6)
    for index, version in enumerate(versions):
        ttft = 0.3 if index < 3 else 0.6
        for _ in range(25):
            await metrics.record_stream(version, ttft_s=ttft)
    await metrics.record_stream(
        versions[1], ttft_s=1.0
    )  # one slow answer: the mean moves 9%, within tolerance
    result = await bisect_versions(
        registry, metrics, "default", versions[0], versions[5], "ttft_mean_ms", tolerance=0.5, min_samples=20
    )
    assert result.baseline == versions[0]
    assert result.first_moved == versions[3]
    assert result.largest_step is not None and result.largest_step[:2] == (versions[2], versions[3])
    text = render(result)
    assert f"ttft_mean_ms moved at {versions[3]}" in text and "worse" in text


async def test_bisect_skips_versions_with_too_few_samples(
    aredis: aioredis.Redis, metrics: OnlineMetrics
) -> None:
    """A version with little feedback is shown but neither baseline nor blamed."""
    registry = AgentRegistry(aredis)
    versions = await _history(registry, 3)
    plan = {versions[0]: [1] * 3, versions[1]: [5] * 10, versions[2]: [2] * 10}
    for version, ratings in plan.items():
        for i, rating in enumerate(ratings):
            await metrics.record_feedback(
                version, conversation_id="c", message_id=f"{version}-{i}", rating=rating
            )
    result = await bisect_versions(
        registry, metrics, "default", versions[0], versions[2], "feedback_mean", min_samples=5
    )
    assert [step.enough for step in result.steps] == [False, True, True]
    assert result.baseline == versions[1] and result.first_moved == versions[2]
    assert "worse" in render(result)
    with pytest.raises(UnknownMetric):
        await bisect_versions(registry, metrics, "default", versions[0], versions[2], "happiness")


def test_bisect_command(redis_url: str) -> None:
    """python -m evaluation bisect prints the walk; online prints the per-version table."""
    import asyncio

    async def prepare() -> list[str]:
        client = await connect(redis_url, decode_responses=True)
        try:
            versions = await _history(AgentRegistry(client), 3)
            metrics = OnlineMetrics(client)
            for index, version in enumerate(versions):
                for _ in range(20):
                    await metrics.record_stream(
                        version, ttft_s=0.2, error_kind="upstream_error" if index == 2 else None
                    )
            return versions
        finally:
            await client.aclose()

    versions = asyncio.run(prepare())
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation",
            "bisect",
            "--from",
            versions[0],
            "--to",
            versions[2],
            "--metric",
            "error_rate",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["first_moved"] == versions[2]
    online = subprocess.run(
        [sys.executable, "-m", "evaluation", "online"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert online.returncode == 0, online.stderr
    assert all(version in online.stdout for version in versions)
