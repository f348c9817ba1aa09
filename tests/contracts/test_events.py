"""Client stream events: one shape for WebSocket and SSE, discriminated by type."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent_contracts import (
    ActionStatusEvent,
    ErrorEvent,
    MessageEndEvent,
    TokenEvent,
    ToolCallEvent,
    parse_event,
)

EVENTS = [
    TokenEvent(id=1, conversation_id="c1", message_id="m1", text="Hel"),
    ToolCallEvent(
        id=2, conversation_id="c1", tool_call_id="call_1", name="create_ticket", arguments={"title": "x"}
    ),
    ActionStatusEvent(
        id=3,
        conversation_id="c1",
        action_id="a1",
        name="create_ticket",
        status="retrying",
        attempts=1,
        max_attempts=3,
    ),
    MessageEndEvent(id=4, conversation_id="c1", finish_reason="stop", usage={"completion_tokens": 3}),
    ErrorEvent(
        id=5,
        conversation_id="c1",
        code="upstream_timeout",
        message="the model did not answer",
        retryable=True,
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_event_round_trips_through_json(event: object) -> None:
    """Each event parses back from its JSON into the same typed event."""
    assert parse_event(event.to_json()) == event  # type: ignore[attr-defined]


def test_event_json_names_its_type() -> None:
    """The JSON carries `type`, which clients and the SSE `event:` field use."""
    assert '"type":"token"' in EVENTS[0].to_json()


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "token", "id": 0, "conversation_id": "c", "text": "x"},
        {"type": "nope", "id": 1, "conversation_id": "c"},
        {"type": "token", "id": 1, "conversation_id": "c"},
    ],
)
def test_event_rejects_bad_shapes(bad: dict[str, object]) -> None:
    """Ids start at 1, the type must be known and required fields present."""
    with pytest.raises(ValidationError):
        parse_event(bad)
