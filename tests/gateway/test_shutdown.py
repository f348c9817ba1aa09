"""SIGTERM on a real gateway process: answers finish within the grace period; past it they end
with a retryable interruption, and open streams end resumably (SSE comment, WebSocket 1012)."""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from local_stack import processes
from tests.fixtures.gateway import SECRET, auth
from tests.gateway.helpers import data, read_events, text_of
from tests.gateway.sse_client import SseParser
from tests.polling import eventually

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def upstream_process(output_dir: Path) -> Iterator[processes.Service]:
    port = processes.free_port()
    service = processes.python_module(
        "scripted-upstream",
        "scripted_upstream",
        port,
        "--port",
        str(port),
        log_path=output_dir / "shutdown-upstream.log",
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture
def gateway_process(redis_url: str, upstream_process: processes.Service, output_dir: Path):
    started: list[processes.Service] = []

    def start(grace_s: float) -> processes.Service:
        port = processes.free_port()
        env = {
            "AUTH_JWT_SECRET": SECRET,
            "REDIS_URL": redis_url,
            "GATEWAY_PORT": str(port),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_process.port}/v1",
            "OPENAI_API_KEY": "scripted",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": str(grace_s),
            "GATEWAY_HEARTBEAT_SECONDS": "30",
        }
        service = processes.python_module(
            "gateway", "streaming_gateway", port, env=env, log_path=output_dir / "shutdown-gateway.log"
        )
        started.append(service.start())
        return service

    yield start
    for service in started:
        service.kill()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


async def put_script(session: aiohttp.ClientSession, upstream: processes.Service, rules: list[dict]) -> None:
    async with session.put(
        f"http://127.0.0.1:{upstream.port}/_control/script", json={"rules": rules}
    ) as response:
        assert response.status == 200


async def new_conversation(session: aiohttp.ClientSession, base: str) -> str:
    async with session.post(f"{base}/v1/conversations", json={}, headers=auth()) as response:
        return (await response.json())["id"]


async def exited(service: processes.Service) -> bool:
    return service.process is not None and service.process.poll() is not None


async def test_sigterm_lets_running_answer_finish(gateway_process, upstream_process, session) -> None:
    """An answer shorter than the grace period streams to its normal end after SIGTERM; then the
    process exits cleanly."""
    gateway = gateway_process(grace_s=30)
    base = f"http://127.0.0.1:{gateway.port}"
    await put_script(session, upstream_process, [{"match": "", "tokens": 40, "token_delay_ms": 20}])
    cid = await new_conversation(session, base)
    async with session.post(
        f"{base}/v1/conversations/{cid}/messages", json={"content": "go"}, headers={**auth(), **SSE}
    ) as response:
        parser = SseParser()
        first = await read_events(response, stop_after=2, parser=parser)
        gateway.process.send_signal(signal.SIGTERM)
        rest = await read_events(response, parser=parser)
    events = first + rest
    assert data(events[-1])["finish_reason"] == "stop"
    # Token events may coalesce under load; the text is what must arrive whole.
    assert text_of(events).split() == [f"word{i}" for i in range(40)]
    await eventually(lambda: exited(gateway), "the gateway to exit")
    assert gateway.process.returncode == 0


async def test_sigterm_past_grace_ends_resumably(gateway_process, upstream_process, session) -> None:
    """Past the grace period the answer ends with a retryable `interrupted` error; a follower gets
    every event, then a comment naming where to resume; a WebSocket is closed with 1012; another
    pod resumes from there."""
    gateway = gateway_process(grace_s=1)
    base = f"http://127.0.0.1:{gateway.port}"
    await put_script(session, upstream_process, [{"match": "", "tokens": 3000, "token_delay_ms": 10}])
    cid = await new_conversation(session, base)
    ws = await session.ws_connect(f"{base}/v1/ws", headers=auth(), autoclose=False, autoping=False)
    async with (
        session.post(
            f"{base}/v1/conversations/{cid}/messages", json={"content": "go"}, headers={**auth(), **SSE}
        ) as answer,
        session.get(f"{base}/v1/conversations/{cid}/events", headers={**auth(), **SSE}) as follower,
    ):
        answer_parser, follower_parser = SseParser(), SseParser()
        await read_events(answer, stop_after=2, parser=answer_parser)
        gateway.process.send_signal(signal.SIGTERM)
        answer_events = await read_events(answer, parser=answer_parser)
        follower_events = await read_events(follower, until_end=False, parser=follower_parser)
    close = await ws.receive(timeout=30)
    while close.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):  # the server's heartbeats
        close = await ws.receive(timeout=30)
    assert close.type == aiohttp.WSMsgType.CLOSE and close.data == 1012

    assert [e.type for e in answer_events][-2:] == ["error", "message_end"]
    error, end = data(answer_events[-2]), data(answer_events[-1])
    assert error["code"] == "interrupted" and error["retryable"] is True
    assert end["finish_reason"] == "interrupted"
    ids = [e.number for e in follower_events]
    assert ids == list(range(1, len(ids) + 1)) and ids[-1] == answer_events[-1].number
    resume_at = re.search(r"Last-Event-ID: (\d+)", follower_parser.comments[-1])
    assert resume_at is not None and int(resume_at.group(1)) == ids[-1]
    await eventually(lambda: exited(gateway), "the gateway to exit")
    assert gateway.process.returncode == 0

    other_pod = gateway_process(grace_s=1)
    other = f"http://127.0.0.1:{other_pod.port}"
    async with session.get(
        f"{other}/v1/conversations/{cid}/events?after={resume_at.group(1)}", headers={**auth(), **SSE}
    ) as response:
        assert response.status == 200
    await put_script(session, upstream_process, [{"match": "", "reply": "back again"}])
    async with session.post(
        f"{other}/v1/conversations/{cid}/messages", json={"content": "again"}, headers=auth()
    ) as response:
        assert (await response.json())["content"] == "back again"
