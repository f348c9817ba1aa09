"""The gateway's online counters added up in memory and written in one script per flush: the same
numbers as one script per answer, a failed flush kept and sent again, a batch counted once."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from agent_contracts.redis_connection import AnyRedis
from observability.online import OnlineMetrics, version_key
from observability.online_batches import OnlineBatches
from tests.fixtures.services import ON_BOTH

pytestmark = ON_BOTH

STREAMS = [
    {"ttft_s": 0.05, "tokens": 10},
    {"ttft_s": 0.3, "tokens": 7},
    {"ttft_s": None, "tokens": 0, "error_kind": "upstream_timeout"},
    {"ttft_s": 12.0, "tokens": 3, "error_kind": "something-new"},
    {"ttft_s": 0.2, "tokens": 5, "pinned": True},
]


async def test_a_flush_writes_what_one_script_per_answer_would(aredis: AnyRedis) -> None:
    """Answers added up and flushed count exactly as each recorded on its own, per version, pinned
    apart; nothing is in Redis before the flush, and every version goes in one script run."""
    online = OnlineMetrics(aredis)
    batches = OnlineBatches(online)
    for stream in STREAMS:
        await online.record_stream("direct@1", **stream)  # type: ignore[arg-type]
        batches.add_stream("batched@1", **stream)  # type: ignore[arg-type]
    batches.add_stream("batched@2", ttft_s=0.1, tokens=2)
    assert await online.versions() == ["direct@1"]
    await batches.flush()
    direct, batched, other = await online.many(["direct@1", "batched@1", "batched@2"])
    assert batched.counters == pytest.approx(direct.counters)
    assert batched.pinned_streams == 1 and batched.streams == 4 and other.streams == 1
    assert set(await online.versions()) == {"direct@1", "batched@1", "batched@2"}
    assert batches.pending == 0
    await batches.flush()  # nothing added since: nothing changes
    assert (await online.get("batched@1")).counters == batched.counters


async def test_a_failed_flush_is_sent_again(aredis: AnyRedis) -> None:
    """A flush Redis refuses keeps its batch; the next flush writes it before what came since."""
    online = OnlineMetrics(aredis)
    batches = OnlineBatches(online)
    await aredis.set(version_key("v@1"), "not a hash")  # the script fails on its first write
    batches.add_stream("v@1", ttft_s=0.1, tokens=4)
    await batches.flush()
    assert batches.pending == 1
    await aredis.delete(version_key("v@1"))
    batches.add_stream("v@1", ttft_s=0.2, tokens=6)
    await batches.flush()
    metrics = await online.get("v@1")
    assert metrics.streams == 2 and metrics.counters["tokens"] == 10 and batches.pending == 0


async def test_a_batch_sent_twice_counts_once(aredis: AnyRedis) -> None:
    """A batch that landed although its reply was lost, sent again, changes nothing."""
    online = OnlineMetrics(aredis)
    assert await online.record_batch("pod:1", {"v@1": {"streams": 1.0, "tokens": 3.0}})
    assert not await online.record_batch("pod:1", {"v@1": {"streams": 1.0, "tokens": 3.0}})
    assert await online.record_batch("pod:2", {"v@1": {"streams": 1.0, "tokens": 3.0}})
    assert (await online.get("v@1")).counters == {"streams": 2.0, "tokens": 6.0}


async def test_failed_batches_kept_are_bounded(aredis: aioredis.Redis) -> None:
    """While Redis refuses, at most max_retained batches wait; the oldest are dropped."""
    online = OnlineMetrics(aredis)
    batches = OnlineBatches(online, max_retained=2)
    await aredis.set(version_key("v@1"), "not a hash")
    for tokens in (1, 2, 3):
        batches.add_stream("v@1", ttft_s=0.1, tokens=tokens)
        await batches.flush()
    assert batches.pending == 2
    await aredis.delete(version_key("v@1"))
    await batches.flush()
    assert (await online.get("v@1")).counters["tokens"] == 5  # the first batch was dropped


async def test_close_writes_what_is_left(aredis: AnyRedis) -> None:
    """Stopping the flush timer (the gateway's shutdown) writes what was added since the last flush."""
    online = OnlineMetrics(aredis)
    batches = OnlineBatches(online, interval_s=3600)
    batches.start()
    batches.add_stream("v@1", ttft_s=0.1, tokens=1)
    await batches.close()
    assert (await online.get("v@1")).streams == 1


async def test_a_flush_past_the_version_bound_drops_the_oldest(aredis: AnyRedis) -> None:
    """A flush that brings the versions past `max_versions` drops the least recently written one
    with its counters, as a single answer's script does."""
    online = OnlineMetrics(aredis, max_versions=2)
    await online.record_stream("v1", ttft_s=0.1, tokens=1)
    await online.record_stream("v2", ttft_s=0.1, tokens=1)
    batches = OnlineBatches(online)
    batches.add_stream("v3", ttft_s=0.1, tokens=1)
    await batches.flush()
    assert set(await online.versions()) == {"v2", "v3"}
    assert await aredis.exists(version_key("v1")) == 0
