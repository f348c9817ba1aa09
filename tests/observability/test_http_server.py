"""The aiohttp tracing middleware: one SERVER span per request, continuing the caller's trace."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from observability.http_server import tracing_middleware
from tests.observability.span_fields import attribute, parent_span_id


def _app() -> web.Application:
    async def message(request: web.Request) -> web.Response:
        return web.json_response({"conversation": request.match_info["cid"]})

    async def broken(request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[tracing_middleware])
    app.router.add_post("/v1/conversations/{cid}/messages", message)
    app.router.add_get("/broken", broken)
    app.router.add_get("/healthz", healthz)
    return app


async def test_request_span_uses_route_pattern_and_parent(spans: InMemorySpanExporter) -> None:
    """The span is named by route (no ids) and is a child of the incoming traceparent."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with TestClient(TestServer(_app(), host="127.0.0.1")) as client:
        response = await client.post("/v1/conversations/c-123/messages", headers={"traceparent": parent})
        assert response.status == 200
    [span] = spans.get_finished_spans()
    assert span.name == "POST /v1/conversations/{cid}/messages"
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(parent_span_id(span), "016x") == "b7ad6b7169203331"
    assert attribute(span, "http.response.status_code") == 200
    assert "c-123" not in span.name


async def test_server_errors_mark_the_span_and_probes_are_not_traced(spans: InMemorySpanExporter) -> None:
    """A 503 marks the span failed; /healthz makes no span at all."""
    async with TestClient(TestServer(_app(), host="127.0.0.1")) as client:
        assert (await client.get("/broken")).status == 503
        assert (await client.get("/healthz")).status == 200
    [span] = spans.get_finished_spans()
    assert span.name == "GET /broken"
    assert span.status.status_code is StatusCode.ERROR
    assert attribute(span, "http.response.status_code") == 503


async def test_websocket_connection_is_not_one_span(spans: InMemorySpanExporter) -> None:
    """A WebSocket upgrade makes no request span: each turn on it gets its own trace instead."""

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hi")
        await ws.close()
        return ws

    app = _app()
    app.router.add_get("/v1/ws", socket)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/v1/ws")
        assert (await ws.receive_str()) == "hi"
        await ws.close()
    assert spans.get_finished_spans() == ()
