"""The model's server-sent events, decoded from the HTTP body's bytes as they are read.

A read's lines are split at once (not one await per line as httpx2's `aiter_lines`), each read's
complete events are parsed together (orjson) and given as one list: one step of the generator per
read of the body, not per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from streaming_gateway.llm.port import LLMUnavailable


async def sse_json(body: AsyncIterator[bytes]) -> AsyncIterator[list[dict[str, Any]]]:
    """The JSON of the server-sent events' data until `[DONE]`, a list per read of the body (one
    step of this generator per read, not per event)."""
    events = EventData()
    async for piece in body:
        payloads = events.feed(piece)
        if payloads:
            yield _chunks(payloads)
        if events.done:
            return
    payloads = events.end()
    if payloads:
        yield _chunks(payloads)


class EventData:
    """Splits the lines of each read at once, not one await per line as httpx2's `aiter_lines` does:
    with LF line ends (what OpenAI sends) by `bytes.split`, with any CR in the read by
    `bytes.splitlines` (CRLF and CR too). A read's last line waits for the next read when
    unfinished or ending in CR (maybe half a CRLF). The data lines of one event are joined by a
    newline; after `[DONE]` nothing more is given."""

    def __init__(self) -> None:
        self._rest = b""
        self._data: list[bytes] = []
        self.done = False

    def feed(self, piece: bytes) -> list[bytes]:
        if self._rest:
            piece = self._rest + piece
        if b"\r" in piece:
            lines = piece.splitlines(keepends=True)
            self._rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
            return self._events([line.rstrip(b"\r\n") for line in lines])
        lines = piece.split(b"\n")
        self._rest = lines.pop()
        return self._events(lines)

    def end(self) -> list[bytes]:
        """The events the body's end completes (its last line may end in CR); an event left open
        (data without its blank line, other than `[DONE]`) is the stream failing."""
        payloads = self._events([self._rest.rstrip(b"\r\n")] if self._rest else [])
        self._rest = b""
        if self._data and self._data != [b"[DONE]"]:
            raise LLMUnavailable("the model's stream ended inside an event")
        return payloads

    def _events(self, lines: list[bytes]) -> list[bytes]:
        payloads = []
        data = self._data
        for line in lines:
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif not line and data:
                payload = b"\n".join(data)
                data.clear()
                if payload == b"[DONE]":
                    self.done = True
                    break
                payloads.append(payload)
        return payloads


def _chunks(payloads: list[bytes]) -> list[dict[str, Any]]:
    chunks = []
    for payload in payloads:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise LLMUnavailable(f"the model sent a chunk that is not JSON: {payload[:100]!r}") from exc
        if type(chunk) is not dict:
            raise LLMUnavailable(f"the model sent a chunk that is not a JSON object: {payload[:100]!r}")
        chunks.append(chunk)
    return chunks
