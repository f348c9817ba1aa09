"""Telemetry settings, read from a deployable's settings object first and the environment second.

Both deployables already carry `applicationinsights_connection_string`; the OTLP endpoint and
the log format are read from the same object when it has them, else from the environment, so a
deployable does not need new settings fields to use this package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from observability.errors import TelemetryConfigError

LOG_FORMATS = ("auto", "json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class TelemetryConfig:
    service_name: str
    applicationinsights_connection_string: str | None = None
    otlp_endpoint: str | None = None
    #: auto: text on a terminal, JSON otherwise (containers, CI, the Functions host).
    log_format: str = "auto"
    log_level: str = "INFO"
    #: Fraction of traces kept (parent-based); 1.0 keeps all.
    sample_ratio: float = 1.0

    @property
    def exporters(self) -> tuple[str, ...]:
        names = []
        if self.applicationinsights_connection_string:
            names.append("azure_monitor")
        if self.otlp_endpoint:
            names.append("otlp")
        return tuple(names)

    @classmethod
    def from_settings(
        cls, service_name: str, settings: Any = None, environ: Mapping[str, str] | None = None
    ) -> TelemetryConfig:
        env = os.environ if environ is None else environ

        def read(attr: str, var: str, default: str | None = None) -> str | None:
            value = getattr(settings, attr, None) if settings is not None else None
            if value is None:
                value = env.get(var)
            if value is None or str(value).strip() == "":
                return default
            return str(value).strip()

        otlp = read("otel_exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT")
        if otlp is not None:
            parsed = urlparse(otlp)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise TelemetryConfigError(
                    "OTEL_EXPORTER_OTLP_ENDPOINT", f"expected an http(s) URL, got {otlp!r}"
                )
        log_format = (read("log_format", "LOG_FORMAT", "auto") or "auto").lower()
        if log_format not in LOG_FORMATS:
            raise TelemetryConfigError(
                "LOG_FORMAT", f"expected one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
            )
        log_level = (read("log_level", "LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise TelemetryConfigError(
                "LOG_LEVEL", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
            )
        raw_ratio = read("otel_sample_ratio", "OTEL_TRACES_SAMPLER_ARG", "1.0") or "1.0"
        try:
            ratio = float(raw_ratio)
        except ValueError:
            raise TelemetryConfigError(
                "OTEL_TRACES_SAMPLER_ARG", f"expected a number, got {raw_ratio!r}"
            ) from None
        if not 0.0 <= ratio <= 1.0:
            raise TelemetryConfigError("OTEL_TRACES_SAMPLER_ARG", f"must be between 0 and 1, got {ratio}")
        return cls(
            service_name=env.get("OTEL_SERVICE_NAME") or service_name,
            applicationinsights_connection_string=read(
                "applicationinsights_connection_string", "APPLICATIONINSIGHTS_CONNECTION_STRING"
            ),
            otlp_endpoint=otlp,
            log_format=log_format,
            log_level=log_level,
            sample_ratio=ratio,
        )
