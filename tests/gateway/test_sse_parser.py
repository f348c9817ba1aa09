"""The test suite's SSE parser: fed byte chunks split anywhere, it yields what the spec says."""

from __future__ import annotations

from tests.gateway.sse_client import SseParser

STREAM = (
    "\ufeffretry: 1000\n: connected\n\n"
    'id: 1\nevent: token\ndata: {"text": "h\u00e9llo"}\n\n'
    "id: 2\r\nevent: token\r\ndata: line one\r\ndata: line two\r\n\r\n"
    ": keep-alive\r\r"
    "id: 3\revent: message_end\rdata:{}\r\r"
    "data: no type\n\n"
).encode()


def parse_in_chunks(size: int) -> tuple[SseParser, list[tuple[str, str, str | None]]]:
    parser = SseParser()
    events = []
    for start in range(0, len(STREAM), size):
        events += [(e.type, e.data, e.id) for e in parser.feed(STREAM[start : start + size])]
    return parser, events


def test_parser_is_independent_of_chunk_boundaries() -> None:
    """Every chunk size, down to one byte (splitting UTF-8 and CRLF), gives the same events."""
    expected = [
        ("token", '{"text": "h\u00e9llo"}', "1"),
        ("token", "line one\nline two", "2"),
        ("message_end", "{}", "3"),
        ("message", "no type", "3"),
    ]
    for size in (1, 2, 3, 7, 64, len(STREAM)):
        parser, events = parse_in_chunks(size)
        assert events == expected, size
        assert parser.comments == ["connected", "keep-alive"]
        assert parser.retry_ms == 1000
        assert parser.last_event_id == "3"
