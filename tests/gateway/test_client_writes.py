"""How an answer reaches the client's socket: the entries a follower has in hand go out in one write
(not one per token) and still parse as separate events; a client that stops reading holds at most
a bounded amount in the gateway's socket buffer."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aiohttp import web

from streaming_gateway.api.sse import comment_bytes
from streaming_gateway.state.stream_log import StreamLog, Triple, Written
from tests.fixtures.gateway import Gateway, make_token
from tests.gateway.helpers import data, read_events
from tests.polling import eventually

SSE = {"Accept": "text/event-stream"}
TOKENS = 300
KEEP_ALIVE = comment_bytes("keep-alive")


@dataclass
class StreamWrites:
    """The writes the gateway made to its event-stream responses in this test."""

    #: The bytes of each write, keep-alive comments left out.
    sizes: list[int] = field(default_factory=list)
    #: Appends to the stream log made meanwhile: each hands its entries to the followers once (a
    #: producer's as it is sent, others' once persisted).
    appends: int = 0
    #: The most bytes waiting in a response's transport (not yet taken by the kernel) after a write.
    most_buffered: int = 0
    #: Set on each response's socket before its first write (None: left as the kernel sizes it).
    send_buffer: int | None = None


@pytest.fixture
def stream_writes(monkeypatch: pytest.MonkeyPatch, gateway: Gateway) -> Iterator[StreamWrites]:
    """Counts every write (and the data of write_eof) of the gateway's text/event-stream responses
    (not the scripted upstream's, which runs in this process too)."""
    seen = StreamWrites()
    write, write_eof = web.StreamResponse.write, web.StreamResponse.write_eof
    log_write = StreamLog.write
    started: set[int] = set()

    def ours(response: web.StreamResponse) -> bool:
        request = response._req
        return response.content_type == "text/event-stream" and getattr(request, "app", None) is gateway.app

    def observe(response: web.StreamResponse, size: int) -> None:
        if not ours(response):
            return
        transport = response._payload_writer.transport if response._payload_writer else None
        if transport is None:
            return
        if seen.send_buffer is not None and id(response) not in started:
            started.add(id(response))
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, seen.send_buffer
            )
        if size and size != len(KEEP_ALIVE):
            seen.sizes.append(size)

    async def counted_write(self: web.StreamResponse, data: bytes | bytearray | memoryview) -> None:
        observe(self, len(data))
        await write(self, data)
        if ours(self) and self._payload_writer is not None:
            transport = self._payload_writer.transport
            if transport is not None:
                seen.most_buffered = max(seen.most_buffered, transport.get_write_buffer_size())

    async def counted_write_eof(self: web.StreamResponse, data: bytes = b"") -> None:
        observe(self, len(data))
        await write_eof(self, data)

    async def counted_log_write(
        self: StreamLog, conversation_id: str, triples: Sequence[Triple], **options: Any
    ) -> Written:
        if triples:  # every log write with entries; a producer's claim of the ids carries none
            seen.appends += 1
        return await log_write(self, conversation_id, triples, **options)

    monkeypatch.setattr(StreamLog, "write", counted_log_write)
    monkeypatch.setattr(web.StreamResponse, "write", counted_write)
    monkeypatch.setattr(web.StreamResponse, "write_eof", counted_write_eof)
    yield seen


def words(count: int) -> list[str]:
    return [f"word{i}" for i in range(count)]


async def test_sdk_parses_each_token_of_a_batched_write(
    gateway: Gateway, script, stream_writes: StreamWrites
) -> None:
    """Tokens the model sends at once reach the client in one write per batch the follower is
    handed (one per append, not one per token), and the `openai` SDK still yields one chunk per
    token, in order, each once, then the finish."""
    await script([{"match": "", "tokens": TOKENS}])
    client = openai.AsyncOpenAI(base_url=gateway.url("/v1"), api_key=make_token(), max_retries=0)
    async with client:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "go"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(contents).split() == words(TOKENS)
    assert len(contents) == TOKENS  # one chunk per token, none merged or repeated
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    # The headers and opening chunk, then one write per append (the last with the response's end).
    assert len(stream_writes.sizes) <= stream_writes.appends + 1, stream_writes
    assert stream_writes.appends < TOKENS  # the log writer coalesced: there were batches to write


async def test_sse_events_of_a_batched_write_keep_their_ids(
    gateway: Gateway, script, stream_writes: StreamWrites
) -> None:
    """Over SSE, the events written together are still separate events, each with its id, in order."""
    await script([{"match": "", "tokens": TOKENS}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    ) as response:
        events = await read_events(response)
        assert await response.content.read() == b""  # the end came with the last events
    assert [e.number for e in events] == list(range(1, TOKENS + 2))
    assert "".join(data(e)["text"] for e in events if e.type == "token").split() == words(TOKENS)
    assert events[-1].type == "message_end"
    # The opening, then one write per append (the last with the response's end).
    assert len(stream_writes.sizes) <= stream_writes.appends + 1, stream_writes
    assert stream_writes.appends < TOKENS


async def test_client_that_stops_reading_holds_a_bounded_buffer(
    gateway: Gateway, script, stream_writes: StreamWrites
) -> None:
    """A client that stops reading an OpenAI-API stream does not stall the answer, and what waits
    for it in the gateway's socket buffer stays bounded (about one flow-control window and one
    batch), however long the answer; it then reads every token once, in order."""
    # 1,000 tokens of 1 KB (the agent answers at most 1,024): over a megabyte of chunks.
    expected = [f"word{i}" + "-" * 1000 for i in range(1000)]
    stream_writes.send_buffer = 8192  # the kernels hold little: the gateway's own buffer shows
    await script([{"match": "", "reply": " ".join(expected)}])
    async with gateway.session.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "default", "messages": [{"role": "user", "content": "go"}], "stream": True},
        headers={"Authorization": f"Bearer {make_token()}"},
    ) as response:
        assert response.status == 200
        cid = response.headers["X-Conversation-Id"]
        assert response.connection is not None and response.connection.transport is not None
        client_socket = response.connection.transport.get_extra_info("socket")
        client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        # And now it reads nothing until the answer is whole in the log.

        async def answer_done() -> bool:
            async with gateway.request("GET", f"/v1/conversations/{cid}") as got:
                return (await got.json())["message_count"] == 2

        await eventually(answer_done, "the answer to complete while the client is not reading")
        body = (await response.content.read()).decode()
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(text for text in contents if text).split() == expected
    assert body.rstrip().endswith("data: [DONE]")
    assert sum(stream_writes.sizes) > 1_000_000
    # asyncio pauses writing at 64 KB buffered, aiohttp's write waits for that once 64 KB went out
    # since it last checked; past that, at most the one batch being written (a log read's worth).
    assert stream_writes.most_buffered <= 128 * 1024 + max(stream_writes.sizes), stream_writes.most_buffered
