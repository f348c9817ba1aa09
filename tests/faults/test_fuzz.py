"""Malformed input, generated: request bodies, headers, query values and WebSocket frames from
hypothesis, and every operation of the gateway's OpenAPI description from schemathesis. The
gateway (its own process) must answer each with a client error or a success, never a 5xx, and
must still be serving afterwards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.conftest import Scenario
from tests.fixtures.gateway import make_token
from tests.fixtures.gateway_process import GatewayProcess

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
raw_bodies = json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=300)
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "bogus", ""])
chat_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": st.text(max_size=60)
            | st.none()
            | st.lists(
                st.dictionaries(st.sampled_from(["type", "text", "image_url"]), scalars, max_size=3),
                max_size=3,
            ),
            "tool_call_id": st.text(max_size=20),
            "tool_calls": json_values,
        },
    ),
    max_size=4,
)
chat_bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=20), "messages": chat_messages},
    optional={
        "stream": st.booleans() | scalars,
        "temperature": scalars,
        "max_tokens": scalars,
        "n": scalars,
        "tools": st.lists(json_values, max_size=2),
        "stream_options": json_values,
    },
)
message_bodies = st.fixed_dictionaries(
    {"content": st.text(max_size=80) | scalars}, optional={"metadata": json_values, "extra": json_values}
)
ws_frames = (
    json_values.map(json.dumps)
    | st.text(max_size=120)
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "cancel", "resume", "ping", "nope"])},
        optional={"content": scalars, "conversation_id": scalars, "after": scalars},
    ).map(json.dumps)
)


async def _call(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, timeout=aiohttp.ClientTimeout(total=30), **kwargs) as response,
    ):
        return response.status, await response.read()


def call(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    return asyncio.run(_call(method, url, **kwargs))


async def _open(url: str, **kwargs: Any) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=30), **kwargs) as response,
    ):
        if response.status == 200:  # a live stream (it may wait for an answer): its opening is enough
            return response.status, await response.content.readuntil(b"\n\n")
        return response.status, await response.read()


def open_stream(url: str, **kwargs: Any) -> tuple[int, bytes]:
    """GET an event stream: a valid cursor opens a live stream, which is not read to its end (with
    `until=end` it waits for the next answer's end: `Last-Event-ID: 0` on an idle conversation)."""
    return asyncio.run(_open(url, **kwargs))


def bearer(user: str = "fuzzer") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}"}


def conversation(gateway: GatewayProcess) -> str:
    status, body = call("POST", f"{gateway.base}/v1/conversations", json={}, headers=bearer())
    assert status == 201
    return json.loads(body)["id"]


def still_serving(gateway: GatewayProcess) -> bool:
    return gateway.service.running and call("GET", f"{gateway.base}/healthz")[0] == 200


@pytest.mark.scenario(
    "malformed HTTP input (hypothesis)",
    "generated bodies (JSON of any shape, raw bytes), chat requests, Last-Event-ID / after / "
    "limit / cursor values, against messages, chat completions, conversations and events",
    "4xx or 2xx for each, never 5xx; the gateway process keeps serving",
)
def test_generated_http_input_never_makes_a_server_error(
    standalone_gateway: GatewayProcess, scenario: Scenario
) -> None:
    """Generated bodies, headers and queries get client errors or answers, never a 5xx."""
    gateway, statuses = standalone_gateway, set()

    @FAST
    @given(body=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain", ""]))
    def messages(body: bytes, content_type: str) -> None:
        headers = {**bearer(), **({"Content-Type": content_type} if content_type else {})}
        status, text = call(
            "POST",
            f"{gateway.base}/v1/conversations/{conversation(gateway)}/messages",
            data=body,
            headers=headers,
        )
        statuses.add(status)
        assert status < 500, text[:300]

    @FAST
    @given(body=message_bodies)
    def structured_messages(body: dict[str, Any]) -> None:
        status, text = call(
            "POST",
            f"{gateway.base}/v1/conversations/{conversation(gateway)}/messages",
            json=body,
            headers=bearer(),
        )
        statuses.add(status)
        assert status < 500, text[:300]

    @FAST
    @given(body=chat_bodies)
    def chat(body: dict[str, Any]) -> None:
        status, text = call("POST", f"{gateway.base}/v1/chat/completions", json=body, headers=bearer())
        statuses.add(status)
        assert status < 500, text[:300]

    @FAST
    @given(last_event_id=header_text, after=header_text, limit=header_text, cursor=header_text)
    def queries(last_event_id: str, after: str, limit: str, cursor: str) -> None:
        cid = conversation(gateway)
        status, text = open_stream(
            f"{gateway.base}/v1/conversations/{cid}/events",
            params={"after": after, "until": "end"},
            headers={**bearer(), "Last-Event-ID": last_event_id},
        )
        statuses.add(status)
        assert status < 500, text[:300]
        status, text = call(
            "GET",
            f"{gateway.base}/v1/conversations",
            params={"limit": limit, "cursor": cursor},
            headers=bearer(),
        )
        statuses.add(status)
        assert status < 500, text[:300]

    for run in (messages, structured_messages, chat, queries):
        run()
    serving = still_serving(gateway)
    scenario.observed = f"statuses seen {sorted(statuses)}; still serving: {serving}"
    assert serving


@pytest.mark.scenario(
    "malformed WebSocket frames (hypothesis)",
    "generated text frames (any JSON, plain text, near-valid frames), then a ping",
    "each bad frame answered with a `rejected` frame, the connection stays open (pong)",
)
def test_generated_websocket_frames_are_rejected_not_fatal(
    standalone_gateway: GatewayProcess, scenario: Scenario
) -> None:
    """Generated frames never close the socket with an error: the next ping still gets its pong."""
    gateway, kinds = standalone_gateway, set()

    async def exchange(frame: str) -> list[str]:
        seen = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{gateway.base}/v1/ws", headers=bearer()) as ws:
                await ws.send_str(frame)
                await ws.send_str('{"type": "ping"}')
                async for msg in ws:
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    seen.append(json.loads(msg.data).get("type", "event"))
                    if seen[-1] == "pong":
                        break
        return seen

    @FAST
    @given(frame=ws_frames)
    def frames(frame: str) -> None:
        seen = asyncio.run(asyncio.wait_for(exchange(frame), 30))
        kinds.update(seen)
        assert seen[-1] == "pong"

    frames()
    serving = still_serving(gateway)
    scenario.observed = f"frame types answered {sorted(kinds)}; still serving: {serving}"
    assert serving


def run_schemathesis(
    gateway: GatewayProcess, output_dir: Path, scenario: Scenario, *, examples: int, max_time_s: int
) -> None:
    report = output_dir / "schemathesis.ndjson"
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{gateway.base}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(examples),
        "--seed",
        "8",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "20",
        "--max-time",
        str(max_time_s),
        "--exclude-operation-id",
        "followEvents",
        "--exclude-operation-id",
        "websocket",
        "--header",
        f"Authorization: Bearer {make_token('schemathesis')}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=max_time_s + 120)
    (output_dir / "schemathesis.txt").write_text(run.stdout + run.stderr)
    cases = [line.strip() for line in run.stdout.splitlines() if "generated" in line and "passed" in line]
    serving = still_serving(gateway)
    scenario.observed = (
        f"schemathesis exit {run.returncode}; {cases[-1] if cases else 'no case count'}; "
        f"still serving: {serving}"
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert serving


SCHEMATHESIS = (
    "schemathesis 4 against /openapi.json (examples, coverage, fuzzing), every operation but the "
    "endless event follow and the WebSocket upgrade"
)


@pytest.mark.scenario(
    "OpenAPI-driven fuzzing (schemathesis, fast)",
    SCHEMATHESIS + "; 5 examples per operation",
    "not_a_server_error passes for every operation; the gateway keeps serving",
)
def test_schemathesis_finds_no_server_error(
    standalone_gateway: GatewayProcess, output_dir: Path, scenario: Scenario
) -> None:
    """schemathesis, driven by the gateway's own OpenAPI description, provokes no 5xx."""
    run_schemathesis(standalone_gateway, output_dir, scenario, examples=5, max_time_s=20)


@pytest.mark.slow
@pytest.mark.scenario(
    "OpenAPI-driven fuzzing (schemathesis, long)",
    SCHEMATHESIS + "; 200 examples per operation",
    "not_a_server_error passes for every operation; the gateway keeps serving",
)
def test_schemathesis_long_run_finds_no_server_error(
    standalone_gateway: GatewayProcess, output_dir: Path, scenario: Scenario
) -> None:
    """A long schemathesis run (up to 10 minutes) provokes no 5xx either."""
    run_schemathesis(standalone_gateway, output_dir, scenario, examples=200, max_time_s=600)
