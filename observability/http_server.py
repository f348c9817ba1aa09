"""An aiohttp middleware that opens a SERVER span per request, continuing the caller's trace.

Span names use the route pattern (`POST /v1/conversations/{conversation_id}/messages`), never
the raw path, so names stay few. Probes and the metrics scrape are not traced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from observability.propagation import extract_trace_context

UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: A WebSocket carries many turns: each turn gets its own trace (the gateway's step span), so the
#: connection itself is not one span that would glue them into one trace.

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Once, not per request: `get_tracer` builds a tracer and its instrumentation scope each time and
# runs warnings.filterwarnings (the `re._compile` in the profile), about 6 us. The proxy it returns
# here resolves the provider installed later (at start-up, or by the tests).
_tracer = trace.get_tracer("streaming_gateway.http")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNTRACED_PATHS or request.headers.get("Upgrade", "").lower() == "websocket":
        return await handler(request)
    route = _route(request)
    attributes = {"http.request.method": request.method, "http.route": route, "url.scheme": request.scheme}
    with _tracer.start_as_current_span(
        f"{request.method} {route}",
        context=extract_trace_context(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            if exc.status >= 500:
                span.set_status(Status(StatusCode.ERROR, exc.reason))
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response
