"""Every way the model's upstream can fail maps to its LLMError, through the real SDK and its HTTP
stack against real local servers: a refused connect, a timeout before the headers and mid-stream,
a socket cut mid-stream (closed or reset), TLS failures, a chunk that is not JSON and the error
statuses; a cancel mid-stream closes the upstream connection, and closing the model closes its
pooled connections."""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import json
import socket
import ssl
import struct
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local_stack.processes import free_port
from streaming_gateway.llm.openai_adapter import OpenAIChatModel, create_chat_model
from streaming_gateway.llm.port import (
    ChatDelta,
    ChatRequest,
    Finish,
    LLMBadParameter,
    LLMRejected,
    LLMTimeout,
    LLMUnavailable,
    TextDelta,
)
from streaming_gateway.settings import Settings
from tests.llm.servers import BASE_ENV, REQUEST, SSE_HEAD, delta, event, status_answer
from tests.polling import eventually


async def collect(model: OpenAIChatModel, request: ChatRequest = REQUEST) -> list[ChatDelta]:
    return [item async for item in model.stream(request)]


async def test_a_healthy_stream_gives_text_and_finish(models, raw_upstream) -> None:
    """The control: text deltas and a finish from a well-formed stream over the same server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            SSE_HEAD + delta("Hel") + delta("lo") + delta(finish="stop") + event("[DONE]") + b"0\r\n\r\n"
        )
        await writer.drain()

    server = await raw_upstream(answer)
    items = await collect(models(server.url))
    assert items[:2] == [TextDelta("Hel"), TextDelta("lo")]
    assert isinstance(items[2], Finish) and items[2].reason == "stop"
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions ") and json.loads(body)["stream"] is True


async def test_refused_connect_is_unavailable(models) -> None:
    """Nothing listening: LLMUnavailable, not a timeout."""
    with pytest.raises(LLMUnavailable):
        await collect(models(f"http://127.0.0.1:{free_port()}/v1"))


async def test_no_headers_in_time_is_a_timeout(models, raw_upstream) -> None:
    """The upstream reads the request and never answers: LLMTimeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await raw_upstream(silent)
    with pytest.raises(LLMTimeout):
        await collect(models(server.url))


async def test_silence_mid_stream_is_a_timeout(models, raw_upstream) -> None:
    """Headers and a token, then nothing for longer than the timeout: LLMTimeout after the token."""

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("one"))
        await writer.drain()
        await reader.read()

    server = await raw_upstream(stalls)
    seen: list[ChatDelta] = []
    with pytest.raises(LLMTimeout):
        async for item in models(server.url).stream(REQUEST):
            seen.append(item)
    assert seen == [TextDelta("one")]


async def test_hang_up_before_headers_is_unavailable(models, raw_upstream) -> None:
    """The upstream closes the connection after reading the request: LLMUnavailable, not a timeout."""

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await raw_upstream(hangs_up)
    with pytest.raises(LLMUnavailable):
        await collect(models(server.url))


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_socket_cut_mid_stream_is_unavailable(models, raw_upstream, how: str) -> None:
    """The connection closed or reset (RST) mid-body: the tokens so far, then LLMUnavailable."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("one"))
        await writer.drain()
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await raw_upstream(cut)
    seen: list[ChatDelta] = []
    with pytest.raises(LLMUnavailable):
        async for item in models(server.url).stream(REQUEST):
            seen.append(item)
    assert seen == [TextDelta("one")]


async def test_body_shorter_than_its_length_is_unavailable(models, raw_upstream) -> None:
    """A Content-Length body cut short: LLMUnavailable."""

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 5000\r\n\r\n")
        writer.write(b'data: {"choices": [{"index": 0, "delta": {"content": "one"}}]}\n\n')
        await writer.drain()
        writer.close()

    server = await raw_upstream(short)
    with pytest.raises(LLMUnavailable):
        await collect(models(server.url))


async def test_a_chunk_that_is_not_json_is_unavailable(models, raw_upstream) -> None:
    """`data: <html>`: LLMUnavailable naming the chunk."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("one") + event("<html>oops</html>") + b"0\r\n\r\n")
        await writer.drain()

    server = await raw_upstream(garbage)
    with pytest.raises(LLMUnavailable, match="not JSON"):
        await collect(models(server.url))


async def test_a_response_that_is_not_http_is_unavailable(models, raw_upstream) -> None:
    """Bytes that are no HTTP response at all: LLMUnavailable."""

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await raw_upstream(not_http)
    with pytest.raises(LLMUnavailable):
        await collect(models(server.url))


def self_signed(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 with a fresh self-signed certificate, and the certificate's file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


async def test_an_untrusted_certificate_is_unavailable(models, raw_upstream, tmp_path: Path) -> None:
    """TLS to a server whose certificate nobody trusts: LLMUnavailable, and no request sent."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta(finish="stop") + b"0\r\n\r\n")

    context, _ = self_signed(tmp_path)
    server = await raw_upstream(answer, tls=context)
    with pytest.raises(LLMUnavailable):
        await collect(models(server.url))
    assert server.requests == []


async def test_tls_to_a_plain_http_server_is_unavailable(models) -> None:
    """An https URL answered in plain HTTP (the handshake fails): LLMUnavailable."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the TLS client hello, answered as a plain HTTP server would
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(LLMUnavailable):
            await collect(models(f"https://127.0.0.1:{port}/v1"))
    finally:
        server.close()
        await server.wait_closed()


async def test_a_tls_stream_cut_mid_body_is_unavailable(
    models, raw_upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trusted TLS upstream whose TCP connection is cut mid-body (no close_notify): LLMUnavailable."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("one"))
        await writer.drain()
        writer.transport.abort()

    context, cert_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # read when the model's client is made
    server = await raw_upstream(cut, tls=context)
    seen: list[ChatDelta] = []
    with pytest.raises(LLMUnavailable):
        async for item in models(server.url).stream(REQUEST):
            seen.append(item)
    assert seen == [TextDelta("one")]


@pytest.mark.parametrize(
    ("status", "retryable", "attempts"),
    [(400, False, 1), (401, False, 1), (429, True, 2), (500, True, 2), (503, True, 2)],
)
async def test_error_statuses_are_rejected_with_their_status(
    models, raw_upstream, status: int, retryable: bool, attempts: int
) -> None:
    """4xx and 5xx: LLMRejected carrying the status; the SDK retries 429 and 5xx once."""
    server = await raw_upstream(status_answer(status, {"error": {"message": "no", "type": "x"}}))
    with pytest.raises(LLMRejected) as raised:
        await collect(models(server.url))
    assert type(raised.value) is LLMRejected
    assert raised.value.status_code == status and raised.value.retryable is retryable
    assert len(server.requests) == attempts


async def test_a_400_naming_a_client_parameter_is_a_bad_parameter(models, raw_upstream) -> None:
    """A 400 whose `param` the client chose: LLMBadParameter with the upstream's message."""
    error = {"message": "bad seed", "type": "invalid_request_error", "param": "seed", "code": "invalid_value"}
    server = await raw_upstream(status_answer(400, {"error": error}))
    request = ChatRequest(
        model="scripted", messages=REQUEST.messages, options={"seed": -1}, client_params=frozenset({"seed"})
    )
    with pytest.raises(LLMBadParameter) as raised:
        await collect(models(server.url), request)
    assert raised.value.field == "seed" and "bad seed" in str(raised.value)


async def test_cancel_mid_stream_closes_the_upstream_connection(models, raw_upstream) -> None:
    """A consumer leaving mid-stream closes the connection (never pooled half-read): the upstream
    sees EOF on it, and the next answer opens a new one."""
    first_done = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("one"))
        await writer.drain()
        if server.connections == 1:
            await server.wait_for_close(reader)
            first_done.set()
            writer.close()
        else:
            writer.write(delta(finish="stop") + event("[DONE]") + b"0\r\n\r\n")

    server = await raw_upstream(endless)
    model = models(server.url)
    stream = model.stream(REQUEST)
    assert await anext(stream) == TextDelta("one")
    await stream.aclose()
    await eventually(lambda: _is_set(first_done), "the upstream to see the connection closed")
    assert server.closed_by_client == 1
    items = await collect(model)
    assert isinstance(items[-1], Finish) and server.connections == 2


async def _is_set(flag: asyncio.Event) -> bool:
    return flag.is_set()


async def test_closing_the_model_closes_its_session_and_pooled_connections(raw_upstream) -> None:
    """After an answer its keep-alive connection is pooled; closing the model closes it and the
    HTTP client's aiohttp session (no "Unclosed client session" once the model is collected)."""
    closed = asyncio.Event()

    async def answer_then_hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("ok") + delta(finish="stop") + event("[DONE]") + b"0\r\n\r\n")
        await writer.drain()
        await server.wait_for_close(reader)
        closed.set()

    server = await raw_upstream(answer_then_hold)
    settings = Settings.from_env({**BASE_ENV, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "test"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_chat_model(settings)
        await collect(model)
        await model.close()
        await eventually(lambda: _is_set(closed), "the pooled connection to close")
        del model
        gc.collect()
    assert [str(w.message) for w in caught if "Unclosed" in str(w.message)] == []
    assert server.connections == 1 and server.closed_by_client == 1


async def test_azure_client_streams_over_the_same_stack(raw_upstream) -> None:
    """Azure OpenAI: the deployment path, api-version and api-key header; a cut mid-stream is LLMUnavailable."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("one"))
        await writer.drain()
        writer.transport.abort()

    server = await raw_upstream(cut)
    endpoint = server.url.removesuffix("/v1")
    settings = Settings.from_env(
        {
            **BASE_ENV,
            "AZURE_OPENAI_ENDPOINT": endpoint,
            "AZURE_OPENAI_API_KEY": "azure-key",
            "LLM_TIMEOUT_SECONDS": "1",
        }
    )
    model = create_chat_model(settings)
    try:
        with pytest.raises(LLMUnavailable):
            await collect(model)
    finally:
        await model.close()
    head = server.requests[0][0].decode().lower()
    assert head.startswith("post /openai/deployments/scripted/chat/completions?api-version=")
    assert "\r\napi-key: azure-key\r\n" in head
