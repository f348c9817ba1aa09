"""Where spans go: nowhere, OTLP or Azure Monitor, each checked in a fresh child process.

The OTLP collector and the Application Insights ingestion endpoint are small local HTTP servers
that record what the real exporters send; the child process runs the real setup code.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append((request.path, body))
        if request.path.endswith("/track"):
            return web.json_response({"itemsReceived": 1, "itemsAccepted": 1, "errors": []})
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield rec, str(server.make_url("/")).rstrip("/")
    await server.close()


async def _run_probe(extra_env: dict[str, str]) -> tuple[dict, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))
    }
    env.update({"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "LOG_FORMAT": "json", **extra_env})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.observability.telemetry_probe",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # A guard against a hung child, not a measurement.
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout.decode().strip().splitlines()[-1]), stderr.decode()


async def test_no_exporter_starts_and_still_traces() -> None:
    """Without App Insights or OTLP the process starts, spans get ids, logs carry them."""
    result, stderr = await _run_probe({})
    assert result["exporters"] == []
    assert len(result["trace_id"]) == 32 and set(result["trace_id"]) != {"0"}
    probe_line = next(json.loads(line) for line in stderr.splitlines() if '"probe"' in line)
    assert probe_line["trace_id"] == result["trace_id"]
    assert probe_line["conversation_id"] == "c-probe"
    assert "sekrit-token-value" not in stderr and "abc123==" not in stderr


async def test_otlp_exporter_sends_the_span_to_the_collector(recorder) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT gets the span over OTLP/HTTP protobuf at /v1/traces."""
    rec, base = recorder
    result, _ = await _run_probe({"OTEL_EXPORTER_OTLP_ENDPOINT": base})
    assert result["exporters"] == ["otlp"]
    bodies = [body for path, body in rec.requests if path == "/v1/traces"]
    assert bodies, rec.requests
    exported = ExportTraceServiceRequest.FromString(bodies[0])
    [resource_spans] = exported.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "probe-service"
    names = {span.name: span for scope in resource_spans.scope_spans for span in scope.spans}
    assert names["probe-span"].trace_id.hex() == result["trace_id"]


async def test_azure_monitor_gets_spans_and_redacted_logs(recorder) -> None:
    """APPLICATIONINSIGHTS_CONNECTION_STRING sends the span and the (redacted) log to ingestion."""
    rec, base = recorder
    connection = (
        f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint={base}/;"
        f"LiveEndpoint={base}/"
    )
    result, _ = await _run_probe({"APPLICATIONINSIGHTS_CONNECTION_STRING": connection})
    assert result["exporters"] == ["azure_monitor"]
    envelopes = [
        envelope
        for path, body in rec.requests
        if path.endswith("/v2.1/track")
        for envelope in json.loads(body)
    ]
    dependencies = [e for e in envelopes if e["data"]["baseType"] == "RemoteDependencyData"]
    assert any(
        e["data"]["baseData"]["name"] == "probe-span"
        and e["tags"]["ai.operation.id"] == result["trace_id"]
        and e["tags"]["ai.cloud.role"] == "probe-service"
        for e in dependencies
    )
    messages = [e["data"]["baseData"] for e in envelopes if e["data"]["baseType"] == "MessageData"]
    probe = next(m for m in messages if m["message"].startswith("probe log"))
    assert probe["message"] == "probe log with Authorization: [REDACTED] and AccountKey=[REDACTED]"
    assert probe["properties"]["conversation_id"] == "c-probe"
    assert probe["properties"]["config_version"] == "default@0123456789ab"
    # The exporter's own HTTP requests are not logged back into the export (no feedback loop).
    assert not any("v2.1/track" in m["message"] for m in messages)
