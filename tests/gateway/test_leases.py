"""The pod's lease keeper: held leases renewed by one timer wheel, spread over their period, removed
ones left removed; on one Redis server, behind a cluster proxy (one slot per command) and on a
Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from agent_contracts.redis_connection import AnyRedis
from streaming_gateway.state.leases import CHUNK, LeaseKeeper
from tests.fixtures.services import ON_BOTH


@ON_BOTH
@pytest.mark.parametrize("by_slot", [False, True])
async def test_renew_extends_held_leases_only(aredis: AnyRedis, by_slot: bool) -> None:
    """Held leases get a later expiry and their key a TTL; dropped or removed members are not renewed."""
    keeper = LeaseKeeper(aredis, by_slot=by_slot)
    before = time.time()
    await aredis.zadd("lease:a", {"s1": before, "s2": before, "gone": before})
    await aredis.zadd("lease:b", {"w1": before})
    keeper.hold("lease:a", "s1", 30)
    keeper.hold("lease:a", "s2", 30)
    keeper.hold("lease:a", "gone", 30)
    keeper.hold("lease:b", "w1", 15)
    keeper.drop("lease:a", "s2")
    await aredis.zrem("lease:a", "gone")  # its stream ended on another path: not resurrected
    await keeper.renew()
    renewed, dropped, renewed_b = (
        await aredis.zscore("lease:a", "s1"),
        await aredis.zscore("lease:a", "s2"),
        await aredis.zscore("lease:b", "w1"),
    )
    assert renewed is not None and renewed >= before + 30
    assert dropped == pytest.approx(before)
    assert await aredis.zscore("lease:a", "gone") is None
    assert renewed_b is not None and renewed_b >= before + 15
    assert 60 < await aredis.ttl("lease:a") <= 90
    assert 60 < await aredis.ttl("lease:b") <= 75
    await keeper.close()


@ON_BOTH
async def test_many_leases_on_many_keys_renew_in_chunks(aredis: AnyRedis) -> None:
    """More leases than one script call takes, on keys of many hash slots, are all renewed."""
    keeper = LeaseKeeper(aredis)
    count = 2 * CHUNK + 7
    for i in range(count):
        await aredis.zadd(f"lease:{{c{i}}}:watchers", {f"r{i}": 0.0})
        keeper.hold(f"lease:{{c{i}}}:watchers", f"r{i}", 15)
    await keeper.renew()
    now = time.time()
    alive = [await aredis.zcount(f"lease:{{c{i}}}:watchers", now, "+inf") for i in range(count)]
    assert alive == [1] * count
    await keeper.close()


async def test_the_wheel_renews_each_lease_on_its_own(aredis: aioredis.Redis) -> None:
    """Without any call to renew(), the keeper's wheel keeps pushing a held lease's expiry forward
    and leaves a dropped one alone."""
    keeper = LeaseKeeper(aredis, tick_s=0.01)
    start = time.time()
    await aredis.zadd("lease:w", {"kept": start + 0.3, "dropped": start + 0.3})
    keeper.hold("lease:w", "kept", 0.3)
    keeper.hold("lease:w", "dropped", 0.3)
    keeper.drop("lease:w", "dropped")
    first = await aredis.zscore("lease:w", "kept")
    assert first is not None
    for _ in range(1000):  # waits for the wheel (bounded: a keeper that never renews fails here)
        score = await aredis.zscore("lease:w", "kept")
        if score is not None and score > first + 0.2:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the held lease was never renewed by the wheel")
    assert await aredis.zscore("lease:w", "dropped") == pytest.approx(start + 0.3)
    await keeper.close()


async def test_a_burst_of_leases_is_spread_over_the_period(aredis: aioredis.Redis) -> None:
    """Leases taken at the same moment (streams opened in a burst) are due in different ticks, the
    same number in each, so no tick renews them all."""
    keeper = LeaseKeeper(aredis, tick_s=0.5)  # a 15 s lease renews every 5 s: 10 ticks
    for i in range(1000):
        keeper.hold(f"lease:{i}", "m", 15)
    spread = keeper.spread()
    assert len(spread) == 10
    assert max(spread) - min(spread) <= 1
    assert sum(spread) == 1000
    keeper.hold("lease:0", "m", 15)  # held again: still one renewal per period
    keeper.drop("lease:1", "m")
    assert sum(keeper.spread()) == 999
    await keeper.close()


def test_a_lease_must_outlive_three_renewals() -> None:
    """A lease shorter than three ticks of the wheel is refused (one missed renewal must be harmless)."""
    with pytest.raises(ValueError, match="too short"):
        LeaseKeeper(aioredis.Redis(), tick_s=5).hold("k", "m", 10)


class CountingPipelines:
    """The test's client, counting the pipelines (round trips to each node) asked of it."""

    def __init__(self, client: AnyRedis) -> None:
        self.client, self.pipelines = client, 0

    def pipeline(self, **kwargs: object) -> object:
        self.pipelines += 1
        return self.client.pipeline(**kwargs)  # type: ignore[arg-type]

    def register_script(self, script: str) -> object:
        return self.client.register_script(script)


@ON_BOTH
async def test_removals_asked_together_go_in_one_pipeline(aredis: AnyRedis) -> None:
    """A stream's slot and its follower's watcher lease, released in one turn of the loop, are
    removed in one pipeline (on a cluster, the client's pipeline sends each node its part)."""
    counting = CountingPipelines(aredis)
    keeper = LeaseKeeper(counting)  # type: ignore[arg-type]
    await aredis.zadd("gw:user:{u}:streams", {"stream_1": time.time() + 30, "other": time.time() + 30})
    await aredis.zadd("gw:conv:{c}:watchers", {"reader_1": time.time() + 15})
    keeper.hold("gw:user:{u}:streams", "stream_1", 30)
    keeper.hold("gw:conv:{c}:watchers", "reader_1", 15)
    watcher = keeper.release("gw:conv:{c}:watchers", "reader_1")
    slot = keeper.release("gw:user:{u}:streams", "stream_1")
    await asyncio.gather(watcher, slot)
    assert counting.pipelines == 1
    assert await aredis.zrange("gw:user:{u}:streams", 0, -1) == ["other"]
    assert await aredis.zcard("gw:conv:{c}:watchers") == 0
    assert len(keeper) == 0  # no longer renewed either
    await keeper.close()


async def test_a_failed_removal_is_told_to_each_caller(aredis: aioredis.Redis) -> None:
    """A removal Redis refuses fails the futures of its pipeline (the lease then runs out by itself)."""
    keeper = LeaseKeeper(aredis)
    await aredis.set("gw:conv:{c}:watchers", "not a sorted set")
    failed = keeper.release("gw:conv:{c}:watchers", "reader_1")
    with pytest.raises(aioredis.ResponseError):
        await failed
    await keeper.close()
