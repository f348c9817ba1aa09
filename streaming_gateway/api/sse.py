"""Server-Sent Events framing: `id:` is the event id, `event:` its type, `data:` its JSON (one line)."""

from __future__ import annotations

from aiohttp import web

from streaming_gateway.state.stream_log import LogEntry

#: Browsers' EventSource waits this long before reconnecting (with Last-Event-ID).
RETRY_MS = 1000


def sse_response(headers: dict[str, str] | None = None) -> web.StreamResponse:
    return web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies that buffer (nginx) pass events through at once
            **(headers or {}),
        },
    )


def event_bytes(entry: LogEntry) -> bytes:
    return f"id: {entry.id}\nevent: {entry.type}\ndata: {entry.data}\n\n".encode()


def comment_bytes(text: str) -> bytes:
    return f": {text}\n\n".encode()


def opening_bytes() -> bytes:
    """Sent before anything else: the reconnect delay and a keep-alive, so proxies see bytes at once
    even when the first token is slow."""
    return f"retry: {RETRY_MS}\n: connected\n\n".encode()


def resumable_end_bytes(last_id: int) -> bytes:
    return comment_bytes(f"server restarting; resume with Last-Event-ID: {last_id}")
