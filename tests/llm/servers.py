"""Local stand-ins for the model's upstream in the adapter's tests: an HTTP/1.1 server answering
each request with a test's own bytes, and the bytes of server-sent events and error answers."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from streaming_gateway.llm.port import ChatRequest

#: The gateway's settings need a way to authenticate clients; the model's adapter does not use it.
BASE_ENV = {"AUTH_JWT_SECRET": "llm-tests-secret-0123456789abcdef0123"}
REQUEST = ChatRequest(model="scripted", messages=[{"role": "user", "content": "hi"}])
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def event(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event as one HTTP chunk."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    data = f"data: {text}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def delta(content: str | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}
    return event({"id": "c1", "object": "chat.completion.chunk", "choices": [choice]})


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """An HTTP/1.1 server on a loopback port whose answer to each request is a test's own bytes.

    It reads each request (head and body) and hands the connection to the handler; it records the
    requests and, per connection, whether the client closed it (EOF) or sent more."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.closed_by_client = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append((head, await reader.readexactly(length)))
                await self.handler(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def wait_for_close(self, reader: asyncio.StreamReader) -> None:
        """Hold the connection until the client closes it; counts a clean EOF, not more bytes."""
        with_more = await reader.read(1)
        if with_more == b"":
            self.closed_by_client += 1

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def status_answer(status: int, body: dict[str, Any]) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        payload = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\nRetry-After: 0\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (status, len(payload), payload)
        )
        await writer.drain()

    return answer
