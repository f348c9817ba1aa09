"""From feedback to cases: low-rated answers of a real gateway become draft cases, redacted."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from agent_registry import version_of
from evaluation.cases import load_cases
from evaluation.client import GatewayClient
from evaluation.feedback_cases import draft_case, export_feedback
from evaluation.harness import Target, in_process_gateway
from evaluation.judge import openai_judge
from evaluation.runner import run_cases
from tests.fixtures.evaluation import ROOT

SECRET_KEY = "sk-" + "A1b2C3d4E5f6G7h8I9j0KLMN"


async def _rate(
    session: aiohttp.ClientSession,
    target: Target,
    cid: str,
    message_id: str,
    rating: int,
    comment: str | None = None,
) -> None:
    body: dict[str, Any] = {"message_id": message_id, "rating": rating}
    if comment:
        body["comment"] = comment
    async with session.post(
        f"{target.base_url}/v1/conversations/{cid}/feedback",
        json=body,
        headers={"Authorization": f"Bearer {target.token}"},
    ) as resp:
        assert resp.status in (200, 201), await resp.text()


async def _cli(redis_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evaluation",
        "export-feedback",
        *args,
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)  # a hang guard
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_low_ratings_become_draft_cases(
    redis_url: str, aredis: aioredis.Redis, default_document: dict[str, Any], tmp_path: Path
) -> None:
    """Conversations rated 1 and 2 are exported (secrets masked), a 5 and a re-rated answer are not;
    the file loads as cases and runs, its judged check graded."""
    version = version_of(default_document)
    out = tmp_path / "drafts.yaml"
    async with in_process_gateway([default_document], redis_url=redis_url) as target:
        async with aiohttp.ClientSession() as session:
            client = GatewayClient(target.base_url, target.token, session)
            disliked = await client.create_conversation(version)
            first = await client.run_turn(disliked, "Good morning")
            second = await client.run_turn(disliked, f"my key is {SECRET_KEY}, why does login fail?")
            assert first.message_id and second.message_id
            await _rate(
                session, target, disliked, second.message_id, 1, "useless, it only echoed Bearer abc.def.ghi"
            )
            await _rate(session, target, disliked, first.message_id, 2)
            await _rate(session, target, disliked, first.message_id, 4)  # changed their mind: not exported
            liked = await client.create_conversation(version)
            good = await client.run_turn(liked, "Thanks a lot")
            assert good.message_id
            await _rate(session, target, liked, good.message_id, 5)
            gone = await client.create_conversation(version)
            lost = await client.run_turn(gone, "hello?")
            assert lost.message_id
            await _rate(session, target, gone, lost.message_id, 2)
            await aredis.delete(f"gw:conv:{{{gone}}}:msgs")  # the conversation expired since

        code, stdout, stderr = await _cli(redis_url, "--max-rating", "2", "--out", str(out))
        assert code == 0, stderr
        assert f"1 draft cases from 2 ratings <= 2 (1 conversations expired): {out}" in stderr
        text = out.read_text()
        assert SECRET_KEY not in text and "abc.def.ghi" not in text and "[REDACTED]" in text
        [case] = load_cases(out)
        assert case.id == f"fb-{second.message_id}"[:43]
        assert [turn.user for turn in case.turns] == [
            "Good morning",
            "my key is [REDACTED], why does login fail?",
        ]
        assert case.tags == ["feedback", "draft", "rating-1"]
        assert case.description.startswith(
            f'rated 1/5 on {version} and said "useless, it only echoed Bearer [REDACTED]'
        )
        assert "The disliked answer: Hello! I am the scripted local model." in case.description
        judge = case.turns[-1].expect.judge
        assert judge is not None and judge.rubric.startswith("DRAFT") and judge.threshold == 0.7

        assert target.llm_base_url
        grader = openai_judge(target.llm_base_url, "k", "judge")
        try:
            run = await run_cases(target, [case], version, judge=grader)
        finally:
            await grader.close()
    [result] = run.results
    assert len(result.turns) == 2 and result.failure is None
    assert any(
        check.check.startswith("judge") and check.detail.startswith("score") for check in result.checks
    )

    code, stdout, _ = await _cli(redis_url, "--max-rating", "5", "--version", version)
    assert code == 0 and "# Draft cases from user feedback (rating <= 5)" in stdout
    assert stdout.count("- id: fb-") == 3
    code, _, stderr = await _cli(redis_url, "--max-rating", "0")
    assert code == 2 and "--max-rating" in stderr


def test_answers_missing_from_the_conversation_are_skipped() -> None:
    """A rating whose message is not an assistant message of the conversation yields no case."""
    entry = {"conversation_id": "c", "message_id": "m1", "rating": 1, "comment": None}
    assert draft_case(entry, "v@1", [{"id": "m1", "role": "user", "content": "hi"}]) is None
    assert (
        draft_case(entry, "v@1", [{"id": "m1", "role": "assistant", "content": "hi"}]) is None
    )  # no user turn


async def test_export_of_nothing(aredis: aioredis.Redis) -> None:
    """With no feedback the export is empty but still a valid header."""
    export = await export_feedback(aredis, max_rating=2)
    assert export.cases == [] and export.to_yaml(2).startswith("# Draft cases")
