"""A model's tool-call arguments against the tool's JSON schema (jsonschema, draft 2020-12)."""

from __future__ import annotations

from typing import Any

import pytest

from agent_contracts.tools import parameters_schema
from agent_registry import InvalidToolCall
from agent_registry.tool_arguments import MAX_ARGUMENTS_CHARS, check_arguments, parse_arguments

CREATE = parameters_schema("create_ticket")
GET = parameters_schema("get_ticket")


@pytest.mark.parametrize(
    ("schema", "arguments", "reason"),
    [
        (CREATE, {"priority": "high"}, "arguments.title is required"),
        (CREATE, {"title": "x", "urgency": 1}, "arguments.urgency is not an allowed property"),
        (
            CREATE,
            {"title": "x", "priority": "someday"},
            "arguments.priority must be one of ['low', 'normal', 'high', 'urgent']",
        ),
        (CREATE, {"title": 3}, "arguments.title must be of type string"),
        (CREATE, {"title": ""}, "arguments.title must be at least 1 characters long"),
        (
            CREATE,
            {"title": "x", "description": "d" * 5001},
            "arguments.description must be at most 5000 characters long",
        ),
        (GET, {"ticket_id": "T 1; DROP"}, "arguments.ticket_id does not match the pattern ^[A-Za-z0-9\\-]+$"),
        (
            {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "integer"}}}},
            {"tags": [1, "two"]},
            "arguments.tags[1] must be of type integer",
        ),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}},
            {"n": 9},
            "arguments.n: 9 is greater than the maximum of 5",
        ),
    ],
)
def test_bad_arguments_are_refused_with_where_and_why(
    schema: dict[str, Any], arguments: dict[str, Any], reason: str
) -> None:
    """Each problem names its place in the arguments; keywords the old subset ignored (pattern, items, maximum) count."""
    with pytest.raises(InvalidToolCall) as caught:
        check_arguments(schema, arguments)
    assert str(caught.value) == reason


def test_valid_arguments_pass() -> None:
    """Arguments that satisfy the schema raise nothing."""
    check_arguments(CREATE, {"title": "Printer on fire", "priority": "urgent", "description": "smoke"})
    check_arguments(GET, {"ticket_id": "T-1"})


def test_long_values_are_not_echoed() -> None:
    """A reason never quotes a long value the model produced."""
    schema = {"type": "object", "properties": {"x": {"const": "a"}}}
    with pytest.raises(InvalidToolCall) as caught:
        check_arguments(schema, {"x": "z" * 10_000})
    assert len(str(caught.value)) <= 220


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "arguments are not valid JSON"),
        ("[1, 2]", "arguments must be a JSON object"),
        ('"text"', "arguments must be a JSON object"),
        ("{}" + " " * MAX_ARGUMENTS_CHARS, "the limit is"),
    ],
)
def test_unparseable_arguments(raw: str, reason: str) -> None:
    """Not JSON, not an object, or over the size limit: refused before any schema check."""
    with pytest.raises(InvalidToolCall, match=reason):
        parse_arguments(raw)
    assert parse_arguments("") == {}
