"""A turn's Redis traffic, counted by MONITOR: its setup is one script of the conversation's (lock,
messages, the follower's watcher lease, history, the log's ids for the producer, and a new
conversation itself) and one of the
user's (the request's count, the stream slot, a new conversation's index entry), sent at once for
a new conversation; its end is another (message, message_end, the lock); and a follower opened for
the turn reads nothing from the log: the producer hands it the entries."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis

from agent_contracts.events import ActionStatusEvent
from agent_contracts.redis_connection import connect
from streaming_gateway.api.following import follow
from streaming_gateway.keys import engine_key, retention_key
from streaming_gateway.state import redis_keys
from streaming_gateway.state.client_streams import StreamHandle
from streaming_gateway.state.stream_log import StreamLog
from tests.fixtures.gateway import Gateway, StartGateway, make_token
from tests.fixtures.services import ON_SERVER
from tests.gateway.helpers import data, read_events, text_of
from tests.polling import eventually

# MONITOR shows one server's commands: the cluster runs take these scripts in test_key_slots and
# the rest of the suite.
pytestmark = ON_SERVER

SSE = {"Accept": "text/event-stream"}


@dataclass
class Monitor:
    """Every command Redis receives while the block runs, as MONITOR reports it."""

    commands: list[dict[str, Any]] = field(default_factory=list)

    def of(self, cid: str) -> list[list[str]]:
        """The client commands (not those a script runs) naming this conversation's keys, split into words."""
        tag = f"{{{cid}}}"
        return [
            c["command"].split(" ")
            for c in self.commands
            if c["client_type"] != "lua" and tag in c["command"]
        ]

    def of_user(self, user: str) -> list[list[str]]:
        """The client commands naming the user's keys (rate limit, stream slots, conversation index)."""
        return [
            c["command"].split(" ")
            for c in self.commands
            if c["client_type"] != "lua" and f"{redis_keys.PREFIX}:user:{{{user}}}" in c["command"]
        ]

    def named(self, prefix: str) -> list[str]:
        return [c["command"] for c in self.commands if c["client_type"] != "lua" and prefix in c["command"]]


@contextlib.asynccontextmanager
async def monitoring(redis_url: str) -> AsyncIterator[Monitor]:
    recorded = Monitor()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    ready = asyncio.Event()

    async def record() -> None:
        async with client.monitor() as monitor:
            ready.set()
            while True:
                recorded.commands.append(await monitor.next_command())

    task = asyncio.create_task(record())
    await ready.wait()
    try:
        yield recorded
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


def scripts(commands: list[list[str]], cid: str) -> Counter[str]:
    """The conversation's EVALSHA calls by what their keys say they are."""
    kinds: Counter[str] = Counter()
    for words in commands:
        if words[0].upper().strip('"') != "EVALSHA":
            continue
        nkeys = int(words[2].strip('"'))
        keys = {w.strip('"') for w in words[3 : 3 + nkeys]}
        # The log's write script (state/stream_log.py _WRITE): ARGV[4] is its op.
        log_write = {
            redis_keys.conversation(cid),
            redis_keys.event_log(cid),
            redis_keys.log_owner(cid),
            redis_keys.log_deferred(cid),
        }
        op = words[3 + nkeys + 3].strip('"') if log_write <= keys else None
        if redis_keys.watchers(cid) in keys:
            kinds["begin_turn"] += 1
        elif op is not None and redis_keys.busy(cid) in keys:
            kinds["end_turn"] += 1
        elif op == "claim":
            kinds["claim"] += 1  # a producer takes the log's ids itself (a continuation step)
        elif op is not None and keys == log_write:
            kinds["append"] += 1
        elif keys == {redis_keys.conversation(cid), redis_keys.messages(cid), redis_keys.event_log(cid)}:
            kinds["stateless_ttl"] += 1  # state/retention.py, after a stateless call's answer
        else:
            kinds["other"] += 1
    return kinds


def names(commands: list[list[str]]) -> Counter[str]:
    return Counter(words[0].upper().strip('"') for words in commands)


async def settled(monitor: Monitor, cid: str) -> None:
    """The follower's lease is removed after its stream ends: wait for that last command."""

    async def removed() -> bool:
        return any(
            w[0].upper().strip('"') == "ZREM" and redis_keys.watchers(cid) in w[1] for w in monitor.of(cid)
        )

    await eventually(removed, "the watcher lease's removal")


def check_turn(
    monitor: Monitor,
    cid: str,
    *,
    reads: dict[str, int],
    stays: bool = False,
    stays_after: int = 0,
    stateless: bool = False,
) -> None:
    """One script starts the turn and takes the log's ids for its producer (no claim of its own),
    one ends it, token appends between; nothing else names the conversation but the `reads` of the conversation before it and the
    lease's removal. A follower
    that `stays` after the answer (the WebSocket's) has the pod's reader read the conversation once
    the producer is done (an XREAD BLOCK); none reads it during the turn."""
    commands = monitor.of(cid)
    kinds = scripts(commands, cid)
    assert kinds["begin_turn"] == 1 and kinds["end_turn"] == 1 and kinds["other"] == 0, commands
    assert kinds["claim"] == 0, commands
    assert kinds["append"] >= 1, commands
    # After its end a stateless call's keys are cut to their short TTL, in one more script.
    assert kinds["stateless_ttl"] == (1 if stateless else 0), commands
    counted = names(commands)
    # An answer that outlived a watchdog tick wrote the producing lease (and checked for a cancel
    # and for followers in that pipeline): only then is the lease deleted at its end.
    ticks = sum(1 for w in commands if w[0].upper().strip('"') == "SET" and redis_keys.producing(cid) in w[1])
    deletes = sum(
        1 for w in commands if w[0].upper().strip('"') == "DEL" and redis_keys.producing(cid) in w[1]
    )
    assert deletes == (1 if ticks else 0), commands
    reader_reads = [
        w for w in commands if w[0].upper().strip('"') == "XREAD" and "BLOCK" in (x.upper() for x in w)
    ]
    assert stays or not reader_reads, reader_reads
    for name, n in (
        ("SET", ticks),
        ("GET", ticks),
        ("ZCOUNT", ticks),
        ("DEL", deletes),
        ("XREAD", len(reader_reads)),
    ):
        counted[name] -= n
    expected = Counter({"EVALSHA": sum(kinds.values()), "ZREM": 1}) + Counter(reads)
    # No replay read, no history read, no separate lease.
    assert +counted == expected, commands
    if stays:
        # The reader reads the conversation after the answer's last entry, never what the hand-off gave.
        for words in reader_reads:
            streams = [w.strip('"') for w in words[[w.upper() for w in words].index("STREAMS") + 1 :]]
            keys, ids = streams[: len(streams) // 2], streams[len(streams) // 2 :]
            after = ids[keys.index(redis_keys.event_log(cid))]
            assert int(after.split("-")[1]) >= stays_after, words
    else:
        # Nobody follows the conversation once the answer ended: the pod's reader is never woken for it.
        assert not monitor.named(f"{redis_keys.PREFIX}:hub:"), monitor.named(f"{redis_keys.PREFIX}:hub:")


OWNED = {"HGETALL": 1, "LLEN": 1}  # the conversation read that authorises the request


def check_user_steps(monitor: Monitor, user: str, cid: str, *, new: bool) -> None:
    """The user's keys see one script before the answer (the request's count, the stream slot and,
    for a new conversation, its index entry) and the slot's release after it: no other command."""
    commands = monitor.of_user(user)
    assert names(commands) == Counter({"EVALSHA": 1, "ZREM": 1}), commands
    admit = next(w for w in commands if w[0].upper().strip('"') == "EVALSHA")
    keys = {w.strip('"') for w in admit[3 : 3 + int(admit[2].strip('"'))]}
    assert keys == {
        redis_keys.user_rate(user, int(admit[3].strip('"').rsplit(":", 1)[1])),
        redis_keys.user_streams(user),
        redis_keys.user_conversations(user),
    }, admit
    assert (cid in " ".join(admit)) == new, admit


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """Log compaction off: its script, a while after an answer's end, is not part of the turn."""
    return await start_gateway(GATEWAY_LOG_COMPACTION="false")


@pytest.fixture
async def warm(gateway: Gateway, script) -> None:
    """The gateway after one turn and one stateless call: Redis knows its scripts (a first call
    shows twice in MONITOR: the EVALSHA Redis refuses, then again after SCRIPT LOAD)."""
    await script([{"match": "", "reply": "warm"}])
    cid = await gateway.create_conversation("warm-up")
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", "warm-up", json={"content": "hi"}, headers=SSE
    ) as response:
        await read_events(response)
    async with gateway.request(
        "POST",
        "/v1/chat/completions",
        "warm-up",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        stateless = response.headers["X-Conversation-Id"]
    retention = gateway.app[retention_key]
    await eventually(lambda: retention.shorten(stateless), "the stateless TTL's script loaded")


async def test_sse_turn_is_one_script_to_start_and_one_to_end(
    gateway: Gateway, warm: None, script, redis_url: str
) -> None:
    """POST .../messages over SSE: begin_turn and the end script are the turn's only scripts but the
    token appends, and the follower reads nothing from the log."""
    await script([{"match": "", "reply": "one two three four"}])
    cid = await gateway.create_conversation()
    async with monitoring(redis_url) as monitor:
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=SSE
        ) as response:
            events = await read_events(response)
        await settled(monitor, cid)
    assert text_of(events) == "one two three four"
    assert [int(e.id) for e in events if e.id] == list(range(1, len(events) + 1))
    check_turn(monitor, cid, reads=OWNED)
    # Before the model request: the conversation read, the user's script, begin_turn (from four).
    check_user_steps(monitor, "alice", cid, new=False)
    stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", "hi"),
        ("assistant", "one two three four"),
    ]


async def test_openai_turn_is_one_script_to_start_and_one_to_end(
    gateway: Gateway, warm: None, script, redis_url: str
) -> None:
    """The OpenAI API's streamed completion takes its turn the same way; its new conversation is
    written by begin_turn, its index entry by the user's script: two scripts and nothing else before
    the model request (from five round trips: rate limit, conversation, index, stream slot, turn)."""
    await script([{"match": "", "reply": "from the api"}])
    async with (
        monitoring(redis_url) as monitor,
        openai.AsyncOpenAI(base_url=gateway.url("/v1"), api_key=make_token(), max_retries=0) as client,
    ):
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in raw.parse() if chunk.choices])
        cid = raw.headers["X-Conversation-Id"]
        await settled(monitor, cid)

        async def cut() -> int:
            return scripts(monitor.of(cid), cid)["stateless_ttl"]

        await eventually(cut, "the stateless TTL's script")
    assert text == "from the api"
    check_turn(monitor, cid, reads={}, stateless=True)
    check_user_steps(monitor, "alice", cid, new=True)
    # Both scripts in one pipeline: on one connection, one right after the other.
    setup = [
        c
        for c in monitor.commands
        if c["client_type"] != "lua"
        and c["command"].upper().startswith("EVALSHA")
        and ("gw:user:{alice}" in c["command"] or redis_keys.watchers(cid) in c["command"])
    ]
    assert len(setup) == 2 and setup[0]["client_port"] == setup[1]["client_port"], setup
    sent = [c for c in monitor.commands if c["client_type"] != "lua"]  # a script's own commands apart
    first, second = sent.index(setup[0]), sent.index(setup[1])
    assert second == first + 1, sent[first : second + 1]


async def test_websocket_turn_is_one_script_to_start_and_one_to_end(
    gateway: Gateway, warm: None, script, redis_url: str
) -> None:
    """A message frame on the WebSocket takes its turn the same way; the follower stays for the next."""
    await script([{"match": "", "reply": "over the socket"}])
    cid = await gateway.create_conversation()
    token = make_token()
    async with (
        monitoring(redis_url) as monitor,
        gateway.session.ws_connect(gateway.url("/v1/ws"), headers={"Authorization": f"Bearer {token}"}) as ws,
    ):
        await ws.send_json({"type": "message", "content": "hi", "conversation_id": cid})
        frames = [await ws.receive_json(timeout=15)]
        while frames[-1].get("type") != "message_end":
            frames.append(await ws.receive_json(timeout=15))
        await ws.close()
        await settled(monitor, cid)
    assert frames[0]["type"] == "ack"
    assert "".join(f["text"] for f in frames if f.get("type") == "token") == "over the socket"
    assert [f["id"] for f in frames[1:]] == list(range(1, len(frames)))
    check_turn(monitor, cid, reads=OWNED, stays=True, stays_after=frames[-1]["id"])


async def test_entry_written_elsewhere_during_a_turn_reaches_the_follower_once(
    gateway: Gateway, warm: None, script, redis_url: str
) -> None:
    """An entry another pod appends mid-answer shows as a gap in the hand-off and is read from the
    log: the client gets every event once, ids increasing without a hole."""
    await script([{"match": "", "tokens": 30, "token_delay_ms": 20}])
    cid = await gateway.create_conversation()
    other = await connect(redis_url, decode_responses=True)
    other_pod = StreamLog(other, maxlen=10_000, ttl_s=600)
    try:
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
        ) as response:
            first = await read_events(response, stop_after=3)
            await other_pod.append(
                cid, ActionStatusEvent(id=1, conversation_id=cid, action_id="a1", name="x", status="queued")
            )
            rest = await read_events(response)
    finally:
        await other_pod.close()
        await other.aclose()
    events = first + rest
    ids = [int(e.id) for e in events if e.id]
    assert ids == list(range(1, len(ids) + 1))
    assert [data(e)["action_id"] for e in events if e.type == "action_status"] == ["a1"]
    assert len([e for e in events if e.type == "token"]) == 30
    assert json.loads(events[-1].data)["finish_reason"] == "stop"


async def test_busy_conversation_takes_no_lease(gateway: Gateway, script, aredis: aioredis.Redis) -> None:
    """A turn refused as busy takes no watcher lease and leaves the answer in progress alone."""
    await script([{"match": "", "tokens": 50, "token_delay_ms": 20}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "first"}, headers=SSE
    ) as first:
        await read_events(first, stop_after=1)
        async with gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "second"}, headers=SSE
        ) as refused:
            assert refused.status == 409 and (await refused.json())["error"]["code"] == "conversation_busy"
        assert await aredis.zcard(redis_keys.watchers(cid)) == 1
        rest = await read_events(first)
    assert len([e for e in rest if e.type == "token"]) == 49


async def test_lease_taken_for_a_turn_is_removed_even_if_its_start_never_returned(
    gateway: Gateway, aredis: aioredis.Redis
) -> None:
    """Once a follower has given its lease to a turn's script, ending the follower removes it even
    when the script's answer never came back to it (its request was cancelled meanwhile): no lease
    is left to keep an answer nobody follows running."""
    engine = gateway.app[engine_key]
    cid = await gateway.create_conversation()
    handle = StreamHandle("sse", "alice", "stream_test")
    async with follow(gateway.app, handle, cid, turn_from=0) as follower:
        # The turn's script runs with the follower's lease; its answer is not handed back.
        await engine.store.begin_turn(
            cid,
            "turn_test",
            [],
            max_messages=100,
            busy_ttl_s=60,
            history=0,
            watcher=follower.lease_for_turn(),
        )
        assert await aredis.zcard(redis_keys.watchers(cid)) == 1

    async def removed() -> bool:
        return await aredis.zcard(redis_keys.watchers(cid)) == 0

    await eventually(removed, "the lease's removal")
