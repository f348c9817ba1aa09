"""A Server-Sent Events parser written to the WHATWG spec, fed raw byte chunks as they arrive.

Used by the tests as the client: it must not care where chunk boundaries fall (inside a line,
inside a UTF-8 character, between CR and LF).
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp


@dataclass
class SseEvent:
    type: str
    data: str
    id: str | None

    @property
    def number(self) -> int:
        """The id as the gateway's log entry number (every event the gateway sends has one)."""
        assert self.id is not None, f"{self.type} event without an id"
        return int(self.id)


@dataclass
class SseParser:
    last_event_id: str = ""
    retry_ms: int | None = None
    comments: list[str] = field(default_factory=list)
    #: Events already parsed but not yet handed out (a chunk can carry more than a reader wanted).
    unread: list[SseEvent] = field(default_factory=list)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")()
    )
    _buffer: str = ""
    _started: bool = False
    _pending_cr: bool = False
    _data: list[str] = field(default_factory=list)
    _event_type: str = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events: list[SseEvent] = []
        for char in text:
            if self._pending_cr:
                self._pending_cr = False
                if char == "\n":
                    continue  # CRLF: the CR already ended the line
            if char in "\r\n":
                self._pending_cr = char == "\r"
                event = self._line(self._buffer)
                self._buffer = ""
                if event is not None:
                    events.append(event)
            else:
                self._buffer += char
        return events

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].lstrip(" "))
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event_type = self._data, self._event_type or "message"
        self._data, self._event_type = [], ""
        if not data:
            return None
        return SseEvent(event_type, "\n".join(data), self.last_event_id or None)


async def iter_events(
    response: aiohttp.ClientResponse, parser: SseParser | None = None
) -> AsyncIterator[SseEvent]:
    parser = parser or SseParser()
    async for chunk in response.content.iter_any():
        for event in parser.feed(chunk):
            yield event
