"""W3C trace context across the action bus: one trace from the user's turn to the Cosmos write.

The gateway injects `traceparent`/`tracestate` into `ActionRequest.trace_context` inside its
publish span; the function app extracts it to parent its orchestration-start and activity
spans. On Service Bus the same pair also rides in the message's application properties
(plus `Diagnostic-Id`, which the Azure SDKs read), so tools that look there see the trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_w3c = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


def inject_trace_context(ctx: otel_context.Context | None = None) -> dict[str, str]:
    """The current (or given) span's W3C headers; empty when there is no valid span."""
    carrier: dict[str, str] = {}
    _w3c.inject(carrier, context=ctx)
    return carrier


def extract_trace_context(carrier: Mapping[str, Any] | None) -> otel_context.Context:
    """A context whose parent is the span named in the carrier (or an empty one if none/invalid)."""
    clean: dict[str, str] = {}
    for key, value in (carrier or {}).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.lower() in TRACE_HEADERS and isinstance(value, (str, bytes)):
            clean[name.lower()] = value.decode() if isinstance(value, bytes) else value
    return _w3c.extract(clean)


def to_application_properties(trace_context: Mapping[str, str]) -> dict[str, str]:
    """Service Bus application properties carrying the trace context."""
    props = {key: value for key, value in trace_context.items() if key in TRACE_HEADERS}
    if "traceparent" in props:
        props["Diagnostic-Id"] = props["traceparent"]
    return props


def from_application_properties(properties: Mapping[Any, Any] | None) -> dict[str, str]:
    """The trace context from received application properties (keys and values may be bytes)."""
    found: dict[str, str] = {}
    for key, value in (properties or {}).items():
        name = (key.decode() if isinstance(key, bytes) else str(key)).lower()
        text = value.decode() if isinstance(value, bytes) else value
        if not isinstance(text, str):
            continue
        if name in TRACE_HEADERS:
            found[name] = text
        elif name == "diagnostic-id" and "traceparent" not in found:
            found["traceparent"] = text
    return found


@contextmanager
def producer_span(
    name: str, attributes: Mapping[str, Any] | None = None, tracer_name: str = "agent.bus"
) -> Iterator[tuple[Span, dict[str, str]]]:
    """A PRODUCER span for publishing a message, with the trace context to put in it."""
    tracer = trace.get_tracer(tracer_name)
    with tracer.start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes=dict(attributes or {})
    ) as span:
        yield span, inject_trace_context()


@contextmanager
def consumer_span(
    name: str,
    carrier: Mapping[str, Any] | None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
    tracer_name: str = "agent.bus",
) -> Iterator[Span]:
    """A span continuing the trace named in `carrier` (a new trace when it names none)."""
    tracer = trace.get_tracer(tracer_name)
    parent = extract_trace_context(carrier)
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {})
    ) as span:
        yield span


def mark_error(span: Span, exc: BaseException | None = None, description: str | None = None) -> None:
    """Record a failure on a span (the span keeps going; the caller decides what happens next)."""
    if exc is not None:
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, description or (type(exc).__name__ if exc else None)))
