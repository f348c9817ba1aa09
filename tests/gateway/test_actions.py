"""Tool calls become durable action requests; status updates stream back; the model continues.

The gateway runs with its real action bus wiring (outbox -> relay -> local Redis Streams bus);
the test plays the function app: it takes requests off the `actions` queue and publishes status
updates through the real update sink, as the worker does.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from action_bus.factory import create_update_sink
from action_bus.local import ACTIONS_GROUP
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest, ActionResult, ActionStatus
from agent_contracts.actions import utcnow
from streaming_gateway.keys import engine_key, settings_key
from streaming_gateway.state import redis_keys
from tests.fixtures.gateway import Gateway, upstream_stats
from tests.fixtures.services import ON_BOTH
from tests.gateway.helpers import data, read_events, recording_ops
from tests.gateway.helpers import read_until as read_events_until
from tests.gateway.sse_client import SseEvent, SseParser
from tests.polling import eventually

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH

SSE = {"Accept": "text/event-stream"}
TICKET_SCRIPT = [
    {
        "match": "ticket",
        "reply": "Opening it.",
        "tool_calls": [
            {"name": "create_ticket", "arguments": {"title": "Printer on fire", "priority": "high"}}
        ],
    },
    {"match": "", "on_tool_result": True, "reply": "Done: {input}"},
]


async def take_requests(aredis: aioredis.Redis, count: int) -> list[ActionRequest]:
    """Receive `count` requests from the actions queue, as the function app's trigger would."""
    queue = StreamQueue(aredis, "actions", ACTIONS_GROUP)
    taken: list[ActionRequest] = []

    async def more() -> bool:
        for delivery in await queue.receive(10, wait_s=0.2):
            taken.append(ActionRequest.model_validate_json(delivery.body))
            await queue.ack(delivery.delivery_id)
        return len(taken) >= count

    await eventually(more, f"{count} action requests on the bus")
    return taken


async def report(
    aredis: aioredis.Redis, gateway: Gateway, request: ActionRequest, status: ActionStatus, **fields: Any
) -> None:
    update = ActionResult.queued_for(request).model_copy(
        update={"status": status, "updated_at": utcnow(), **fields}
    )
    await create_update_sink(aredis, gateway.app[settings_key]).publish_update(update)


async def read_until(response: aiohttp.ClientResponse, parser: SseParser, predicate) -> list[SseEvent]:
    return await read_events_until(response, parser, lambda event, _events: predicate(event))


async def test_tool_call_queues_action_and_result_continues_the_model(
    gateway: Gateway, script, aredis, upstream
) -> None:
    """The whole loop on one SSE stream: tool_call and queued status, the action request on the bus,
    running/succeeded statuses from the pipeline, then the model's continuation with the result."""
    await script(TICKET_SCRIPT)
    cid = await gateway.create_conversation()
    parser = SseParser()
    async with gateway.request(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={"content": "please open a ticket"},
        headers=SSE,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as response:
        first = await read_until(response, parser, lambda e: e.type == "message_end")
        assert [e.type for e in first][-3:] == ["tool_call", "action_status", "message_end"]
        call, queued, pause = (data(e) for e in first[-3:])
        assert call["name"] == "create_ticket" and call["arguments"] == {
            "title": "Printer on fire",
            "priority": "high",
        }
        assert queued["status"] == "queued" and queued["action_id"] == call["action_id"]
        assert pause["finish_reason"] == "tool_calls"

        [request] = await take_requests(aredis, 1)
        assert str(request.action_id) == call["action_id"]
        assert (
            request.name == "create_ticket" and request.user_id == "alice" and request.conversation_id == cid
        )
        assert request.idempotency_key == f"{cid}:{call['tool_call_id']}"
        assert request.agent_config_version == pause["agent_config_version"]
        assert request.trace_context["traceparent"].startswith("00-")

        # The pipeline reports queued too (as the function app does): the client already saw it once.
        await report(aredis, gateway, request, ActionStatus.queued)
        await report(aredis, gateway, request, ActionStatus.running, attempts=1)
        await report(
            aredis, gateway, request, ActionStatus.succeeded, attempts=1, result={"ticket_id": "T-42"}
        )
        rest = await read_events(response, parser=parser)

    statuses = [data(e)["status"] for e in rest if e.type == "action_status"]
    assert statuses == ["running", "succeeded"]
    assert data([e for e in rest if e.type == "action_status"][-1])["result"] == {"ticket_id": "T-42"}
    tokens = "".join(data(e)["text"] for e in rest if e.type == "token")
    assert tokens.startswith("Done:") and "T-42" in tokens
    assert data(rest[-1])["finish_reason"] == "stop"
    ids = [e.number for e in first + rest]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert stored["messages"][1]["tool_calls"][0]["id"] == call["tool_call_id"]
    assert json.loads(stored["messages"][2]["content"])["result"] == {"ticket_id": "T-42"}
    sent = (await upstream_stats(upstream))["requests"][-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert gateway.metric("gateway_actions_queued_total", {"name": "create_ticket"}) == 1


async def test_first_step_owns_the_ids_its_turn_took_and_the_continuation_claims_its_own(
    gateway: Gateway, script, aredis, monkeypatch
) -> None:
    """The turn's first step writes under the ids its begin_turn took (the turn id as the owner
    token, no claim script); the model's continuation after the action claims them itself, with its
    own token; each step lets them go at its end."""
    ops = recording_ops(gateway.app[engine_key].log, monkeypatch)
    await script(TICKET_SCRIPT)
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "open a ticket"}, headers=SSE
    ) as response:
        await read_events(response, until_end=False, stop_after=5)  # through the tool-call pause
        turn_id = (await aredis.lrange(redis_keys.messages(cid), 0, 0))[0]
        [request] = await take_requests(aredis, 1)
        await report(
            aredis, gateway, request, ActionStatus.succeeded, attempts=1, result={"ticket_id": "T-7"}
        )
        rest = await read_events(response)
    assert data(rest[-1])["finish_reason"] == "stop"
    turn_id = json.loads(turn_id)["turn_id"]
    owned = [(op, token) for op, token in ops if token]
    first = [op for op, token in owned if token == turn_id]
    assert first and first[-1] == "release" and "claim" not in first
    continuation = [(op, token) for op, token in owned if token != turn_id]
    assert continuation[0][0] == "claim" and continuation[-1][0] == "release"
    assert len({token for _, token in continuation}) == 1
    assert [op for op, _ in owned].count("claim") == 1
    assert not await aredis.exists(redis_keys.log_owner(cid))


async def test_duplicate_final_update_continues_once(gateway: Gateway, script, aredis, upstream) -> None:
    """A final update delivered twice (a replayed message) shows once and continues the model once."""
    await script(TICKET_SCRIPT)
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "open a ticket"}, headers=SSE
    ) as response:
        await read_events(response, until_end=False, stop_after=5)  # through the tool-call pause
    [request] = await take_requests(aredis, 1)
    await report(aredis, gateway, request, ActionStatus.succeeded, attempts=1, result={"ticket_id": "T-1"})
    await report(
        aredis,
        gateway,
        request,
        ActionStatus.succeeded,
        attempts=1,
        result={"ticket_id": "T-1"},
        replay_count=1,
    )  # a different bus message id: the bus delivers it again

    async def answered() -> bool:
        stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
        return stored["messages"][-1]["role"] == "assistant" and stored["message_count"] == 4

    await eventually(answered, "the continuation")
    await eventually(lambda: _consumed(gateway), "both updates to be consumed")
    async with gateway.request("GET", f"/v1/conversations/{cid}/events?after=0&until=end", headers=SSE) as r:
        events = await read_events(r)
    assert [data(e)["status"] for e in events if e.type == "action_status"] == ["queued", "succeeded"]
    stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "tool", "assistant"]
    tool_requests = [
        r for r in (await upstream_stats(upstream))["requests"] if r["messages"][-1]["role"] == "tool"
    ]
    assert len(tool_requests) == 1


async def _consumed(gateway: Gateway) -> bool:
    return gateway.metric("gateway_action_updates_total", {"status": "succeeded"}) == 2


async def test_invalid_tool_arguments_fail_locally_and_continue(gateway: Gateway, script, aredis) -> None:
    """A call that does not fit its tool's schema is never queued: it fails at once with the reason,
    and the model continues with that failure."""
    await script(
        [
            {
                "match": "ticket",
                "tool_calls": [{"name": "create_ticket", "arguments": {"priority": "someday"}}],
            },
            {"match": "", "on_tool_result": True, "reply": "Could not: {input}"},
        ]
    )
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "open a ticket"}, headers=SSE
    ) as response:
        events = await read_events(response)
    failed = [data(e) for e in events if e.type == "action_status"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert "arguments.title is required" in failed[0]["error"]
    assert data(events[-1])["finish_reason"] == "stop"
    assert "required" in "".join(data(e)["text"] for e in events if e.type == "token")
    assert await aredis.xlen("bus:{outbox}") == 0


async def test_cancel_while_waiting_for_actions(gateway: Gateway, script, aredis, upstream) -> None:
    """Cancelling while an action runs ends the turn; the late result is recorded but not continued."""
    await script(TICKET_SCRIPT)
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "open a ticket"}, headers=SSE
    ) as response:
        await read_events(response, until_end=False, stop_after=5)
    [request] = await take_requests(aredis, 1)
    async with gateway.request("POST", f"/v1/conversations/{cid}/cancel") as response:
        assert response.status == 202
    await report(aredis, gateway, request, ActionStatus.failed, attempts=3, error="backend said no")

    async def tool_result_stored() -> bool:
        stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
        return stored["messages"][-1]["role"] == "tool"

    await eventually(tool_result_stored, "the tool result to be stored")
    requests_seen = len((await upstream_stats(upstream))["requests"])
    assert requests_seen == 1  # no continuation
    async with gateway.request("GET", f"/v1/conversations/{cid}/events?after=0", headers=SSE) as r:
        events = await read_events(r, until_end=False, stop_after=7)
    assert [e.type for e in events][-2:] == ["message_end", "action_status"]
    assert data(events[-2])["finish_reason"] == "cancelled" and data(events[-1])["status"] == "failed"
