"""Offline runs through the real gateway (create_app in-process, real Redis, scripted upstream)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent_contracts.redis_connection import connect
from agent_registry import read_document, version_of
from evaluation.cases import load_cases
from evaluation.harness import in_process_gateway
from evaluation.report import run_table
from evaluation.runner import run_cases
from tests.fixtures.evaluation import DEFAULT_CASES, DEFAULT_CONFIG, ROOT
from tests.redis_reads import stream_entries


async def test_default_cases_pass_on_the_default_config(
    redis_url: str, default_document: dict[str, Any]
) -> None:
    """Every shipped case passes for the shipped config, answered by the gateway pipeline itself."""
    version = version_of(default_document)
    async with in_process_gateway([default_document], redis_url=redis_url) as target:
        run = await run_cases(target, load_cases(DEFAULT_CASES), version, threshold=0.9)
    assert [r.case.id for r in run.results if not r.passed] == []
    assert run.pass_rate == 1.0 and run.gate_passed
    greeting = run.results[0]
    assert greeting.turns[0].config_version == version
    assert greeting.turns[0].message_id
    assert greeting.turns[0].ttft_ms is not None and greeting.tokens > 0
    ticket = run.results[1].turns[0]
    assert ticket.tool_calls[0]["name"] == "create_ticket" and ticket.tool_calls[0]["action_id"]
    assert ticket.actions[0]["status"] == "queued"
    assert "4/4 cases passed" in run_table(run)


async def test_gateway_errors_are_scored_not_crashed(
    redis_url: str, default_document: dict[str, Any], tmp_path: Path
) -> None:
    """An upstream failure becomes a failed check with the error code; an expected error passes."""
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps({"rules": [{"match": "", "error": {"status": 400, "message": "bad request"}}]})
    )
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- {id: fails, turns: [hi], expect: {contains: [hello]}}\n"
        "- {id: expects-error, turns: [hi], expect: {error: upstream_rejected}}\n"
    )
    async with in_process_gateway([default_document], redis_url=redis_url, script=str(script)) as target:
        run = await run_cases(target, load_cases(cases), version_of(default_document))
    fails, expected = run.results
    assert not fails.passed
    assert any(c.check == "no_error" and "upstream_rejected" in c.detail for c in fails.checks)
    assert expected.passed


async def test_unknown_version_fails_the_case_cleanly(
    redis_url: str, default_document: dict[str, Any]
) -> None:
    """A version the gateway does not know fails each case with the gateway's reason."""
    async with in_process_gateway([default_document], redis_url=redis_url) as target:
        run = await run_cases(target, load_cases(DEFAULT_CASES)[:1], "nope@000000000000")
    [result] = run.results
    assert not result.passed and result.failure is not None and "unknown_agent_config" in result.failure


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_cli_gates_on_the_threshold(tmp_path: Path) -> None:
    """run exits 0 at or above the threshold, 1 below it, and writes the JSON report either way."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        DEFAULT_CASES.read_text() + "\n  - {id: impossible, turns: [hi], expect: {contains: [zebra]}}\n"
    )
    report = tmp_path / "out" / "report.json"
    passing = _cli(
        "run",
        "--config",
        str(DEFAULT_CONFIG),
        "--cases",
        str(cases),
        "--threshold",
        "0.8",
        "--report",
        str(report),
    )
    assert passing.returncode == 0, passing.stderr
    assert "4/5 cases passed (80%)" in passing.stdout
    data = json.loads(report.read_text())
    assert data["summary"]["pass_rate"] == 0.8 and data["summary"]["gate_passed"] is True
    impossible = next(c for c in data["cases"] if c["id"] == "impossible")
    assert impossible["passed"] is False and impossible["checks"][0]["check"] == "contains 'zebra'"
    failing = _cli("run", "--config", str(DEFAULT_CONFIG), "--cases", str(cases), "--threshold", "0.9")
    assert failing.returncode == 1
    assert "FAILED" in failing.stdout


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    """Invalid cases, an invalid threshold or a bad config file exit 2 with a message."""
    bad_cases = tmp_path / "bad.yaml"
    bad_cases.write_text("cases: []")
    assert "holds no cases" in _cli("run", "--config", str(DEFAULT_CONFIG), "--cases", str(bad_cases)).stderr
    result = _cli("run", "--config", str(DEFAULT_CONFIG), "--cases", str(DEFAULT_CASES), "--threshold", "3")
    assert result.returncode == 2 and "threshold" in result.stderr
    bad_config = tmp_path / "c.json"
    bad_config.write_text(json.dumps({"label": "x", "model": "m", "temperature": 7}))
    result = _cli("run", "--config", str(bad_config), "--cases", str(DEFAULT_CASES))
    assert result.returncode == 2 and "temperature" in result.stderr


async def test_turn_can_wait_for_its_actions(
    redis_url: str, default_document: dict[str, Any], tmp_path: Path
) -> None:
    """wait_for_actions reads on past the tool calls to the model's answer after the action result.

    The action pipeline here is a stand-in (named so): it takes the request off the real Redis
    Streams bus and reports success through the real update sink, as the worker would."""
    import asyncio

    from action_bus.local import RedisUpdateSink
    from agent_contracts import ActionRequest, ActionResult, ActionStatus

    async def stand_in_worker(stop: asyncio.Event) -> None:
        client = await connect(redis_url, decode_responses=True)
        done: set[str] = set()
        try:
            while not stop.is_set():
                for _, fields in await stream_entries(client, "bus:{actions}"):
                    request = ActionRequest.model_validate_json(fields["body"])
                    if str(request.action_id) in done:
                        continue
                    done.add(str(request.action_id))
                    result = ActionResult.queued_for(request).model_copy(
                        update={
                            "status": ActionStatus.succeeded,
                            "attempts": 1,
                            "result": {"ticket_id": "T-42"},
                        }
                    )
                    await RedisUpdateSink(client).publish_update(result)
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- id: waits\n"
        "  turns:\n"
        "    - user: please open a ticket\n"
        "      wait_for_actions: true\n"
        "      expect:\n"
        "        tool_calls: [{name: create_ticket}]\n"
        "        contains: ['I opened ticket T-42']\n"
        "        finish_reason: stop\n"
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(stand_in_worker(stop))
    try:
        async with in_process_gateway([default_document], redis_url=redis_url) as target:
            run = await run_cases(target, load_cases(cases), version_of(default_document), turn_timeout_s=60)
    finally:
        stop.set()
        await worker
    [result] = run.results
    assert result.passed, result.to_dict()
    assert [a["status"] for a in result.turns[0].actions][-1] == "succeeded"


async def test_cli_against_a_running_gateway(redis_url: str, upstream_base_url: str, tmp_path: Path) -> None:
    """--gateway-url/--token evaluate a gateway that is already running; a config file is published to
    its registry (REDIS_URL) first, and the answers come from that version."""
    import asyncio
    import os
    import secrets

    from aiohttp.test_utils import TestServer

    from streaming_gateway.app import create_app
    from streaming_gateway.settings import Settings
    from streaming_gateway.token import make_token

    secret = secrets.token_urlsafe(40)
    settings = Settings.from_env(
        {
            "AUTH_JWT_SECRET": secret,
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": upstream_base_url,
            "OPENAI_API_KEY": "scripted",
        }
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        variant = tmp_path / "variant.json"
        variant.write_text(
            json.dumps({**read_document(DEFAULT_CONFIG), "label": "variant", "temperature": 0.5})
        )
        report = tmp_path / "report.json"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "EVAL_TOKEN": make_token(secret, "ci", 600, roles=["Agents.Operator"]),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "evaluation",
            "run",
            "--config",
            str(variant),
            "--cases",
            str(DEFAULT_CASES),
            "--gateway-url",
            str(server.make_url("")),
            "--report",
            str(report),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)  # a hang guard
    finally:
        await server.close()
    assert process.returncode == 0, stderr.decode()
    data = json.loads(report.read_text())
    expected = version_of(read_document(variant))
    assert data["config_version"] == expected and data["summary"]["pass_rate"] == 1.0
    assert {turn["config_version"] for case in data["cases"] for turn in case["turns"]} == {expected}
