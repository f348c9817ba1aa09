"""Publish, list, activate, roll back and hot activation, against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_registry import (
    AgentRegistry,
    NoActiveVersion,
    NothingToRollBack,
    RegistryConfigStore,
    RegistryUnavailable,
    UnknownVersion,
    WrongAgent,
    keys,
)
from agent_registry.registry import MAX_PREVIOUS
from tests.agent_registry.conftest import DEFAULT_CONFIG
from tests.fixtures.services import ON_BOTH, ON_SERVER

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH


def _variant(document: dict[str, Any], n: int, **changes: Any) -> dict[str, Any]:
    return {**document, "label": f"v{n}", **changes}


async def test_publish_is_immutable_and_idempotent(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Publishing the same content twice returns the first record; the stored record never changes."""
    first, created = await registry.publish(document)
    again, created_again = await registry.publish(dict(document))
    assert created and not created_again
    assert again == first
    assert first.version.startswith("default@") and len(first.content_hash) == 12
    assert (await registry.get(first.content_hash)).version == first.version  # by bare hash
    assert (await registry.config(first.version)).version == first.version


async def test_versions_are_listed_in_publish_order(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """list gives the agent's versions oldest first; other agents' versions are not mixed in."""
    published = [(await registry.publish(_variant(document, n)))[0].version for n in range(3)]
    await registry.publish({**document, "agent": "sales"})
    assert [r.version for r in await registry.versions("default")] == published
    assert await registry.agents() == ["default", "sales"]


async def test_activate_and_roll_back_walk_the_previous_versions(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """Each rollback returns to the version active before; with none left it is refused."""
    v1, v2, v3 = [(await registry.publish(_variant(document, n)))[0].version for n in range(1, 4)]
    with pytest.raises(NoActiveVersion):
        await registry.active_config("default")
    for version in (v1, v2, v3):
        await registry.activate("default", version)
    unchanged = await registry.activate("default", v3)
    assert not unchanged.changed
    assert (await registry.rollback("default")).version == v2
    assert (await registry.rollback("default")).version == v1
    with pytest.raises(NothingToRollBack):
        await registry.rollback("default")
    assert await registry.active_version("default") == v1
    log = await registry.activation_log("default")
    assert [entry["action"] for entry in log] == ["rollback", "rollback", "activate", "activate", "activate"]
    assert log[0] == {**log[0], "version": v1, "previous": v2}


async def test_activation_refuses_unknown_and_foreign_versions(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """An unpublished version, or another agent's, cannot be activated."""
    sales, _ = await registry.publish({**document, "agent": "sales"})
    with pytest.raises(UnknownVersion):
        await registry.activate("default", "default@000000000000")
    with pytest.raises(WrongAgent):
        await registry.activate("default", sales.version)


async def test_concurrent_activations_lose_no_step(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """Many racing activations each bump the epoch once and leave a consistent previous stack."""
    versions = [(await registry.publish(_variant(document, n)))[0].version for n in range(10)]
    results = await asyncio.gather(*(registry.activate("default", v) for v in versions))
    assert sorted(r.epoch for r in results) == list(range(1, 11))
    final = await registry.active_version("default")
    assert final is not None
    seen = [final]
    while True:
        try:
            seen.append((await registry.rollback("default")).version)
        except NothingToRollBack:
            break
    assert sorted(seen) == sorted(versions)


async def test_previous_stack_is_bounded(
    registry: AgentRegistry, aredis: aioredis.Redis, document: dict[str, Any]
) -> None:
    """Rollback history keeps at most MAX_PREVIOUS entries."""
    for n in range(MAX_PREVIOUS + 5):
        record, _ = await registry.publish(_variant(document, n))
        await registry.activate("default", record.version)
    assert await aredis.llen(keys.previous("default")) == MAX_PREVIOUS


async def test_history_between_for_bisect(registry: AgentRegistry, document: dict[str, Any]) -> None:
    """history_between gives the versions between two versions in order, either direction."""
    versions = [(await registry.publish(_variant(document, n)))[0].version for n in range(5)]
    assert await registry.history_between("default", versions[1], versions[3]) == versions[1:4]
    assert await registry.history_between("default", versions[3], versions[1]) == list(
        reversed(versions[1:4])
    )
    with pytest.raises(UnknownVersion):
        await registry.history_between("default", versions[0], "x@000000000000")


async def test_store_picks_up_activation_without_restart(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """The gateway's store serves the new active config after an activation, and pinned ones by version."""
    store = RegistryConfigStore(registry, "default", poll_interval_s=0)
    seeded = await store.seed(DEFAULT_CONFIG)
    assert seeded.version == (await registry.active_config("default")).version
    v2, _ = await registry.publish(_variant(document, 2, temperature=0.7))
    await registry.activate("default", v2.version)
    active = await store.active()
    assert active.version == v2.version and active.temperature == 0.7
    assert (await store.get(seeded.version)).version == seeded.version  # a conversation pinned to it
    await registry.rollback("default")
    assert (await store.active()).version == seeded.version


async def test_store_polls_at_most_once_per_interval(
    registry: AgentRegistry, document: dict[str, Any]
) -> None:
    """Within the poll interval the cached config is served without asking Redis."""
    store = RegistryConfigStore(registry, "default", poll_interval_s=3600)
    first = await store.seed(DEFAULT_CONFIG)
    v2, _ = await registry.publish(_variant(document, 2))
    await registry.activate("default", v2.version)
    assert (await store.active()).version == first.version


@ON_SERVER  # stops the single server
async def test_store_keeps_serving_when_redis_goes_away(registry: AgentRegistry, redis_service) -> None:
    """With Redis down, the last active config keeps serving; a cold store reports unavailability."""
    store = RegistryConfigStore(registry, "default", poll_interval_s=0)
    config = await store.seed(DEFAULT_CONFIG)
    redis_service.stop()
    try:
        assert (await store.active()).version == config.version
        cold = RegistryConfigStore(registry, "default", poll_interval_s=0)
        with pytest.raises(RegistryUnavailable):
            await cold.active()
    finally:
        redis_service.start()


async def test_unknown_version_is_a_clear_error(registry: AgentRegistry) -> None:
    """get of an unpublished version raises UnknownVersion naming it."""
    with pytest.raises(UnknownVersion, match="nope@000000000000"):
        await registry.get("nope@000000000000")
