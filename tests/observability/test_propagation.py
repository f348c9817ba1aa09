"""Trace context across the action bus: inject, carry in an ActionRequest, extract, continue."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agent_contracts import ActionRequest
from observability import (
    consumer_span,
    extract_trace_context,
    from_application_properties,
    inject_trace_context,
    producer_span,
    to_application_properties,
)
from tests.observability.span_fields import parent_span_id
from tests.redis_reads import stream_entries


def _request(trace_context: dict[str, str]) -> ActionRequest:
    return ActionRequest(
        idempotency_key="k-1",
        conversation_id="c-1",
        user_id="u-1",
        name="create_ticket",
        arguments={"title": "t"},
        agent_config_version="default@0123456789ab",
        trace_context=trace_context,
    )


def test_inject_outside_any_span_gives_nothing(spans: InMemorySpanExporter) -> None:
    """With no current span there is no trace context to send."""
    assert inject_trace_context() == {}


def test_producer_span_injects_its_own_context(spans: InMemorySpanExporter) -> None:
    """The carrier names the producer span as parent, in W3C traceparent form."""
    with producer_span("publish create_ticket") as (span, carrier):
        context = span.get_span_context()
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert version == "00"
    assert trace_id == format(context.trace_id, "032x")
    assert span_id == format(context.span_id, "016x")
    assert int(flags, 16) & 0x01  # sampled
    [finished] = spans.get_finished_spans()
    assert finished.kind is SpanKind.PRODUCER


async def test_one_trace_spans_gateway_bus_and_worker(
    spans: InMemorySpanExporter, aredis: aioredis.Redis
) -> None:
    """Turn -> publish -> a real Redis stream -> orchestration -> activity -> Cosmos write share one trace."""
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /v1/conversations/{id}/messages", kind=SpanKind.SERVER):
        with producer_span("actions publish") as (_, carrier):
            await aredis.xadd("actions", {"body": _request(carrier).to_json()})

    # The worker side: nothing shared with the gateway but the message itself.
    _, fields = (await stream_entries(aredis, "actions"))[0]
    received = ActionRequest.model_validate_json(fields["body"])
    with consumer_span("orchestration start", received.trace_context):
        pass
    with consumer_span("activity dispatch", received.trace_context, kind=SpanKind.INTERNAL):
        with tracer.start_as_current_span("cosmos upsert action_results", kind=SpanKind.CLIENT):
            pass

    finished = {span.name: span for span in spans.get_finished_spans()}
    assert set(finished) == {
        "POST /v1/conversations/{id}/messages",
        "actions publish",
        "orchestration start",
        "activity dispatch",
        "cosmos upsert action_results",
    }
    assert len({span.context.trace_id for span in finished.values()}) == 1
    publish = finished["actions publish"]
    assert parent_span_id(publish) == finished["POST /v1/conversations/{id}/messages"].context.span_id
    assert parent_span_id(finished["orchestration start"]) == publish.context.span_id
    assert finished["orchestration start"].kind is SpanKind.CONSUMER
    assert (
        parent_span_id(finished["cosmos upsert action_results"])
        == finished["activity dispatch"].context.span_id
    )


def test_garbage_trace_context_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    """A malformed traceparent is ignored: the consumer starts a fresh root span, no crash."""
    with consumer_span("activity dispatch", {"traceparent": "not-a-trace", "tracestate": 7}) as span:
        assert span.get_span_context().is_valid
    [finished] = spans.get_finished_spans()
    assert finished.parent is None


def test_extract_ignores_unrelated_keys(spans: InMemorySpanExporter) -> None:
    """Only traceparent/tracestate are read from a carrier; other keys cannot leak into context."""
    with producer_span("publish") as (_, carrier):
        pass
    noisy = {**carrier, "Authorization": "Bearer x", "baggage": "user=alice"}
    parent = trace.get_current_span(extract_trace_context(noisy)).get_span_context()
    assert format(parent.trace_id, "032x") == carrier["traceparent"].split("-")[1]


def test_application_properties_round_trip_as_service_bus_delivers_them(spans: InMemorySpanExporter) -> None:
    """Service Bus hands application properties back with bytes keys and values; they still parse."""
    with producer_span("publish") as (_, carrier):
        pass
    properties = to_application_properties({**carrier, "tracestate": "vendor=1"})
    assert properties["Diagnostic-Id"] == carrier["traceparent"]
    as_received = {key.encode(): value.encode() for key, value in properties.items()}
    assert from_application_properties(as_received) == {
        "traceparent": carrier["traceparent"],
        "tracestate": "vendor=1",
    }


def test_diagnostic_id_alone_is_enough(spans: InMemorySpanExporter) -> None:
    """A message stamped only by the Azure SDK (Diagnostic-Id) still continues the trace."""
    with producer_span("publish") as (_, carrier):
        pass
    assert from_application_properties({b"Diagnostic-Id": carrier["traceparent"].encode()}) == {
        "traceparent": carrier["traceparent"]
    }


def test_trace_context_survives_the_wire_format(spans: InMemorySpanExporter) -> None:
    """ActionRequest's camelCase JSON keeps the trace context byte for byte."""
    with producer_span("publish") as (_, carrier):
        pass
    wire = json.loads(_request(carrier).to_json())
    assert wire["traceContext"] == carrier
