"""Client disconnect and explicit cancel stop the model request at once; errors end cleanly."""

from __future__ import annotations

from tests.fixtures.gateway import Gateway, StartGateway, upstream_stats
from tests.fixtures.services import ON_BOTH
from tests.gateway.helpers import data, read_events
from tests.polling import eventually

#: On the single server and on the 3-node cluster (tests/fixtures/services.py).
pytestmark = ON_BOTH

SSE = {"Accept": "text/event-stream"}
LONG = [{"match": "", "tokens": 2000, "token_delay_ms": 10}]


async def final_event(gateway: Gateway, cid: str) -> dict:
    async with gateway.request("GET", f"/v1/conversations/{cid}/events?after=0&until=end", headers=SSE) as r:
        return data((await read_events(r))[-1])


async def test_client_disconnect_cancels_upstream(gateway: Gateway, script, upstream) -> None:
    """Closing the SSE connection mid-answer closes the upstream request (nobody pays for unread tokens)."""
    await script(LONG)
    cid = await gateway.create_conversation()
    response = await gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    )
    await read_events(response, stop_after=3)
    response.close()

    async def upstream_cancelled() -> bool:
        stats = await upstream_stats(upstream)
        return stats["streams_cancelled"] == 1 and stats["active_streams"] == 0

    await eventually(upstream_cancelled, "the upstream stream to be cancelled")
    end = await final_event(gateway, cid)
    assert end["type"] == "message_end" and end["finish_reason"] == "cancelled"
    assert gateway.metric("gateway_upstream_cancellations_total", {"reason": "abandoned"}) == 1
    stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
    assert (
        stored["messages"][-1]["role"] == "assistant"
        and stored["messages"][-1]["finish_reason"] == "cancelled"
    )


async def test_cancel_endpoint_stops_the_answer(gateway: Gateway, script, upstream) -> None:
    """POST /cancel ends the answer with finish_reason cancelled; the conversation takes messages again."""
    await script(LONG)
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        first = await read_events(response, stop_after=2)
        async with gateway.request("POST", f"/v1/conversations/{cid}/cancel") as cancel:
            assert cancel.status == 202 and (await cancel.json())["cancelled"] is True
        rest = await read_events(response)
    assert first[0].type == "token"
    assert rest[-1].type == "message_end" and data(rest[-1])["finish_reason"] == "cancelled"
    await eventually(lambda: _cancelled(upstream), "the upstream stream to be cancelled")
    await script([{"match": "", "reply": "fresh"}])
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "again"}
    ) as response:
        assert response.status == 200 and (await response.json())["content"] == "fresh"
    async with gateway.request("POST", f"/v1/conversations/{cid}/cancel") as cancel:
        assert cancel.status == 200 and (await cancel.json())["cancelled"] is False


async def _cancelled(upstream) -> bool:
    return (await upstream_stats(upstream))["streams_cancelled"] == 1


async def test_cancel_reaches_the_pod_running_the_answer(
    start_gateway: StartGateway, script, upstream
) -> None:
    """A cancel sent to another pod stops the answer on the pod producing it, also within the
    answer's first second (before that pod's watchdog first renews `producing`): the model request
    is cancelled, and the turn is not freed under the running answer (one message_end)."""
    pod_a = await start_gateway(GATEWAY_ORPHAN_GRACE_SECONDS="30")
    pod_b = await start_gateway()
    await script(LONG)
    cid = await pod_a.create_conversation()
    async with pod_a.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        await read_events(response, stop_after=2)
        async with pod_b.request("POST", f"/v1/conversations/{cid}/cancel") as cancel:
            assert cancel.status == 202
        rest = await read_events(response)
    assert data(rest[-1])["finish_reason"] == "cancelled"
    await eventually(lambda: _cancelled(upstream), "the upstream stream to be cancelled")
    async with pod_b.request("GET", f"/v1/conversations/{cid}/events?after=0&until=end", headers=SSE) as r:
        ends = [e for e in await read_events(r) if e.type == "message_end"]
    assert len(ends) == 1


async def test_upstream_error_becomes_error_event_and_clean_end(gateway: Gateway, script) -> None:
    """An upstream 500 becomes an error event and a message_end, and the stream closes."""
    await script([{"match": "", "error": {"status": 500, "message": "boom"}}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=SSE
    ) as response:
        events = await read_events(response)
        assert await response.content.read() == b""  # closed after the end
    assert [e.type for e in events] == ["error", "message_end"]
    error = data(events[0])
    assert error["code"] == "upstream_rejected" and error["retryable"] is True and "500" in error["message"]
    assert data(events[1])["finish_reason"] == "error"
    assert gateway.metric("gateway_stream_errors_total", {"kind": "upstream_rejected"}) == 1


async def test_upstream_drop_mid_answer_ends_with_error(gateway: Gateway, script) -> None:
    """An upstream that vanishes mid-answer yields the tokens so far, an error event and an end."""
    await script([{"match": "", "tokens": 20, "drop_after": 5}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=SSE
    ) as response:
        events = await read_events(response)
    assert [e.type for e in events][-2:] == ["error", "message_end"]
    assert len([e for e in events if e.type == "token"]) == 5
    assert data(events[-2])["retryable"] is True


async def test_unreachable_upstream_ends_with_error(start_gateway: StartGateway) -> None:
    """With nothing listening at OPENAI_BASE_URL the answer ends with an upstream_unavailable error."""
    from local_stack.processes import free_port

    gateway = await start_gateway(
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1", LLM_TIMEOUT_SECONDS="2"
    )
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=SSE
    ) as response:
        events = await read_events(response)
    assert [e.type for e in events] == ["error", "message_end"]
    assert data(events[0])["code"] == "upstream_unavailable"


async def test_slow_upstream_times_out_with_error_event(start_gateway: StartGateway, script) -> None:
    """A model that goes silent longer than LLM_TIMEOUT_SECONDS ends the answer with upstream_timeout."""
    gateway = await start_gateway(LLM_TIMEOUT_SECONDS="1")
    await script([{"match": "", "reply": "too late", "first_token_delay_ms": 4000}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=SSE
    ) as response:
        events = await read_events(response)
    assert [e.type for e in events] == ["error", "message_end"]
    assert data(events[0])["code"] == "upstream_timeout" and data(events[0])["retryable"] is True


async def test_answer_continues_while_someone_still_follows(gateway: Gateway, script, upstream) -> None:
    """One of two followers leaving does not stop the answer: the other gets it to the end."""
    await script([{"match": "", "tokens": 100, "token_delay_ms": 5}])
    cid = await gateway.create_conversation()
    async with gateway.request("GET", f"/v1/conversations/{cid}/events?until=end", headers=SSE) as watcher:
        await watcher.content.readuntil(b"\n\n")  # following before the answer starts
        sender = await gateway.request(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
        )
        await read_events(sender, stop_after=3)
        sender.close()
        events = await read_events(watcher)
    assert data(events[-1])["finish_reason"] == "stop"
    assert len([e for e in events if e.type == "token"]) == 100
    assert (await upstream_stats(upstream))["streams_cancelled"] == 0
