"""Scoring a turn: each expectation becomes a check that passes or fails with a reason."""

from __future__ import annotations

from evaluation.cases import Expect
from evaluation.checks import TurnResult, check_turn


def _result(**fields) -> TurnResult:
    return TurnResult(user="q", **fields)


def _failed(expect: dict, result: TurnResult) -> list[str]:
    return [c.check for c in check_turn(1, Expect.model_validate(expect), result) if not c.passed]


def test_content_checks() -> None:
    """contains, not_contains and regex look at the reply text."""
    result = _result(text="Your ticket T-9 is open", finish_reason="stop")
    assert _failed({"contains": ["T-9"], "not_contains": ["closed"], "regex": [r"T-\d+"]}, result) == []
    assert _failed({"contains": ["closed"], "not_contains": ["open"], "regex": [r"^No"]}, result) == [
        "contains 'closed'",
        "not_contains 'open'",
        "regex '^No'",
    ]


def test_json_schema_check_parses_the_reply() -> None:
    """The reply must be JSON satisfying the schema."""
    schema = {"type": "object", "required": ["ticket"], "properties": {"ticket": {"type": "string"}}}
    assert _failed({"json_schema": schema}, _result(text='{"ticket": "T-1"}')) == []
    assert _failed({"json_schema": schema}, _result(text='{"ticket": 1}')) == ["json_schema"]
    [check] = check_turn(1, Expect(json_schema=schema), _result(text="not json"))
    assert "not JSON" in check.detail


def test_tool_calls_match_by_subset_exact_and_schema() -> None:
    """Expected calls match in any order; arguments are a subset unless exact; extras fail."""
    calls = [
        {"name": "get_ticket", "arguments": {"ticket_id": "T-1"}},
        {"name": "create_ticket", "arguments": {"title": "x", "priority": "high"}},
    ]
    result = _result(tool_calls=calls, finish_reason="tool_calls")
    assert (
        _failed(
            {
                "tool_calls": [
                    {"name": "create_ticket", "arguments": {"priority": "high"}},
                    {"name": "get_ticket", "arguments": {"ticket_id": "T-1"}, "exact": True},
                ]
            },
            result,
        )
        == []
    )
    assert _failed(
        {
            "tool_calls": [{"name": "create_ticket", "arguments": {"priority": "high"}, "exact": True}],
            "allow_extra_tool_calls": True,
        },
        result,
    ) == ["tool_call create_ticket"]
    assert _failed({"tool_calls": [{"name": "get_ticket"}]}, result) == ["no_extra_tool_calls"]
    schema = {"type": "object", "properties": {"priority": {"enum": ["low"]}}}
    assert _failed(
        {
            "tool_calls": [{"name": "create_ticket", "arguments_schema": schema}],
            "allow_extra_tool_calls": True,
        },
        result,
    ) == ["tool_call create_ticket"]
    assert _failed({"no_tool_calls": True}, result) == ["no_tool_calls"]


def test_limits_and_finish_reason() -> None:
    """Latency, time to first token, tokens (usage first) and finish reason are checked."""
    result = _result(
        text="a b c",
        finish_reason="length",
        latency_ms=900,
        ttft_ms=300,
        usage={"completion_tokens": 40},
        token_events=3,
    )
    assert _failed({"max_latency_ms": 1000, "max_ttft_ms": 500, "max_tokens": 40}, result) == []
    assert _failed(
        {"max_latency_ms": 500, "max_ttft_ms": 100, "max_tokens": 10, "finish_reason": "stop"}, result
    ) == ["finish_reason=stop", "latency<=500ms", "ttft<=100ms", "tokens<=10"]
    assert _failed({"max_ttft_ms": 100}, _result(text="")) == ["ttft<=100ms"]


def test_errors_fail_unless_expected() -> None:
    """An error event fails the turn, unless the case expects that error code."""
    result = _result(error={"code": "upstream_unavailable", "message": "gone"})
    assert _failed({"contains": []}, result) == ["no_error"]
    assert _failed({"error": "upstream_unavailable"}, result) == []
    assert _failed({"error": "rate_limited"}, result) == ["error=rate_limited"]
