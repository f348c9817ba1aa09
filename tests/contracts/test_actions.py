"""ActionRequest and ActionResult: validation and JSON round trips on the wire format."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
from pydantic import ValidationError

from agent_contracts import ActionRequest, ActionResult, ActionStatus, is_forward_transition
from agent_contracts.actions import MAX_ARGUMENTS_BYTES


def make_request(**overrides: object) -> ActionRequest:
    fields: dict[str, object] = {
        "idempotency_key": "conv-1:call_abc",
        "conversation_id": "conv-1",
        "user_id": "alice",
        "name": "create_ticket",
        "arguments": {"title": "Printer on fire", "priority": "high"},
        "agent_config_version": "support@3f2a9c",
        "trace_context": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    }
    fields.update(overrides)
    return ActionRequest(**fields)


def test_request_round_trips_through_json() -> None:
    """A request serialized to the wire and parsed back is equal to the original."""
    request = make_request()
    assert ActionRequest.model_validate_json(request.to_json()) == request


def test_request_wire_names_are_camel_case() -> None:
    """The wire uses camelCase, the names both deployables and Cosmos DB share."""
    wire = json.loads(make_request().to_json())
    assert {
        "actionId",
        "idempotencyKey",
        "conversationId",
        "userId",
        "agentConfigVersion",
        "createdAt",
    } <= wire.keys()
    assert uuid.UUID(wire["actionId"])


def test_request_rejects_unknown_fields() -> None:
    """An unexpected field is an error, not silently dropped."""
    wire = json.loads(make_request().to_json())
    wire["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        ActionRequest.model_validate(wire)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "drop table;"), ("idempotency_key", ""), ("conversation_id", ""), ("arguments", [1, 2])],
)
def test_request_rejects_bad_fields(field: str, value: object) -> None:
    """Malformed names, empty keys and non-object arguments are refused, naming the field."""
    with pytest.raises(ValidationError) as info:
        make_request(**{field: value})
    assert field in str(info.value)


def test_request_rejects_oversized_arguments() -> None:
    """Arguments larger than a bus message can carry are refused with their size."""
    with pytest.raises(ValidationError, match="limit"):
        make_request(arguments={"blob": "x" * (MAX_ARGUMENTS_BYTES + 1)})


def test_request_rejects_naive_timestamp() -> None:
    """created_at must carry a timezone, so both ends agree on the instant."""
    with pytest.raises(ValidationError, match="timezone"):
        make_request(created_at=datetime(2026, 1, 1))


def test_result_document_shape() -> None:
    """The result document uses id = action id and carries conversationId for the partition key."""
    request = make_request()
    doc = ActionResult.queued_for(request).to_wire()
    assert doc["id"] == str(request.action_id)
    assert doc["conversationId"] == "conv-1"
    assert doc["status"] == "queued"
    assert ActionResult.model_validate(doc).to_wire() == doc


def test_result_ignores_cosmos_system_fields() -> None:
    """Cosmos adds _rid, _etag and friends; reading a stored document back still validates."""
    doc = ActionResult.queued_for(make_request()).to_wire() | {"_rid": "x", "_etag": "y", "_ts": 1}
    assert ActionResult.model_validate(doc).status is ActionStatus.queued


@pytest.mark.parametrize(
    ("current", "cur_attempts", "new", "new_attempts", "allowed"),
    [
        (ActionStatus.queued, 0, ActionStatus.running, 1, True),
        (ActionStatus.running, 1, ActionStatus.retrying, 1, True),
        (ActionStatus.retrying, 1, ActionStatus.running, 2, True),
        (ActionStatus.running, 2, ActionStatus.succeeded, 2, True),
        (ActionStatus.running, 2, ActionStatus.running, 1, False),
        (ActionStatus.retrying, 1, ActionStatus.running, 1, False),
        (ActionStatus.running, 1, ActionStatus.queued, 0, False),
        (ActionStatus.succeeded, 1, ActionStatus.failed, 2, False),
        (ActionStatus.dead_lettered, 3, ActionStatus.running, 4, False),
    ],
)
def test_status_transitions_only_move_forward(
    current: ActionStatus, cur_attempts: int, new: ActionStatus, new_attempts: int, allowed: bool
) -> None:
    """A stored status never moves backwards and a final status never changes."""
    assert is_forward_transition(current, cur_attempts, new, new_attempts) is allowed
