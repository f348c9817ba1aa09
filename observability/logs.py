"""Structured logging: JSON lines carrying trace, conversation and config version; secrets masked.

`configure_logging` puts one stream handler on the root logger and attaches the context and
redaction filters to every root handler, including the one Azure Monitor's distro adds, so no
sink ever receives an unredacted record.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from observability import context as log_ctx
from observability.config import TelemetryConfig
from observability.redaction import MASK, SECRET_KEY_RE, redact, redact_text

#: Loggers that log every HTTP request at INFO: the exporters' own (exported too, each export
#: logging again, without end) and the `openai` SDK's HTTP client (httpx2; httpx for older SDKs),
#: which would write a line per model request on the gateway's hot path.
QUIET_LOGGERS = (
    "azure",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.monitor.opentelemetry",
    "httpx",
    "httpx2",
    "opentelemetry",
    "urllib3",
)

#: Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "trace_id",
    "span_id",
    "service",
    "taskName",
    *log_ctx.FIELDS,
}


class ContextFilter(logging.Filter):
    """Adds trace_id, span_id and the bound log context fields to each record."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        bound = log_ctx.current()
        for field in log_ctx.FIELDS:
            if getattr(record, field, None) is None:
                setattr(record, field, bound.get(field))
        if self.service and getattr(record, "service", None) is None:
            record.service = self.service
        return True


class RedactionFilter(logging.Filter):
    """Masks secrets in the message, its arguments, `extra=` fields and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Idempotent: a record passing several handlers is scrubbed again at no harm.
        try:
            message = record.getMessage()
        except (TypeError, ValueError) as exc:  # a bad format string must not lose the line
            message = f"{record.msg!r} (unformattable arguments: {exc})"
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in list(vars(record).items()):
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            setattr(record, key, MASK if SECRET_KEY_RE.search(key) else redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, trace/context fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("service", "trace_id", "span_id", *log_ctx.FIELDS):
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, with the trace and conversation when there are any."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{field}={value}"
            for field in ("conversation_id", "config_version", "trace_id")
            if (value := getattr(record, field, None)) is not None
        ]
        return f"{line} [{' '.join(tags)}]" if tags else line


def quiet_sdk_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def install_filters(service: str | None = None, logger: logging.Logger | None = None) -> None:
    """Attach the context and redaction filters to every handler of `logger` (root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter(service))
        if not any(isinstance(f, RedactionFilter) for f in handler.filters):
            handler.addFilter(RedactionFilter())


def configure_logging(config: TelemetryConfig, stream: TextIO | None = None) -> logging.Handler:
    """Replace our own root stream handler (keeping others, such as Azure Monitor's) and filter all."""
    stream = stream or sys.stderr
    use_json = config.log_format == "json" or (config.log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.set_name("observability")
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter(config.service_name))
    root = logging.getLogger()
    for old in [
        h for h in root.handlers if h.get_name() == "observability" or type(h) is logging.StreamHandler
    ]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    quiet_sdk_loggers()
    install_filters(config.service_name, root)
    return handler
