"""Judged checks: a model grades an answer against a rubric, through the gateway's LLM port.

The judge sees the conversation (user turns, answers, tool calls) and the rubric, and must reply
with one JSON object `{"score": 0..1, "reasoning": "..."}`. The check passes when the score reaches
the case's threshold; the reasoning is reported either way. Any OpenAI-compatible endpoint serves
(`--judge-base-url`, `--judge-model`, JUDGE_API_KEY or OPENAI_API_KEY); the scripted upstream's
default script answers prompts that start with JUDGE_MARKER deterministically, for tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from evaluation.checks import CheckResult, TurnResult
from streaming_gateway.llm.port import ChatModel, ChatRequest, Finish, LLMError, TextDelta

#: First line of every judge prompt; lets a scripted upstream tell judge prompts from chat turns.
JUDGE_MARKER = "GRADE THIS ANSWER"
#: Where the graded answer starts in the prompt (always after the rubric).
ANSWER_MARKER = "Answer to grade:"
MAX_REASONING_CHARS = 1000
MAX_PROMPT_ANSWER_CHARS = 8000

SYSTEM_PROMPT = (
    "You grade one answer of an AI assistant against a rubric. Read the conversation, then reply "
    'with exactly one JSON object and nothing else: {"score": <number from 0 to 1>, "reasoning": '
    '"<one or two sentences>"}. 1 means the answer fully meets the rubric, 0 that it misses it '
    "entirely. Judge only what the rubric asks."
)


@dataclass(frozen=True)
class Verdict:
    score: float | None  # None when the judge's reply could not be used
    reasoning: str


def build_prompt(rubric: str, turns: list[TurnResult]) -> str:
    """The judge's user message: rubric, earlier turns for context, then the answer to grade."""
    *earlier, last = turns
    lines = [JUDGE_MARKER, "", "Rubric:", rubric.strip(), ""]
    if earlier:
        lines.append("Earlier in the conversation:")
        for turn in earlier:
            lines += [f"User: {turn.user}", f"Assistant: {_answer(turn)}"]
        lines.append("")
    lines += [f"User: {last.user}", ANSWER_MARKER, _answer(last)[:MAX_PROMPT_ANSWER_CHARS]]
    return "\n".join(lines)


def _answer(turn: TurnResult) -> str:
    parts = [turn.text] if turn.text else []
    for call in turn.tool_calls:
        parts.append(f"[tool call {call.get('name')}({json.dumps(call.get('arguments'), sort_keys=True)})]")
    if turn.error:
        parts.append(f"[error {turn.error.get('code')}]")
    return "\n".join(parts) or "(no answer)"


def parse_verdict(reply: str) -> Verdict:
    """The score and reasoning in the judge's reply; an unusable reply is a Verdict without score."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    data: Any = None
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
    if not isinstance(data, dict):
        return Verdict(None, f"the judge did not reply with a JSON object: {reply[:200]!r}")
    score, reasoning = data.get("score"), str(data.get("reasoning") or "")[:MAX_REASONING_CHARS]
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return Verdict(None, f"the judge's score {score!r} is not a number from 0 to 1; {reasoning}")
    return Verdict(float(score), reasoning)


class Judge:
    """Grades turns with one model; `grade` never raises for the model's failures (the check fails)."""

    def __init__(self, model: ChatModel, model_name: str, *, max_tokens: int = 400) -> None:
        self._model = model
        self.model_name = model_name
        self._max_tokens = max_tokens

    async def verdict(self, rubric: str, turns: list[TurnResult]) -> Verdict:
        request = ChatRequest(
            model=self.model_name,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": build_prompt(rubric, turns)},
            ],
            temperature=0.0,
            max_tokens=self._max_tokens,
        )
        text: list[str] = []
        try:
            async for delta in self._model.stream(request):
                if isinstance(delta, TextDelta):
                    text.append(delta.text)
                elif isinstance(delta, Finish):
                    break
        except LLMError as exc:
            return Verdict(None, f"the judge model failed: {exc}")
        return parse_verdict("".join(text))

    async def grade(self, turn: int, rubric: str, threshold: float, turns: list[TurnResult]) -> CheckResult:
        verdict = await self.verdict(rubric, turns)
        name = f"judge>={threshold:g}"
        if verdict.score is None:
            return CheckResult(turn, name, False, verdict.reasoning)
        return CheckResult(
            turn, name, verdict.score >= threshold, f"score {verdict.score:.2f}: {verdict.reasoning}"
        )

    async def close(self) -> None:
        await self._model.close()


def openai_judge(base_url: str, api_key: str, model_name: str, *, timeout_s: float = 60.0) -> Judge:
    """A judge on any OpenAI-compatible endpoint, through the gateway's `openai` adapter."""
    import openai

    from streaming_gateway.llm.openai_adapter import OpenAIChatModel

    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1)
    return Judge(OpenAIChatModel(client), model_name)
