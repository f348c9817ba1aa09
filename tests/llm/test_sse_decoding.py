"""The upstream's server-sent events decoded from the body's bytes however the reads split them:
mid-line, mid-CRLF, several events per read; LF, CRLF and CR line ends; multi-line data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streaming_gateway.llm.port import LLMUnavailable
from streaming_gateway.llm.sse_decoding import sse_json

EVENTS = [{"n": 1, "text": "héllo"}, {"n": 2, "text": "a\nb"}, {"n": 3, "text": ""}]


def body(line_end: str) -> bytes:
    text = "".join(f"data: {json.dumps(e)}{line_end}{line_end}" for e in EVENTS)
    return (f": keep-alive comment{line_end}{line_end}" + text + f"data: [DONE]{line_end}{line_end}").encode()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def decode(source: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    return [event async for events in sse_json(source) for event in events]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
async def test_events_survive_any_split_of_the_body(line_end: str, size: int) -> None:
    """Every split of the body into reads gives the same events, up to [DONE]."""
    assert await decode(pieces(body(line_end), size)) == EVENTS


async def test_data_lines_of_one_event_are_joined() -> None:
    """Two `data:` lines of one event are one JSON text joined by a newline."""
    source = pieces(b'data: {"a":\r\ndata: 1}\r\n\r\ndata: [DONE]\r\n\r\n', 5)
    assert await decode(source) == [{"a": 1}]


async def test_nothing_after_done_is_read() -> None:
    """`[DONE]` ends the events even when more bytes follow."""
    source = pieces(b'data: {"a": 1}\n\ndata: [DONE]\n\ndata: {"b": 2}\n\n', 4)
    assert await decode(source) == [{"a": 1}]


async def test_a_chunk_that_is_not_json_names_it() -> None:
    """A data payload that is not JSON: LLMUnavailable quoting its start."""
    with pytest.raises(LLMUnavailable, match=r"not JSON.*<html>"):
        await decode(pieces(b"data: <html>\n\n", 3))


@pytest.mark.parametrize("tail", [b'data: {"a": 1}', b'data: {"a": 1}\n', b'data: {"a": 1}\r'])
async def test_a_body_ending_inside_an_event_fails(tail: bytes) -> None:
    """The body ending before the blank line that closes an event: LLMUnavailable."""
    with pytest.raises(LLMUnavailable, match="ended inside an event"):
        await decode(pieces(tail, 4))


async def test_a_body_ending_without_done_ends_the_events() -> None:
    """Complete events and then the end of the body: the events, no error (the caller checks the finish)."""
    assert await decode(pieces(b'data: {"a": 1}\n\n', 3)) == [{"a": 1}]


async def test_a_last_event_closed_by_cr_at_the_end_is_given() -> None:
    """CR line ends: the blank line closing the last event may be the body's last byte."""
    assert await decode(pieces(b'data: {"a": 1}\r\r', 1)) == [{"a": 1}]


async def test_an_unterminated_done_at_the_end_is_no_error() -> None:
    """`data: [DONE]` without its blank line at the end of the body: the events before it, no error."""
    assert await decode(pieces(b'data: {"a": 1}\n\ndata: [DONE]', 5)) == [{"a": 1}]
