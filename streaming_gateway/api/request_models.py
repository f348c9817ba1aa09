"""Request bodies: size-checked, parsed, validated; every failure names the field at fault."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streaming_gateway.errors import InvalidInput, PayloadTooLarge

T = TypeVar("T", bound=BaseModel)


class MessageIn(BaseModel):
    """A user message. `metadata` is kept with the message (e.g. the client's own message id)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_config_version: str | None = Field(default=None, min_length=1, max_length=128)
    title: str | None = Field(default=None, max_length=200)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=128)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(
                str(part.get("text", "")) for part in self.content if part.get("type", "text") == "text"
            )
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The OpenAI chat completions request, as far as the gateway uses it; other fields are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=1)


def validation_error(exc: ValidationError) -> InvalidInput:
    problems = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "message": error["msg"]}
        for error in exc.errors(include_url=False)
    ]
    first = problems[0]
    return InvalidInput(f"{first['field']}: {first['message']}", field=first["field"], details=problems)


async def read_body(request: web.Request, model: type[T], *, max_bytes: int, required: bool = True) -> T:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body is {request.content_length} bytes; the limit is {max_bytes}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes") from None
    if not raw.strip():
        if not required:
            return parse(model, {})
        raise InvalidInput("a JSON request body is required", field="body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from None
    return parse(model, data)


def parse(model: type[T], data: Any) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_length(text: str, limit: int, field: str) -> None:
    if len(text) > limit:
        raise InvalidInput(
            f"{field} is {len(text)} characters; the limit is {limit}", field=field, code="message_too_long"
        )
