"""The pod's answer watchdog: the answers due checked together in one pipeline, cancels from any
pod and orphan stops as each answer's own watchdog did, and nothing for an answer shorter than a
tick or whose end is written. On one Redis server and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent_contracts.redis_connection import AnyRedis
from streaming_gateway.chat.answer_watchdog import AnswerWatchdog, StepControl
from streaming_gateway.state import redis_keys
from tests.fixtures.services import ON_BOTH
from tests.gateway.test_leases import CountingPipelines

pytestmark = ON_BOTH

#: Long enough that the watchdog's own timer never fires during a test that drives it.
NEVER_S = 3600.0


async def answer(watchdog: AnswerWatchdog, cid: str, *, watched: bool = True) -> StepControl:
    """A running answer (a task that waits until it is cancelled) under the watchdog's eye."""
    control = StepControl(cid, f"turn_{cid}", watched)
    task = asyncio.create_task(asyncio.sleep(NEVER_S))
    watchdog.watch(control, task)
    return control


async def stopped(control: StepControl) -> str | None:
    """Wait for the answer's task to end (it is cancelled by the watchdog); why it was stopped."""
    assert control.task is not None
    with pytest.raises(asyncio.CancelledError):
        await control.task
    return control.reason


async def finish(watchdog: AnswerWatchdog, *controls: StepControl) -> None:
    for control in controls:
        assert control.task is not None
        control.task.cancel()
        control.finished = True
        await watchdog.release(control)


async def test_answers_due_are_checked_in_one_pipeline(aredis: AnyRedis) -> None:
    """Every answer a tick old is checked in one pipeline (its producing lease written); a younger
    one sends nothing."""
    counting = CountingPipelines(aredis)
    watchdog = AnswerWatchdog(counting, orphan_grace_s=NEVER_S, tick_s=NEVER_S)  # type: ignore[arg-type]
    old = [await answer(watchdog, f"conv_{n}") for n in range(3)]
    young = await answer(watchdog, "conv_young")
    for control in old:
        control.due = time.monotonic()  # a tick old
    await watchdog.check_due()
    assert counting.pipelines == 1
    for control in old:
        assert await aredis.get(redis_keys.producing(control.conversation_id)) == control.turn_id
        assert control.producing_sent and not control.task.done()  # type: ignore[union-attr]
    assert await aredis.exists(redis_keys.producing("conv_young")) == 0 and not young.producing_sent
    await finish(watchdog, *old, young)


async def test_a_cancel_from_another_pod_stops_the_answer(aredis: AnyRedis) -> None:
    """The cancel key naming the answer's turn (written by the pod that took the cancel) stops it."""
    watchdog = AnswerWatchdog(aredis, orphan_grace_s=NEVER_S)
    control = await answer(watchdog, "conv_c")
    other = await answer(watchdog, "conv_other")
    await aredis.set(redis_keys.cancel("conv_c"), control.turn_id)
    await aredis.set(redis_keys.cancel("conv_other"), "turn_of_an_earlier_answer")
    watchdog.nudge(control)
    watchdog.nudge(other)
    assert await stopped(control) == "cancelled"
    assert not other.task.done()  # type: ignore[union-attr]
    await finish(watchdog, other)


async def test_an_answer_nobody_follows_is_stopped_after_the_grace(aredis: AnyRedis) -> None:
    """A watched answer with no live watcher is stopped once the grace has passed since the check
    that found none; an action continuation (unwatched) and a followed answer run on."""
    watchdog = AnswerWatchdog(aredis, orphan_grace_s=0)
    orphan = await answer(watchdog, "conv_o")
    followed = await answer(watchdog, "conv_f")
    continuation = await answer(watchdog, "conv_u", watched=False)
    await aredis.zadd(redis_keys.watchers("conv_f"), {"reader_1": time.time() + 15})
    await aredis.zadd(redis_keys.watchers("conv_o"), {"reader_gone": time.time() - 1})  # ran out
    for control in (orphan, followed, continuation):
        watchdog.nudge(control)
    assert await stopped(orphan) == "abandoned"
    await watchdog.check_due()  # the others were checked with it: nothing more is due
    assert not followed.task.done() and not continuation.task.done()  # type: ignore[union-attr]
    await finish(watchdog, followed, continuation)


async def test_an_answer_whose_end_is_written_costs_nothing(aredis: AnyRedis) -> None:
    """A reader leaving after the answer's end was written (the usual end of a stream) checks
    nothing: no producing lease, no pipeline, no timer left."""
    counting = CountingPipelines(aredis)
    watchdog = AnswerWatchdog(counting, orphan_grace_s=0)  # type: ignore[arg-type]
    control = await answer(watchdog, "conv_e")
    control.end_written = True
    watchdog.nudge(control)
    await watchdog.check_due()
    await asyncio.sleep(0)  # a turn of the loop: a timer due now would have fired
    assert counting.pipelines == 0 and not control.producing_sent
    assert await aredis.exists(redis_keys.producing("conv_e")) == 0
    await finish(watchdog, control)
    assert len(watchdog) == 0 and watchdog._timer is None
