"""Keep-alives of idle followers: one timer wheel per pod wakes each follower when its keep-alive is
due, instead of a timer per stream in the event loop, and new streams' keep-alives are staggered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis

from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.log_follower import KEEPALIVE_TICKS, Follower, KeepAliveWheel, keep_alives
from streaming_gateway.state.stream_log import StreamLog
from tests.gateway.helpers import NoAnswers
from tests.polling import eventually


@contextlib.contextmanager
def timers_of(tasks: list[asyncio.Task[int]]) -> Iterator[Callable[[], int]]:
    """Yields a count of the timers these tasks scheduled in the running loop (`call_at`, which
    `call_later`, `sleep` and `timeout` go through) that are pending now: not fired, not cancelled.
    Other tests' leftovers and the wheel's own task are not counted (a count of the loop's whole
    heap was, in a whole-suite run)."""
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []
    original = loop.call_at

    def call_at(when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        handle = original(when, callback, *args, context=context)
        if asyncio.current_task() in tasks:
            handles.append(handle)
        return handle

    loop.call_at = call_at  # type: ignore[method-assign,assignment]
    try:
        yield lambda: sum(1 for h in handles if not h.cancelled() and h.when() > loop.time())
    finally:
        del loop.call_at  # the instance attribute goes; the class's method is back


def filed(wheel: KeepAliveWheel, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(wheel.spread()) == count

    return check


async def keep_alives_of(follower: Follower, count: int) -> int:
    """Follows until `count` keep-alives came; returns the number of entries seen meanwhile."""
    entries = 0
    seen = 0
    stream = follower.entries(0, until_end=False)
    try:
        async for entry in stream:
            if entry is None:
                seen += 1
                if seen == count:
                    break
            else:
                entries += 1
    finally:
        await stream.aclose()
    return entries


async def test_idle_followers_keep_alive_without_a_timer_each(aredis: aioredis.Redis, pod: StreamLog) -> None:
    """A hundred idle followers each get keep-alives again and again, while the event loop holds a
    handful of timers, not one per follower."""
    store = ConversationStore(aredis, ttl_s=600)
    cids = [(await store.create(f"u{i}", "default@000000000000")).id for i in range(100)]
    followers = [Follower(pod, NoAnswers(), cid, heartbeat_s=0.3, stop=asyncio.Event()) for cid in cids]
    wheel = keep_alives(0.3)
    tasks: list[asyncio.Task[int]] = []
    with timers_of(tasks) as pending:
        tasks += [asyncio.create_task(keep_alives_of(f, 3)) for f in followers]
        await eventually(filed(wheel, len(followers)), "every follower waiting")
        added = pending()
        assert added < len(followers) // 2, f"{added} timers pending for {len(followers)} waiting followers"
        assert await asyncio.gather(*tasks) == [0] * len(followers)


async def test_a_burst_of_followers_keeps_alive_in_staggered_ticks(
    aredis: aioredis.Redis, pod: StreamLog
) -> None:
    """Followers opened at the same moment are due their first keep-alive in different ticks of the
    wheel, evenly, rather than all in one."""
    store = ConversationStore(aredis, ttl_s=600)
    count = 2 * KEEPALIVE_TICKS
    cids = [(await store.create(f"u{i}", "default@000000000000")).id for i in range(count)]
    stop = asyncio.Event()
    wheel = keep_alives(600)
    tasks = [
        asyncio.create_task(keep_alives_of(Follower(pod, NoAnswers(), cid, heartbeat_s=600, stop=stop), 1))
        for cid in cids
    ]
    await eventually(filed(wheel, count), "every follower waiting")
    spread = wheel.spread()
    assert len(spread) >= KEEPALIVE_TICKS - 1
    assert max(spread) <= 3
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_wheel_stops_when_no_follower_waits(aredis: aioredis.Redis, pod: StreamLog) -> None:
    """Once its followers have ended, the wheel's task ends too: an idle pod runs no task for it."""
    cid = (await ConversationStore(aredis, ttl_s=600).create("u", "default@000000000000")).id
    wheel = keep_alives(0.2)
    await keep_alives_of(Follower(pod, NoAnswers(), cid, heartbeat_s=0.2, stop=asyncio.Event()), 2)

    async def stopped() -> bool:
        return not wheel.running

    await eventually(stopped, "the wheel's task ended")
    assert sum(wheel.spread()) == 0
