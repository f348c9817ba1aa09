"""The pod's lease keeper: every held lease renewed in one round trip, removed ones left removed."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from streaming_gateway.state.leases import LeaseKeeper


async def test_renew_extends_held_leases_only(aredis: aioredis.Redis) -> None:
    """Held leases get a later expiry and their key a TTL; dropped or removed members are not renewed."""
    keeper = LeaseKeeper(aredis)
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


async def test_many_leases_renew_in_chunks(aredis: aioredis.Redis) -> None:
    """Five thousand leases (open streams) are all renewed."""
    keeper = LeaseKeeper(aredis)
    members = {f"s{i}": 0.0 for i in range(5000)}
    await aredis.zadd("lease:many", members)
    for member in members:
        keeper.hold("lease:many", member, 30)
    await keeper.renew()
    assert await aredis.zcount("lease:many", time.time(), "+inf") == 5000
    await keeper.close()


def test_a_lease_must_outlive_three_renewals() -> None:
    """A lease shorter than three renewal intervals is refused (one missed renewal must be harmless)."""
    with pytest.raises(ValueError, match="too short"):
        LeaseKeeper(aioredis.Redis(), every_s=5).hold("k", "m", 10)
