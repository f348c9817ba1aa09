"""Tracing fixtures: the OpenTelemetry SDK's own in-memory exporter behind the global provider.

The global provider is process-wide and set once, so this installs one SDK provider for the
session (or adds to one already there) and clears the exporter before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter = InMemorySpanExporter()


def _install() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_test_exporter_installed", False):
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        provider._test_exporter_installed = True  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test, from the SDK's in-memory exporter."""
    _install()
    _exporter.clear()
    yield _exporter
    _exporter.clear()
