"""OpenTelemetry tracing for one process: Azure Monitor, OTLP, both or nowhere.

`setup_telemetry` installs the process-wide tracer provider once. With no exporter configured
spans are still created (so logs carry trace ids and trace context still crosses the bus) but
are exported nowhere, and start-up never fails for want of a telemetry backend.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from observability.config import TelemetryConfig

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    """What setup_telemetry installed; shutdown() flushes pending spans (call it on exit)."""

    config: TelemetryConfig
    tracer_provider: trace.TracerProvider
    exporters: tuple[str, ...]

    def shutdown(self) -> None:
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


_installed: Telemetry | None = None


def build_resource(config: TelemetryConfig) -> Resource:
    instance = os.environ.get("HOSTNAME") or socket.gethostname()
    return Resource.create({SERVICE_NAME: config.service_name, SERVICE_INSTANCE_ID: instance})


def otlp_span_processor(endpoint: str) -> SpanProcessor:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; each signal has its own path.
    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
    return BatchSpanProcessor(OTLPSpanExporter(endpoint=url))


def build_tracer_provider(
    config: TelemetryConfig, extra_processors: list[SpanProcessor] | None = None
) -> TracerProvider:
    """A provider exporting to OTLP when configured (Azure Monitor is set up by its distro instead)."""
    provider = TracerProvider(
        resource=build_resource(config), sampler=ParentBased(TraceIdRatioBased(config.sample_ratio))
    )
    if config.otlp_endpoint:
        provider.add_span_processor(otlp_span_processor(config.otlp_endpoint))
    for processor in extra_processors or []:
        provider.add_span_processor(processor)
    return provider


def _configure_azure_monitor(
    config: TelemetryConfig, extra_processors: list[SpanProcessor]
) -> trace.TracerProvider:
    from azure.monitor.opentelemetry import configure_azure_monitor

    processors = list(extra_processors)
    if config.otlp_endpoint:
        processors.append(otlp_span_processor(config.otlp_endpoint))
    kwargs: dict[str, Any] = {
        "connection_string": config.applicationinsights_connection_string,
        "resource": build_resource(config),
        "sampling_ratio": config.sample_ratio,
        "span_processors": processors,
    }
    # Traces, logs (root logger) and metrics go to Application Insights; the distro also traces
    # httpx (the openai SDK) and the Azure SDKs (Service Bus, Cosmos DB) as dependencies.
    from observability.logs import quiet_sdk_loggers

    quiet_sdk_loggers()  # before the distro's log handler exists: see QUIET_LOGGERS
    configure_azure_monitor(**kwargs)
    return trace.get_tracer_provider()


def setup_telemetry(
    service_name: str,
    settings: Any = None,
    *,
    environ: dict[str, str] | None = None,
    extra_processors: list[SpanProcessor] | None = None,
) -> Telemetry:
    """Install tracing for this process once; later calls return what the first one installed."""
    global _installed
    if _installed is not None:
        return _installed
    config = TelemetryConfig.from_settings(service_name, settings, environ)
    processors = list(extra_processors or [])
    if config.applicationinsights_connection_string:
        provider: trace.TracerProvider = _configure_azure_monitor(config, processors)
    else:
        provider = build_tracer_provider(config, processors)
        trace.set_tracer_provider(provider)
    _installed = Telemetry(config=config, tracer_provider=provider, exporters=config.exporters)
    if config.exporters:
        log.info("telemetry: %s exporting traces to %s", config.service_name, ", ".join(config.exporters))
    else:
        log.info(
            "telemetry: %s traces are not exported (set APPLICATIONINSIGHTS_CONNECTION_STRING "
            "or OTEL_EXPORTER_OTLP_ENDPOINT)",
            config.service_name,
        )
    return _installed
