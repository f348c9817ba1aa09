"""Withdrawing a version: never activated, rolled out or rolled back to again, logged, and seen by
the gateway's store with the epoch."""

from __future__ import annotations

from typing import Any

import pytest

from agent_registry import (
    AgentRegistry,
    NothingToRollBack,
    RegistryConfigStore,
    UnknownVersion,
    VersionWithdrawn,
    WithdrawRefused,
)
from tests.fixtures.services import ON_BOTH

#: On the single server and on the 3-node cluster (each script touches one agent's slot).
pytestmark = ON_BOTH


async def _publish(registry: AgentRegistry, document: dict[str, Any], n: int) -> str:
    return (await registry.publish({**document, "label": f"v{n}"}))[0].version


async def test_withdrawn_versions_cannot_be_activated_or_rolled_out(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """activate and rollout refuse a withdrawn version; the active one cannot be withdrawn."""
    v1, v2 = [await _publish(registry, document, n) for n in (1, 2)]
    await registry.activate("default", v1)
    with pytest.raises(WithdrawRefused):
        await registry.withdraw(v1)
    assert await registry.withdraw(v2, actor="test", reason="bad") is True
    assert await registry.withdraw(v2) is False  # once is enough
    with pytest.raises(VersionWithdrawn):
        await registry.activate("default", v2)
    with pytest.raises(VersionWithdrawn):
        await registry.start_rollout("default", v2, 10)
    with pytest.raises(UnknownVersion):
        await registry.withdraw("default@000000000000")
    assert await registry.withdrawn("default") == {v2}
    assert await registry.is_withdrawn("default", v2) and not await registry.is_withdrawn("default", v1)
    [entry, *_] = await registry.activation_log("default")
    assert entry == {**entry, "action": "withdraw", "version": v2, "previous": v1, "reason": "bad"}


async def test_rollback_skips_a_withdrawn_version(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """A withdrawn version leaves the rollback stack: rollback returns to the one before it."""
    v1, v2, v3 = [await _publish(registry, document, n) for n in (1, 2, 3)]
    for version in (v1, v2, v3):
        await registry.activate("default", version)
    await registry.withdraw(v2)
    assert (await registry.rollback("default")).version == v1
    with pytest.raises(NothingToRollBack):
        await registry.rollback("default")


async def test_withdrawing_the_candidate_ends_the_rollout(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """The rollout's candidate can be withdrawn: the rollout ends in the same step, and the epoch moves."""
    v1, v2 = [await _publish(registry, document, n) for n in (1, 2)]
    await registry.activate("default", v1)
    await registry.start_rollout("default", v2, 50)
    epoch = await registry.epoch("default")
    await registry.withdraw(v2)
    assert await registry.rollout("default") is None
    assert await registry.epoch("default") == epoch + 1
    assert (await registry.activation_log("default"))[0]["rollout_ended"] == v2


async def test_the_store_sees_withdrawals_with_the_epoch(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """The gateway's store rereads the withdrawn set when the epoch moves, like the active version."""
    v1, v2 = [await _publish(registry, document, n) for n in (1, 2)]
    await registry.activate("default", v1)
    store = RegistryConfigStore(registry, "default", poll_interval_s=0)
    await store.active()
    assert store.withdrawn == frozenset()
    await registry.withdraw(v2)
    await store.active()
    assert store.withdrawn == {v2}
