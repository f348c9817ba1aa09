"""Compaction of an ended answer's log: token runs merged into one entry each, and every reader,
before, inside or after a merged run, still gets each token's text exactly once and in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from agent_contracts.events import ActionStatusEvent, MessageEndEvent, TokenEvent
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.log_compaction import LogCompactor
from streaming_gateway.state.log_follower import Follower
from streaming_gateway.state.log_hub import BATCH, LogEntry
from streaming_gateway.state.stream_log import StreamLog
from tests.fixtures.services import ON_BOTH
from tests.gateway.helpers import NoAnswers
from tests.redis_reads import stream_entries

pytestmark = ON_BOTH

#: Texts with multi-byte characters: the merged entry cuts by UTF-8 bytes and must not split one.
WORDS = ["Hé", "llo", " wörld", " 🙂", "/x", ' "q"', " \\ ", "end"]


@pytest.fixture
async def log(aredis: aioredis.Redis) -> AsyncIterator[StreamLog]:
    log = StreamLog(aredis, maxlen=10_000, ttl_s=600)
    yield log
    await log.close()


@pytest.fixture
def compactor(aredis: aioredis.Redis) -> LogCompactor:
    return LogCompactor(aredis, delay_s=0)


async def conversation(aredis: aioredis.Redis) -> str:
    return (await ConversationStore(aredis, ttl_s=600).create("alice", "default@000000000000")).id


async def answer(
    log: StreamLog, cid: str, words: list[str], message_id: str = "msg_1", finish: str = "stop"
) -> int:
    await log.append(
        cid, *(TokenEvent(id=1, conversation_id=cid, message_id=message_id, text=w) for w in words)
    )
    return await log.append(
        cid, MessageEndEvent(id=1, conversation_id=cid, message_id=message_id, finish_reason=finish)
    )


async def read_all(log: StreamLog, cid: str, after: int) -> list[LogEntry]:
    follower = Follower(log, NoAnswers(), cid, heartbeat_s=30, stop=asyncio.Event())
    got: list[LogEntry] = []
    async for entry in follower.entries(after, until_end=True):
        if entry is not None:
            got.append(entry)
    return got


def text(entries: list[LogEntry]) -> str:
    return "".join(json.loads(e.data)["text"] for e in entries if e.type == "token")


async def raw_log(aredis: aioredis.Redis, cid: str) -> list[tuple[str, dict[str, str]]]:
    return await stream_entries(aredis, redis_keys.event_log(cid))


async def test_ended_answer_becomes_one_token_entry_and_its_end(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """The tokens of an ended answer become one entry at the last token's id; the end keeps its id."""
    cid = await conversation(aredis)
    end = await answer(log, cid, WORDS)
    result = await compactor.compact(cid)
    assert (result.status, result.merged) == (1, 1)
    entries = await log.read(cid, 0)
    assert [(e.id, e.type) for e in entries] == [(len(WORDS), "token"), (end, "message_end")]
    merged = json.loads(entries[0].data)
    assert merged == {
        "id": len(WORDS),
        "conversation_id": cid,
        "message_id": "msg_1",
        "type": "token",
        "text": "".join(WORDS),
    }
    # Appends go on after it with the next ids.
    assert await log.append(cid, TokenEvent(id=1, conversation_id=cid, text="next")) == end + 1
    assert (await compactor.compact(cid)).status == 0  # nothing more has ended


async def test_a_fifty_token_answer_takes_a_fraction_of_the_memory(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """Compacted (and its stream's nodes sized to fit), a 50-token answer's log is under a third of its size."""
    cid = await conversation(aredis)
    await answer(log, cid, [f" word{i}" for i in range(50)], "msg_" + "0" * 32)
    key = redis_keys.event_log(cid)
    before, ttl = await aredis.memory_usage(key, samples=0), await aredis.ttl(key)
    await compactor.compact(cid)
    after = await aredis.memory_usage(key, samples=0)
    assert before is not None and after is not None  # MEMORY USAGE answers nil only for a missing key
    assert after * 3 < before
    assert 0 < await aredis.ttl(key) <= ttl  # the log keeps its expiry


async def test_reader_before_inside_and_after_the_merged_run(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """From every last id, a reader gets the rest of the text once: the merged entry cut after its id."""
    cid = await conversation(aredis)
    end = await answer(log, cid, WORDS)
    whole = await read_all(log, cid, 0)
    await compactor.compact(cid)
    for after in range(end):
        seen = "".join(WORDS[:after])
        rest = await read_all(log, cid, after)
        assert seen + text(rest) == "".join(WORDS), after
        assert [e.id for e in rest][-1] == end and rest[-1].type == "message_end"
        assert all(e.id > after for e in rest)
        assert not any(e.type == "error" for e in rest)  # not taken for expired events
    assert await read_all(log, cid, end - 1) == [whole[-1]]
    assert text(await read_all(log, cid, len(WORDS) - 1)) == WORDS[-1]


async def test_pause_for_tool_calls_and_other_events_stay_in_place(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """A tool-call pause is not an end; at the end each message's token run merges on its own and an
    action status between them keeps its place and id."""
    cid = await conversation(aredis)
    pause = await answer(log, cid, ["a", "b", "c"], "msg_1", finish="tool_calls")
    assert (await compactor.compact(cid)).status == 0
    status = await log.append(
        cid, ActionStatusEvent(id=1, conversation_id=cid, action_id="act_1", name="t", status="succeeded")
    )
    end = await answer(log, cid, ["d", "e"], "msg_2")
    result = await compactor.compact(cid)
    assert (result.status, result.merged) == (1, 2)
    entries = await log.read(cid, 0)
    assert [(e.id, e.type) for e in entries] == [
        (3, "token"),
        (pause, "message_end"),
        (status, "action_status"),
        (end - 1, "token"),
        (end, "message_end"),
    ]
    assert text(await read_all(log, cid, 1)) == "bcde"
    assert text(await read_all(log, cid, status)) == "de"


async def test_a_later_answer_compacts_only_what_is_new(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """A second answer's compaction leaves the first's merged entry as it was."""
    cid = await conversation(aredis)
    await answer(log, cid, ["a", "b"], "msg_1")
    await compactor.compact(cid)
    first = await raw_log(aredis, cid)
    await answer(log, cid, ["c", "d", "e"], "msg_2")
    assert (await compactor.compact(cid)).rewritten == 4
    after = await raw_log(aredis, cid)
    assert after[:2] == first
    assert text(await log.read(cid, 0)) == "abcde"


async def test_compaction_racing_a_reader_mid_replay(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """A follower replaying a long answer in batches, compacted under it, still gets every token's
    text once, in order, and the end."""
    cid = await conversation(aredis)
    words = [f" w{i}" for i in range(BATCH * 2 + 50)]
    end = await answer(log, cid, words)
    follower = Follower(log, NoAnswers(), cid, heartbeat_s=30, stop=asyncio.Event())
    got: list[LogEntry] = []
    async for entry in follower.entries(0, until_end=True):
        assert entry is not None
        got.append(entry)
        if len(got) == BATCH + 20:  # the second batch is in hand; the third is read after this
            assert (await compactor.compact(cid)).status == 1
    assert text(got) == "".join(words)
    ids = [e.id for e in got]
    assert ids == sorted(set(ids)) and ids[-1] == end
    assert ids[: 2 * BATCH] == list(range(1, 2 * BATCH + 1))  # before the merge: one per token


async def test_compaction_racing_appends_keeps_every_event(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """Compactions running while the next answer is being appended lose and reorder nothing."""
    cid = await conversation(aredis)
    await answer(log, cid, [f"a{i}" for i in range(50)], "msg_1")

    async def next_answer() -> None:
        for i in range(60):
            await log.append(cid, TokenEvent(id=1, conversation_id=cid, message_id="msg_2", text=f"b{i}"))
        await log.append(
            cid, MessageEndEvent(id=1, conversation_id=cid, message_id="msg_2", finish_reason="stop")
        )

    async def compactions() -> None:
        for _ in range(20):
            await compactor.compact(cid)
            await asyncio.sleep(0)

    await asyncio.gather(next_answer(), compactions())
    await compactor.compact(cid)
    entries = await log.read(cid, 0)
    assert [e.type for e in entries] == ["token", "message_end", "token", "message_end"]
    assert text(entries) == "".join(f"a{i}" for i in range(50)) + "".join(f"b{i}" for i in range(60))
    assert [e.id for e in entries] == [50, 51, 111, 112]


async def test_failed_compaction_leaves_the_log_intact(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """A token entry the gateway did not write makes the script fail before any write: the log,
    its last id and the compaction mark are as they were."""
    cid = await conversation(aredis)
    await answer(log, cid, ["a", "b", "c"])
    key = redis_keys.event_log(cid)
    seq = await aredis.hincrby(redis_keys.conversation(cid), "seq", 1)
    await aredis.xadd(key, {"t": "token", "e": "not json", "f": ""}, id=f"0-{seq}")
    await answer(log, cid, ["d", "e"], "msg_2")
    before = await raw_log(aredis, cid)
    info = await aredis.xinfo_stream(key)
    with pytest.raises(ResponseError):
        await compactor.compact(cid)
    assert await raw_log(aredis, cid) == before
    after_info = await aredis.xinfo_stream(key)
    assert after_info["last-generated-id"] == info["last-generated-id"]
    assert await aredis.hget(redis_keys.conversation(cid), "cmp") is None


async def test_gone_conversation_is_left_alone(
    aredis: aioredis.Redis, log: StreamLog, compactor: LogCompactor
) -> None:
    """A conversation deleted meanwhile: nothing is written (no mark on a hash that would recreate it)."""
    cid = await conversation(aredis)
    await answer(log, cid, ["a", "b"])
    await aredis.delete(redis_keys.conversation(cid))
    assert (await compactor.compact(cid)).status == -1
    assert not await aredis.exists(redis_keys.conversation(cid))
    assert await aredis.xlen(redis_keys.event_log(cid)) == 3


async def test_scheduled_compaction_runs_after_the_delay(aredis: aioredis.Redis, log: StreamLog) -> None:
    """schedule() compacts once its delay has passed; close() cancels the timers not yet due."""
    cid, waiting = await conversation(aredis), await conversation(aredis)
    await answer(log, cid, ["a", "b"])
    await answer(log, waiting, ["a", "b"])
    soon = LogCompactor(aredis, delay_s=0)
    late = LogCompactor(aredis, delay_s=3600)
    soon.schedule(cid)
    late.schedule(waiting)
    while soon.pending:
        await asyncio.sleep(0.01)
    assert await aredis.xlen(redis_keys.event_log(cid)) == 2
    await late.close()
    assert late.pending == 0 and await aredis.xlen(redis_keys.event_log(waiting)) == 3
