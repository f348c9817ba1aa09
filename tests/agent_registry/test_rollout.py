"""Canary rollouts in the registry: start, change the share, promote, abort, log and epoch."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest

from agent_registry import (
    AgentRegistry,
    NoActiveVersion,
    RolloutRefused,
    UnknownVersion,
    WrongAgent,
)
from agent_registry.registry import Rollout


async def _versions(registry: AgentRegistry, document: dict[str, Any], n: int) -> list[str]:
    return [(await registry.publish({**document, "label": f"v{i}"}))[0].version for i in range(n)]


async def test_rollout_promote_walk(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Start at 10 %, raise to 50 %, promote: each step bumps the epoch and is logged."""
    stable, candidate = await _versions(registry, document, 2)
    await registry.activate("default", stable)
    epoch = await registry.epoch("default")
    started = await registry.start_rollout("default", candidate, 10, baseline={stable: {"streams": 3.0}})
    assert (started.candidate, started.stable, started.percent) == (candidate, stable, 10.0)
    assert await registry.epoch("default") == epoch + 1
    raised = await registry.start_rollout("default", candidate, 50)
    assert raised.percent == 50 and raised.started_at == started.started_at
    assert raised.baseline == {stable: {"streams": 3.0}}  # no new snapshot given: the window stays
    widened = await registry.start_rollout("default", candidate, 50, baseline={stable: {"streams": 9.0}})
    assert widened.baseline == {stable: {"streams": 9.0}}  # a new share, a new comparison window
    promoted = await registry.promote("default")
    assert (promoted.version, promoted.previous) == (candidate, stable)
    assert await registry.active_version("default") == candidate
    assert await registry.rollout("default") is None
    log = await registry.activation_log("default")
    assert [entry["action"] for entry in log] == ["promote", "rollout", "rollout", "rollout", "activate"]
    assert log[0]["rollout_ended"] == candidate and log[1]["percent"] == 50
    assert log[0]["epoch"] == epoch + 4
    assert (await registry.rollback("default")).version == stable  # promote is an activation


async def test_abort_returns_everyone_to_stable(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Abort clears the rollout, keeps the active version, bumps the epoch and logs the reason."""
    stable, candidate = await _versions(registry, document, 2)
    await registry.activate("default", stable)
    await registry.start_rollout("default", candidate, 10)
    epoch = await registry.epoch("default")
    ended = await registry.abort_rollout("default", actor="canary-analysis", reason="error rate up")
    assert ended.candidate == candidate
    assert await registry.rollout("default") is None
    assert await registry.active_version("default") == stable
    assert await registry.epoch("default") == epoch + 1
    entry = (await registry.activation_log("default"))[0]
    assert entry == {**entry, "action": "abort", "version": candidate, "actor": "canary-analysis"}
    assert entry["reason"] == "error rate up"
    with pytest.raises(RolloutRefused, match="no rollout under way to abort"):
        await registry.abort_rollout("default")
    with pytest.raises(RolloutRefused, match="no rollout under way to promote"):
        await registry.promote("default")


async def test_rollout_refusals(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Bad shares, unknown, foreign or active versions and a second candidate are refused clearly."""
    stable, candidate, other = await _versions(registry, document, 3)
    with pytest.raises(NoActiveVersion):
        await registry.start_rollout("default", candidate, 10)
    await registry.activate("default", stable)
    for percent in (0, -5, 100.5, math.nan):
        with pytest.raises(RolloutRefused, match="percent"):
            await registry.start_rollout("default", candidate, percent)
    with pytest.raises(UnknownVersion):
        await registry.start_rollout("default", "nope@000000000000", 10)
    sales = (await registry.publish({**document, "agent": "sales"}))[0].version
    with pytest.raises(WrongAgent):
        await registry.start_rollout("default", sales, 10)
    with pytest.raises(RolloutRefused, match="already the active version"):
        await registry.start_rollout("default", stable, 10)
    await registry.start_rollout("default", candidate, 10)
    with pytest.raises(RolloutRefused, match=f"rollout of {candidate} is under way"):
        await registry.start_rollout("default", other, 10)


async def test_activation_ends_a_rollout(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Activating another version (or rolling back) ends the canary: its stable side is gone."""
    stable, candidate, other = await _versions(registry, document, 3)
    await registry.activate("default", stable)
    await registry.start_rollout("default", candidate, 25)
    await registry.activate("default", other)
    assert await registry.rollout("default") is None
    assert (await registry.activation_log("default"))[0]["rollout_ended"] == candidate


async def test_racing_rollouts_leave_one_candidate(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Two operators starting different candidates at once: one wins, the other is refused."""
    stable, a, b = await _versions(registry, document, 3)
    await registry.activate("default", stable)
    results = await asyncio.gather(
        registry.start_rollout("default", a, 10),
        registry.start_rollout("default", b, 10),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Rollout) for r in results) == 1
    assert sum(isinstance(r, RolloutRefused) for r in results) == 1


def test_assignment_is_sticky_and_near_the_share() -> None:
    """The same conversation id always gets the same version; about percent % get the candidate."""
    rollout = Rollout("default", "cand@1", "stable@1", 10.0, "t", "t")
    ids = [f"conv_{uuid.UUID(int=i).hex}" for i in range(20_000)]
    picks = [rollout.version_for(cid) for cid in ids]
    assert picks == [rollout.version_for(cid) for cid in ids]
    share = picks.count("cand@1") / len(ids)
    assert 0.09 < share < 0.11
    wider = Rollout("default", "cand@1", "stable@1", 30.0, "t", "t")
    # Raising the share only adds candidate conversations: nobody already on it moves back.
    assert all(
        wider.version_for(cid) == "cand@1" for cid, pick in zip(ids, picks, strict=True) if pick == "cand@1"
    )
    assert {Rollout("default", "c", "s", 100.0, "t", "t").version_for(cid) for cid in ids[:100]} == {"c"}
