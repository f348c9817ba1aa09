"""Operational surface: metrics, the OpenAPI description, the dev token command, agent configs,
and a slow client that does not hold up the answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from local_stack import processes
from streaming_gateway.token import make_token as cli_make_token
from tests.fixtures.gateway import SECRET, Gateway
from tests.gateway.helpers import data, read_events, text_of
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
SSE = {"Accept": "text/event-stream"}


async def test_metrics_exposes_stream_counters(gateway: Gateway, script) -> None:
    """/metrics is Prometheus text with the stream, latency, token, error, auth and limit series."""
    await script([{"match": "", "reply": "one two"}])
    cid = await gateway.create_conversation()
    async with gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=SSE
    ) as response:
        await read_events(response)
    async with gateway.request("GET", "/v1/conversations", user=None) as response:
        assert response.status == 401
    async with gateway.session.get(gateway.url("/metrics")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    for name in (
        "gateway_active_streams",
        "gateway_time_to_first_token_seconds_bucket",
        "gateway_stream_duration_seconds_bucket",
        "gateway_tokens_streamed_total",
        "gateway_stream_errors_total",
        "gateway_auth_failures_total",
        "gateway_rate_limit_rejections_total",
    ):
        assert name in text, name
    assert 'gateway_auth_failures_total{reason="missing"} 1.0' in text
    assert 'gateway_stream_duration_seconds_count{transport="sse"} 1.0' in text


async def test_openapi_describes_the_api(gateway: Gateway) -> None:
    """/openapi.json is an OpenAPI 3.1 document covering every route, with resolvable references."""
    async with gateway.session.get(gateway.url("/openapi.json")) as response:
        spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    for path in (
        "/v1/chat/completions",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/events",
        "/v1/conversations/{conversation_id}/cancel",
        "/v1/ws",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    refs = {part.split("/")[-1] for part in _refs(spec)}
    assert refs <= set(spec["components"]["schemas"])
    assert "/" not in spec["paths"]  # left free for the web client
    assert spec["components"]["schemas"]["MessageIn"]["required"] == ["content"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_token_command_prints_a_token_the_gateway_accepts() -> None:
    """python -m streaming_gateway.token signs HS256 with AUTH_JWT_SECRET, issuer, audience and ttl."""
    env = {**os.environ, "AUTH_JWT_SECRET": SECRET, "AUTH_ISSUER": "local", "AUTH_AUDIENCE": "gateway"}
    result = subprocess.run(
        [sys.executable, "-m", "streaming_gateway.token", "--user", "alice", "--ttl", "120"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    claims = jwt.decode(
        result.stdout.strip(), SECRET, algorithms=["HS256"], audience="gateway", issuer="local"
    )
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 120 and "roles" not in claims
    operator = subprocess.run(
        [sys.executable, "-m", "streaming_gateway.token", "--user", "olga", "--role", "Agents.Operator"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    claims = jwt.decode(operator.stdout.strip(), SECRET, algorithms=["HS256"], audience="gateway")
    assert claims["roles"] == ["Agents.Operator"]
    bad = subprocess.run(
        [sys.executable, "-m", "streaming_gateway.token", "--user", "alice", "--ttl", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--ttl" in bad.stderr
    assert jwt.decode(cli_make_token(SECRET, "bob", 60), SECRET, algorithms=["HS256"])["sub"] == "bob"


def test_gateway_refuses_to_start_with_a_bad_agent_config(tmp_path: Path) -> None:
    """A malformed AGENT_CONFIG_PATH stops the start with a line naming the file."""
    broken = tmp_path / "agent.json"
    broken.write_text("{")
    env = {**os.environ, "AUTH_JWT_SECRET": SECRET, "AGENT_CONFIG_PATH": str(broken)}
    result = subprocess.run(
        [sys.executable, "-m", "streaming_gateway"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "agent.json" in result.stderr


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("false", "asyncio")])
def test_gateway_process_runs_on_uvloop_unless_turned_off(
    setting: str | None, loop: str, redis_url: str, output_dir: Path
) -> None:
    """python -m streaming_gateway serves on uvloop's event loop; GATEWAY_UVLOOP=false on asyncio's."""
    port = processes.free_port()
    log_path = output_dir / f"gateway-loop-{loop}.log"
    log_path.unlink(missing_ok=True)
    env = {"AUTH_JWT_SECRET": SECRET, "REDIS_URL": redis_url, "GATEWAY_PORT": str(port)}
    if setting is not None:
        env["GATEWAY_UVLOOP"] = setting
    service = processes.python_module("gateway", "streaming_gateway", port, env=env, log_path=log_path)
    try:
        service.start()
    finally:
        service.stop()
    assert f"event loop: {loop}" in log_path.read_text()


async def test_slow_reader_does_not_hold_up_the_answer(gateway: Gateway, script) -> None:
    """A client that stops reading does not stall the model: the answer completes into the log,
    and the slow client later reads all of it, in order."""
    await script([{"match": "", "tokens": 800}])
    cid = await gateway.create_conversation()
    slow = await gateway.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "go"}, headers=SSE
    )
    assert slow.status == 200  # and now it reads nothing for a while

    async def answer_done() -> bool:
        async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
            body = await response.json()
        return body["message_count"] == 2

    await eventually(answer_done, "the answer to complete while the client is not reading")
    events = await read_events(slow)
    slow.close()
    assert text_of(events).split() == [f"word{i}" for i in range(800)]
    assert data(events[-1])["finish_reason"] == "stop"
    assert [e.number for e in events] == list(range(1, 802))
