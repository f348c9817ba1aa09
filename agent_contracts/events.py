"""Events streamed to clients, identical over WebSocket and Server-Sent Events.

Every event carries `id`, an integer that strictly increases per conversation (assigned by the
gateway's Redis stream log), so a client that reconnects names the last id it saw and gets the
rest exactly once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1)
    conversation_id: str
    message_id: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class TokenEvent(_Event):
    type: Literal["token"] = "token"
    text: str


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    action_id: str | None = None


class ActionStatusEvent(_Event):
    type: Literal["action_status"] = "action_status"
    action_id: str
    name: str
    status: str
    attempts: int = 0
    max_attempts: int | None = None
    result: Any = None
    error: str | None = None


class MessageEndEvent(_Event):
    type: Literal["message_end"] = "message_end"
    finish_reason: str
    usage: dict[str, int] | None = None
    agent_config_version: str | None = None


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    code: str
    message: str
    retryable: bool = False
    #: The request parameter at fault, when the client's own (an upstream's 400 about a parameter
    #: the client passed through): the OpenAI API answers it as a 400 naming it.
    param: str | None = None


StreamEvent = Annotated[
    TokenEvent | ToolCallEvent | ActionStatusEvent | MessageEndEvent | ErrorEvent,
    Field(discriminator="type"),
]

_event_adapter: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


def parse_event(data: str | bytes | dict[str, Any]) -> StreamEvent:
    """Validate one event from JSON text or a dict; raises pydantic.ValidationError."""
    if isinstance(data, dict):
        return _event_adapter.validate_python(data)
    return _event_adapter.validate_json(data)
