"""Request bodies: size-checked, parsed, validated; every failure names the field at fault."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streaming_gateway.errors import BadRequest, InvalidInput, PayloadTooLarge
from streaming_gateway.settings import Settings

T = TypeVar("T", bound=BaseModel)


class MessageIn(BaseModel):
    """A user message. `metadata` is kept with the message (e.g. the client's own message id)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)
    #: Bounded by the GATEWAY_MAX_METADATA_* settings (check_metadata), not here.
    metadata: dict[str, str] | None = None


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_config_version: str | None = Field(default=None, min_length=1, max_length=128)
    title: str | None = Field(default=None, max_length=200)


def validation_error(exc: ValidationError) -> InvalidInput:
    problems = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "message": error["msg"]}
        for error in exc.errors(include_url=False)
    ]
    first = problems[0]
    return InvalidInput(f"{first['field']}: {first['message']}", field=first["field"], details=problems)


async def read_raw(request: web.Request, *, max_bytes: int) -> bytes:
    """The body's bytes, or 413 when it is over the limit."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body is {request.content_length} bytes; the limit is {max_bytes}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes") from None


async def read_body(request: web.Request, model: type[T], *, max_bytes: int, required: bool = True) -> T:
    raw = await read_raw(request, max_bytes=max_bytes)
    if not raw.strip():
        if not required:
            return parse(model, {})
        raise InvalidInput("a JSON request body is required", field="body")
    return parse(model, loads_body(raw))


def loads_body(raw: bytes) -> Any:
    """The body as JSON, or 400 `invalid_json`: not UTF-8, not JSON, nested too deep for the
    parser (RecursionError) or an integer over Python's digit limit (ValueError) alike."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise BadRequest(
            f"We could not parse the JSON body of your request: {reason}", code="invalid_json", field="body"
        ) from None


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


def check_metadata(metadata: dict[str, str] | None, settings: Settings) -> None:
    """A message's metadata within the GATEWAY_MAX_METADATA_* limits (keys, key length, value
    length, total UTF-8 bytes of keys and values), or a 422 whose param names it."""
    if not metadata:
        return

    def too_large(message: str, field: str = "metadata") -> InvalidInput:
        return InvalidInput(message, field=field, code="metadata_too_large")

    if len(metadata) > settings.max_metadata_keys:
        raise too_large(f"metadata has {len(metadata)} keys; the limit is {settings.max_metadata_keys}")
    total = 0
    for key, value in metadata.items():
        if len(key) > settings.max_metadata_key_chars:
            raise too_large(
                f"a metadata key is {len(key)} characters; the limit is {settings.max_metadata_key_chars}"
            )
        limit = settings.max_metadata_value_chars
        if len(value) > limit:
            raise too_large(
                f"metadata.{key} is {len(value)} characters; the limit is {limit}", f"metadata.{key}"
            )
        # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which strict UTF-8 cannot encode.
        total += len(key.encode(errors="surrogatepass")) + len(value.encode(errors="surrogatepass"))
    if total > settings.max_metadata_bytes:
        raise too_large(f"metadata is {total} bytes; the limit is {settings.max_metadata_bytes}")
