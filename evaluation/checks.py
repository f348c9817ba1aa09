"""Scoring one answered turn against its expectations: each check passes or fails with a reason."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from evaluation.cases import Expect, ExpectedToolCall


@dataclass
class TurnResult:
    """What the gateway streamed for one user turn."""

    user: str
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {name, arguments}
    actions: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    config_version: str | None = None
    message_id: str | None = None
    error: dict[str, Any] | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    token_events: int = 0

    @property
    def completion_tokens(self) -> int:
        if self.usage and "completion_tokens" in self.usage:
            return int(self.usage["completion_tokens"])
        return self.token_events

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "text": self.text,
            "tool_calls": self.tool_calls,
            "actions": self.actions,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "config_version": self.config_version,
            "message_id": self.message_id,
            "error": self.error,
            "latency_ms": round(self.latency_ms, 1),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "completion_tokens": self.completion_tokens,
        }


@dataclass(frozen=True)
class CheckResult:
    turn: int
    check: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "check": self.check, "passed": self.passed, "detail": self.detail}


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


def _tool_call_matches(spec: ExpectedToolCall, call: dict[str, Any]) -> str | None:
    """None when the call satisfies the spec, else why not."""
    if call.get("name") != spec.name:
        return f"name {call.get('name')!r}"
    arguments = call.get("arguments")
    if spec.arguments is not None:
        ok = arguments == spec.arguments if spec.exact else _subset(spec.arguments, arguments)
        if not ok:
            return f"arguments {json.dumps(arguments, sort_keys=True)}"
    if spec.arguments_schema is not None:
        errors = sorted(Draft202012Validator(spec.arguments_schema).iter_errors(arguments), key=str)
        if errors:
            return f"arguments break the schema: {errors[0].message}"
    return None


def check_turn(number: int, expect: Expect, result: TurnResult) -> list[CheckResult]:
    checks: list[CheckResult] = []

    def add(name: str, passed: bool, detail: str = "") -> None:
        checks.append(CheckResult(number, name, passed, "" if passed else detail))

    if expect.error is None and result.error is not None:
        add("no_error", False, f"{result.error.get('code')}: {_short(str(result.error.get('message', '')))}")
    if expect.error is not None:
        got = (result.error or {}).get("code")
        add(f"error={expect.error}", got == expect.error, f"error was {got!r}")
    for text in expect.contains:
        add(f"contains {text!r}", text in result.text, f"reply: {_short(result.text)!r}")
    for text in expect.not_contains:
        add(f"not_contains {text!r}", text not in result.text, f"reply: {_short(result.text)!r}")
    for pattern in expect.regex:
        add(
            f"regex {pattern!r}",
            re.search(pattern, result.text) is not None,
            f"reply: {_short(result.text)!r}",
        )
    if expect.json_schema is not None:
        try:
            document = json.loads(result.text)
        except json.JSONDecodeError as exc:
            add("json_schema", False, f"reply is not JSON: {exc.msg}")
        else:
            errors = sorted(Draft202012Validator(expect.json_schema).iter_errors(document), key=str)
            add("json_schema", not errors, errors[0].message if errors else "")
    if expect.no_tool_calls:
        add("no_tool_calls", not result.tool_calls, f"called {[c.get('name') for c in result.tool_calls]}")
    unmatched = list(result.tool_calls)
    for spec in expect.tool_calls:
        reasons = []
        for call in unmatched:
            reason = _tool_call_matches(spec, call)
            if reason is None:
                unmatched.remove(call)
                add(f"tool_call {spec.name}", True)
                break
            reasons.append(reason)
        else:
            add(f"tool_call {spec.name}", False, "; ".join(reasons) or "no tool call was made")
    if expect.tool_calls and not expect.allow_extra_tool_calls:
        add("no_extra_tool_calls", not unmatched, f"also called {[c.get('name') for c in unmatched]}")
    if expect.finish_reason is not None:
        add(
            f"finish_reason={expect.finish_reason}",
            result.finish_reason == expect.finish_reason,
            f"finish_reason was {result.finish_reason!r}",
        )
    if expect.max_latency_ms is not None:
        add(
            f"latency<={expect.max_latency_ms:g}ms",
            result.latency_ms <= expect.max_latency_ms,
            f"took {result.latency_ms:.0f} ms",
        )
    if expect.max_ttft_ms is not None:
        ok = result.ttft_ms is not None and result.ttft_ms <= expect.max_ttft_ms
        add(
            f"ttft<={expect.max_ttft_ms:g}ms",
            ok,
            "no token came" if result.ttft_ms is None else f"first token after {result.ttft_ms:.0f} ms",
        )
    if expect.max_tokens is not None:
        add(
            f"tokens<={expect.max_tokens}",
            result.completion_tokens <= expect.max_tokens,
            f"{result.completion_tokens} tokens",
        )
    return checks
