"""Observability shared by both deployables: tracing, trace context on the bus, structured logs.

telemetry = setup_observability("streaming_gateway", settings)   # at process start
...
telemetry.shutdown()                                              # at exit: flush spans
"""

from __future__ import annotations

import logging
from typing import Any, TextIO

from observability.config import TelemetryConfig
from observability.context import bind, log_context
from observability.errors import ObservabilityError, TelemetryConfigError
from observability.logs import (
    ContextFilter,
    JsonFormatter,
    RedactionFilter,
    configure_logging,
    install_filters,
)
from observability.propagation import (
    consumer_span,
    extract_trace_context,
    from_application_properties,
    inject_trace_context,
    mark_error,
    producer_span,
    to_application_properties,
)
from observability.redaction import redact, redact_text
from observability.tracing import Telemetry, setup_telemetry


def setup_observability(
    service_name: str, settings: Any = None, *, stream: TextIO | None = None
) -> Telemetry:
    """Tracing first (Azure Monitor adds its log handler), then logging over every handler."""
    telemetry = setup_telemetry(service_name, settings)
    configure_logging(telemetry.config, stream)
    logging.getLogger(__name__).debug("observability ready for %s", service_name)
    return telemetry


__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "ObservabilityError",
    "RedactionFilter",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryConfigError",
    "bind",
    "configure_logging",
    "consumer_span",
    "extract_trace_context",
    "from_application_properties",
    "inject_trace_context",
    "install_filters",
    "log_context",
    "mark_error",
    "producer_span",
    "redact",
    "redact_text",
    "setup_observability",
    "setup_telemetry",
    "to_application_properties",
]
