"""One trace across both deployables: the gateway's queue span -> the bus (Redis Streams) -> the
function app's receive span, dispatch and Cosmos writes, run by the local worker against the
Cosmos DB server and the sample backend."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from action_bus.local import RedisStreamsActionBus
from action_bus.outbox import Outbox
from agent_contracts import ActionStatus
from function_app.runtime import Runtime
from function_app.worker.service import Worker
from observability import producer_span
from tests.function_app.helpers import final_result, make_request, worker_tick
from tests.observability.span_fields import attribute, parent_span_id
from tests.polling import eventually


async def test_action_trace_continues_from_gateway_to_cosmos(
    runtime: Runtime, aredis: aioredis.Redis, backend: TestServer, spans: InMemorySpanExporter
) -> None:
    """Receive, dispatch and every Cosmos write share the queue span's trace; receive is its child."""
    with producer_span("action create_ticket queue") as (queue_span, carrier):
        request = make_request(trace_context=carrier)
        outbox = Outbox(aredis, RedisStreamsActionBus(aredis, runtime.settings.servicebus_actions_queue))
        assert await outbox.accept(request)
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.run_relay(stop))
    worker = Worker(aredis, runtime)
    tick = worker_tick(worker)

    result = await eventually(final_result(runtime, request), tick=tick)
    stop.set()
    await relay
    assert result.status is ActionStatus.succeeded

    trace_id = queue_span.get_span_context().trace_id
    finished = [span for span in spans.get_finished_spans() if span.context.trace_id == trace_id]
    names = [span.name for span in finished]
    receive = next(span for span in finished if span.name == "actions receive create_ticket")
    assert receive.kind is SpanKind.CONSUMER
    assert parent_span_id(receive) == queue_span.get_span_context().span_id
    assert attribute(receive, "agent.start_outcome") == "started"
    assert "dispatch create_ticket" in names
    writes = [span for span in finished if span.name == "cosmos upsert action_results"]
    assert {attribute(span, "agent.action_status") for span in writes} >= {"queued", "running", "succeeded"}
    assert all(span.kind is SpanKind.CLIENT for span in writes)
