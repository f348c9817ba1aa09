"""ActionRequest (what goes on the bus) and ActionResult (the Cosmos DB document).

Field names are snake_case in Python and camelCase on the wire, so the Cosmos partition key
path is `/conversationId` and both deployables read the same JSON.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

#: Largest serialized arguments object we accept; Service Bus standard tier caps a message at
#: 256 KB, and the whole request must fit in one message with room for properties.
MAX_ARGUMENTS_BYTES = 192 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ActionStatus(str, Enum):  # noqa: UP042 (str() of a member must stay 'ActionStatus.x' for logs)
    queued = "queued"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    dead_lettered = "dead_lettered"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ActionStatus.succeeded, ActionStatus.failed, ActionStatus.dead_lettered})

#: Rank of each status: a stored status only ever moves to a higher rank, except that running and
#: retrying alternate while attempts go on (the attempt count orders those).
ACTION_STATUS_ORDER: dict[ActionStatus, int] = {
    ActionStatus.queued: 0,
    ActionStatus.running: 1,
    ActionStatus.retrying: 1,
    ActionStatus.succeeded: 2,
    ActionStatus.failed: 2,
    ActionStatus.dead_lettered: 2,
}


def is_forward_transition(
    current: ActionStatus, current_attempts: int, new: ActionStatus, new_attempts: int
) -> bool:
    """True when (new, new_attempts) may replace (current, current_attempts) in the store."""
    if current.is_final:
        return False
    rank_now, rank_new = ACTION_STATUS_ORDER[current], ACTION_STATUS_ORDER[new]
    if rank_new != rank_now:
        return rank_new > rank_now
    if new_attempts != current_attempts:
        return new_attempts > current_attempts
    # Same attempt: running -> retrying is forward (the attempt failed), the reverse is not.
    return current is ActionStatus.running and new is ActionStatus.retrying


class ActionRequest(_Wire):
    """An action the model asked for, handed from the gateway to the action pipeline."""

    action_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    idempotency_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    conversation_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    arguments: dict[str, Any] = Field(default_factory=dict)
    agent_config_version: str = Field(min_length=1, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=128)
    #: W3C trace context (traceparent, tracestate) so one trace spans both deployables.
    trace_context: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    #: 0 for the first run; a replay of a dead-lettered action (after a fix) carries the next number,
    #: so it starts a fresh orchestration and may replace the final result of the previous run.
    replay_count: int = Field(default=0, ge=0, le=1000)

    @property
    def message_id(self) -> str:
        """Bus message id: the idempotency key, so the bus drops a re-sent duplicate; a replay is new."""
        if self.replay_count == 0:
            return self.idempotency_key
        message_id = f"{self.idempotency_key}#r{self.replay_count}"
        if len(message_id) > 128:  # Service Bus caps MessageId at 128 characters
            message_id = "sha256-" + hashlib.sha256(message_id.encode()).hexdigest()
        return message_id

    @field_validator("arguments")
    @classmethod
    def _arguments_fit_in_a_message(cls, value: dict[str, Any]) -> dict[str, Any]:
        import json

        size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
        if size > MAX_ARGUMENTS_BYTES:
            raise ValueError(f"arguments are {size} bytes; the limit is {MAX_ARGUMENTS_BYTES}")
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must carry a timezone")
        return value


class AttemptRecord(_Wire):
    """One dispatch attempt, kept so a dead-lettered action shows its whole history."""

    attempt: int = Field(ge=1)
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str  # succeeded | transient_error | permanent_error
    status_code: int | None = None
    error: str | None = None


class ActionResult(_Wire):
    """The Cosmos DB document for one action: id = action_id, partition key /conversationId."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    id: str
    conversation_id: str
    idempotency_key: str
    user_id: str
    name: str
    agent_config_version: str
    tool_call_id: str | None = None
    status: ActionStatus
    attempts: int = Field(default=0, ge=0)
    max_attempts: int | None = Field(default=None, ge=1)
    result: Any = None
    error: str | None = None
    attempt_history: list[AttemptRecord] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    #: Which run of the action wrote this document (ActionRequest.replay_count).
    replay_count: int = Field(default=0, ge=0)

    @classmethod
    def queued_for(cls, request: ActionRequest) -> ActionResult:
        return cls(
            id=str(request.action_id),
            conversation_id=request.conversation_id,
            idempotency_key=request.idempotency_key,
            user_id=request.user_id,
            name=request.name,
            agent_config_version=request.agent_config_version,
            tool_call_id=request.tool_call_id,
            status=ActionStatus.queued,
            created_at=request.created_at,
            replay_count=request.replay_count,
        )
