"""Redis dies in the middle of a streamed answer and comes back (AOF on, as in production): the
stream must fail cleanly, the client must be able to resume, and no accepted action may be lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest
from local_stack import processes
from tests.faults.conftest import Scenario
from tests.fixtures.gateway import Gateway, StartGateway
from tests.gateway.helpers import read_until as read_events_until
from tests.gateway.sse_client import SseEvent, SseParser
from tests.polling import eventually
from tests.redis_reads import stream_entries

SLOW_ANSWER = {"match": "story", "tokens": 400, "token_delay_ms": 15}
TICKET = {
    "match": "ticket",
    "reply": "Opening it.",
    "tool_calls": [{"name": "create_ticket", "arguments": {"title": "survives restarts"}}],
}


@pytest.fixture
def durable_redis(tmp_path: Path, output_dir: Path) -> Iterator[processes.Service]:
    """A Redis of this test alone, persisting every write (appendfsync always), on a free port."""
    service = processes.redis_server(data_dir=tmp_path, log_path=output_dir / "redis-restart.log")
    service.argv[service.argv.index("--appendonly") + 1] = "yes"
    service.argv += ["--appendfsync", "always"]
    service.start()
    yield service
    service.stop()


async def read_until(
    response: aiohttp.ClientResponse,
    parser: SseParser,
    stop: Callable[[SseEvent], bool],
    events: list[SseEvent],
) -> None:
    """Read into `events` until `stop(event)`; `events` is kept current while reading, so a stop
    condition may count what it holds (it read to the end of the stream when it was not)."""
    start = len(events)

    def done(event: SseEvent, got: list[SseEvent]) -> bool:
        events[start:] = got
        return stop(event)

    events[start:] = await read_events_until(response, parser, done)


async def stream_outcome(
    response: aiohttp.ClientResponse, parser: SseParser, events: list[SseEvent], patience_s: float = 20
) -> str:
    """How the interrupted stream ended, as the client sees it (a bound on waiting, not a timing check)."""
    try:
        await asyncio.wait_for(
            read_until(response, parser, lambda e: e.type == "message_end", events), patience_s
        )
    except TimeoutError:
        return f"hung (no end within {patience_s:.0f} s; heartbeats only)"
    except aiohttp.ClientPayloadError as exc:
        return f"connection broken mid-body ({type(exc).__name__})"
    ends = [e.type for e in events if e.type in ("error", "message_end")]
    if ends:
        return f"ended with {ends}"
    said = [c for c in parser.comments if "unavailable" in c]
    return f"closed resumably ({said[-1]!r})" if said else "closed without error or message_end"


async def open_gateway(
    start_gateway: StartGateway, script: Callable[..., Any], redis: processes.Service
) -> Gateway:
    await script([SLOW_ANSWER, TICKET])
    return await start_gateway(
        REDIS_URL=f"redis://127.0.0.1:{redis.port}/0", GATEWAY_TURN_TIMEOUT_SECONDS="60"
    )


@pytest.mark.scenario(
    "Redis restarted mid-stream",
    "redis-server SIGKILLed while an answer streams, started again 0.5 s later (AOF)",
    "the stream ends (error event or closed), requests get 503 while it is down, "
    "the action accepted before the crash is still queued after it",
)
async def test_redis_restart_mid_stream_fails_cleanly_and_keeps_actions(
    start_gateway: StartGateway,
    script: Callable[..., Any],
    durable_redis: processes.Service,
    scenario: Scenario,
) -> None:
    """The live stream ends instead of hanging, the gateway answers 503 meanwhile, the accepted action survives."""
    gateway = await open_gateway(start_gateway, script, durable_redis)
    check = aioredis.Redis.from_url(f"redis://127.0.0.1:{durable_redis.port}/0", decode_responses=True)
    try:
        ticket_cid = await gateway.create_conversation()
        async with gateway.request(
            "POST", f"/v1/conversations/{ticket_cid}/messages", json={"content": "open a ticket"}
        ) as response:
            accepted = await response.json()
        [action] = accepted["actions"]
        assert action["status"] == "queued"

        cid = await gateway.create_conversation()
        parser = SseParser()
        events: list[SseEvent] = []
        async with gateway.request(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": "tell a story"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            await read_until(response, parser, lambda e: sum(x.type == "token" for x in events) >= 10, events)
            durable_redis.kill()
            outcome = await stream_outcome(response, parser, events)
        async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
            while_down = response.status
        durable_redis.start()
        await eventually(lambda: _answers(check), "redis back")
        queued = await _queued_action_ids(check)
        scenario.observed = (
            f"stream: {outcome} after {sum(e.type == 'token' for e in events)} tokens; "
            f"GET while down: {while_down}; accepted action queued after restart: "
            f"{action['action_id'] in queued}"
        )
        assert outcome.startswith(("closed resumably", "ended with"))
        assert while_down == 503
        assert action["action_id"] in queued
    finally:
        await check.aclose()


async def _answers(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (aioredis.ConnectionError, OSError):
        return False


async def _queued_action_ids(client: aioredis.Redis) -> set[str]:
    """Action ids waiting in the outbox or on the local bus (either way: accepted and not lost)."""
    ids: set[str] = set()
    for queue in ("outbox", "actions"):
        for _id, fields in await stream_entries(client, StreamQueue(client, queue, "check").key):
            ids.add(str(ActionRequest.model_validate_json(fields["body"]).action_id))
    return ids


@pytest.mark.scenario(
    "resume after Redis is back",
    "redis-server SIGKILLed mid-answer, restarted; the client resumes with Last-Event-ID",
    "the resumed stream reaches an end (error + message_end) and the conversation takes new "
    "messages, without waiting for the turn lock to expire",
)
async def test_client_resumes_after_redis_restart(
    start_gateway: StartGateway,
    script: Callable[..., Any],
    durable_redis: processes.Service,
    scenario: Scenario,
) -> None:
    """After Redis returns, resuming the interrupted answer ends it, and the next message is accepted."""
    gateway = await open_gateway(start_gateway, script, durable_redis)
    check = aioredis.Redis.from_url(f"redis://127.0.0.1:{durable_redis.port}/0", decode_responses=True)
    try:
        cid = await gateway.create_conversation()
        parser = SseParser()
        events: list[SseEvent] = []
        async with gateway.request(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": "tell a story"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            await read_until(response, parser, lambda e: sum(x.type == "token" for x in events) >= 10, events)
            durable_redis.kill()
            await stream_outcome(response, parser, events)
        await asyncio.sleep(0.5)  # an outage of some length, not a wait for a condition
        durable_redis.start()
        await eventually(lambda: _answers(check), "redis back")
        last = max(int(e.id) for e in events if e.id)
        resumed: list[SseEvent] = []
        resume_statuses: list[int] = []
        outcome = "not resumed"

        async def resumed_once() -> bool:
            # The first command after the restart fails on a pooled connection from before it,
            # whichever request sends it: a 503 with Retry-After, which a client retries, as told.
            nonlocal outcome
            async with gateway.request(
                "GET",
                f"/v1/conversations/{cid}/events?until=end",
                headers={"Accept": "text/event-stream", "Last-Event-ID": str(last)},
            ) as response:
                resume_statuses.append(response.status)
                if response.status == 200:
                    outcome = await stream_outcome(response, SseParser(), resumed, patience_s=5)
            return response.status != 503 or len(resume_statuses) >= 5

        await eventually(resumed_once, "a resume answered other than 503")
        resumed_status = resume_statuses[-1]
        statuses: list[int] = []

        async def next_message_answered() -> bool:
            # A pooled connection from before the restart fails once (503): the client retries, as told.
            async with gateway.request(
                "POST", f"/v1/conversations/{cid}/messages", json={"content": "hello again"}
            ) as r:
                statuses.append(r.status)
            return r.status != 503 or len(statuses) >= 5

        await eventually(next_message_answered, "an answer other than 503")
        next_status = statuses[-1]
        scenario.observed = f"resume: HTTP {resume_statuses}, {outcome}; next message: HTTP {statuses}"
        assert resumed_status == 200 and outcome.startswith("ended with") and "message_end" in outcome
        assert next_status == 200
    finally:
        await check.aclose()
