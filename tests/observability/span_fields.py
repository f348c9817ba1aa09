"""Read a finished span's parent and attributes, which the SDK types as optional, with a clear failure."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue


def parent_span_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"span {span.name!r} has no parent"
    return span.parent.span_id


def attribute(span: ReadableSpan, key: str) -> AttributeValue:
    assert span.attributes is not None and key in span.attributes, f"span {span.name!r} has no {key!r}"
    return span.attributes[key]
