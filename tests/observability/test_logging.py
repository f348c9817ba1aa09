"""Structured logs: JSON lines with trace and conversation context; secrets never written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability import TelemetryConfig, TelemetryConfigError, configure_logging, log_context
from observability.logs import ContextFilter, JsonFormatter, RedactionFilter, TextFormatter
from observability.redaction import redact, redact_text

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc2NDAwMDAwMH0."
    "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)
SECRETS = [
    JWT,
    "sk-proj-abcdefghijklmnop1234",
    "Zm9vYmFyYmF6MTIzNDU2Nzg5MA==",
    "hunter2-redis-pw",
    "s3cr3t-value",
]


@pytest.fixture
def logger_and_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing JSON through the same filters configure_logging installs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter("test-service"))
    handler.addFilter(RedactionFilter())
    logger = logging.getLogger("tests.observability.private")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers.clear()


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_carries_trace_conversation_and_version(
    spans: InMemorySpanExporter, logger_and_stream
) -> None:
    """Inside a span and a bound context, each line names the trace, span, conversation and version."""
    logger, stream = logger_and_stream
    with trace.get_tracer("test").start_as_current_span("turn") as span:
        with log_context(conversation_id="c-42", config_version="default@0123456789ab", message_id="m-1"):
            logger.info("answered %d tokens", 12, extra={"tokens_streamed": 12})
    [line] = _lines(stream)
    context = span.get_span_context()
    assert line["message"] == "answered 12 tokens"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["conversation_id"] == "c-42"
    assert line["config_version"] == "default@0123456789ab"
    assert line["message_id"] == "m-1"
    assert line["tokens_streamed"] == 12
    assert line["service"] == "test-service"
    assert line["level"] == "INFO"


def test_context_does_not_leak_between_tasks(logger_and_stream) -> None:
    """Two concurrent turns each log only their own conversation id."""
    logger, stream = logger_and_stream

    async def turn(cid: str, ready: asyncio.Event, go: asyncio.Event) -> None:
        with log_context(conversation_id=cid):
            ready.set()
            await go.wait()
            logger.info("turn done")

    async def main() -> None:
        ready_a, ready_b, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(turn("c-a", ready_a, go)), asyncio.create_task(turn("c-b", ready_b, go))]
        await ready_a.wait()
        await ready_b.wait()
        go.set()
        await asyncio.gather(*tasks)
        logger.info("outside")

    asyncio.run(main())
    lines = _lines(stream)
    assert sorted(line.get("conversation_id", "-") for line in lines) == ["-", "c-a", "c-b"]


def test_secrets_in_messages_extras_and_exceptions_are_masked(logger_and_stream) -> None:
    """Tokens, keys, passwords and Authorization headers never reach the output in any field."""
    logger, stream = logger_and_stream
    logger.info("calling upstream with Authorization: Bearer %s", JWT)
    logger.info("openai key %s", "sk-proj-abcdefghijklmnop1234")
    logger.info(
        "cosmos", extra={"conn": "AccountEndpoint=https://x/;AccountKey=Zm9vYmFyYmF6MTIzNDU2Nzg5MA==;"}
    )
    logger.info("redis at %s", "rediss://default:hunter2-redis-pw@cache.redis.azure.net:6380/0")
    logger.info(
        "request",
        extra={
            "headers": {"Authorization": "Basic s3cr3t-value", "Accept": "text/event-stream"},
            "api_key": "s3cr3t-value",
            "max_tokens": 256,
        },
    )
    try:
        raise RuntimeError(f"upstream refused token={JWT}")
    except RuntimeError:
        logger.exception("failed")
    output = stream.getvalue()
    for secret in SECRETS:
        assert secret not in output
    lines = _lines(stream)
    assert lines[0]["message"] == "calling upstream with Authorization: [REDACTED]"
    assert lines[4]["headers"] == {"Authorization": "[REDACTED]", "Accept": "text/event-stream"}
    assert lines[4]["api_key"] == "[REDACTED]"
    assert lines[4]["max_tokens"] == 256  # not a secret, despite the word "token"
    assert "cache.redis.azure.net" in lines[3]["message"]
    assert "RuntimeError" in lines[5]["exception"]


def test_unformattable_arguments_do_not_lose_the_line(logger_and_stream) -> None:
    """A wrong %-format still produces a line (and never raises into the caller)."""
    logger, stream = logger_and_stream
    logger.info("%d items", "not-a-number")
    [line] = _lines(stream)
    assert "unformattable" in line["message"]


def test_redact_keeps_ordinary_text() -> None:
    """Redaction only touches secrets: ids, words and numbers pass unchanged."""
    text = "conversation c-1 used default@0123456789ab; 12 tokens; ticket T-1 opened"
    assert redact_text(text) == text
    assert redact({"usage": {"completion_tokens": 3}, "password": "x"}) == {
        "usage": {"completion_tokens": 3},
        "password": "[REDACTED]",
    }


def test_configure_logging_filters_every_root_handler() -> None:
    """A handler added by someone else (Azure Monitor's) gets the redaction filter too."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    other_stream, own_stream = io.StringIO(), io.StringIO()
    other = logging.StreamHandler(other_stream)
    other.set_name("someone-else")
    try:
        root.addHandler(other)
        configure_logging(TelemetryConfig(service_name="svc", log_format="json"), own_stream)
        logging.getLogger("tests.any").warning("token=%s", "s3cr3t-value")
        assert "s3cr3t-value" not in other_stream.getvalue()
        assert json.loads(own_stream.getvalue().splitlines()[-1])["message"] == "token=[REDACTED]"
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_http_client_request_lines_are_quiet() -> None:
    """The openai SDK's HTTP client logs each request at INFO: configure_logging leaves only its warnings."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging(TelemetryConfig(service_name="svc", log_format="json", log_level="INFO"), stream)
        for name in ("httpx2", "httpx"):
            logging.getLogger(name).info('HTTP Request: POST http://upstream/v1/chat/completions "200 OK"')
            logging.getLogger(name).warning("%s retrying", name)
        logging.getLogger("tests.any").info("ours")
        assert [line["message"] for line in _lines(stream)] == ["httpx2 retrying", "httpx retrying", "ours"]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_text_format_is_readable() -> None:
    """LOG_FORMAT=text gives one plain line with the conversation appended."""
    record = logging.LogRecord("gw", logging.INFO, __file__, 1, "hello", None, None)
    record.conversation_id, record.config_version, record.trace_id = "c-1", None, None
    line = TextFormatter("gateway").format(record)
    assert line.endswith("gateway INFO gw: hello [conversation_id=c-1]")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
    ],
)
def test_bad_telemetry_settings_name_the_variable(variable: str, value: str) -> None:
    """A malformed telemetry variable fails with a message naming it."""
    with pytest.raises(TelemetryConfigError, match=variable):
        TelemetryConfig.from_settings("svc", None, {variable: value})


def test_settings_object_wins_over_environment() -> None:
    """A deployable's settings field is used before the environment variable of the same meaning."""

    class Settings:
        applicationinsights_connection_string = "InstrumentationKey=x"

    config = TelemetryConfig.from_settings(
        "svc",
        Settings(),
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "other",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        },
    )
    assert config.applicationinsights_connection_string == "InstrumentationKey=x"
    assert config.exporters == ("azure_monitor", "otlp")
    assert TelemetryConfig.from_settings("svc", None, {}).exporters == ()
