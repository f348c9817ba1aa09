"""The LLM port: a streamed chat completion as text deltas, assembled tool calls and a finish.

The core depends on this protocol only; `openai_adapter.OpenAIChatModel` is the one adapter (OpenAI
or Azure OpenAI through the `openai` SDK).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from streaming_gateway.errors import GatewayError


class LLMError(GatewayError):
    """The model's upstream failed (the LLM port's errors, under the gateway's root)."""

    status, code, kind = 502, "upstream_error", "server_error"
    retryable = True

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMTimeout(LLMError):
    code = "upstream_timeout"


class LLMUnavailable(LLMError):
    """Could not connect, or the connection dropped mid-answer."""

    code = "upstream_unavailable"


class LLMRejected(LLMError):
    """The upstream answered with an error status (4xx other than 408/429 are not retryable)."""

    code = "upstream_rejected"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retryable = status_code in {408, 409, 429} or (status_code or 500) >= 500


class LLMBadParameter(LLMRejected):
    """The model refused a parameter the client passed through (a 4xx naming it): the client's
    error, answered as OpenAI would (400 with the upstream's message, code and param)."""

    status, code, kind = 400, "invalid_value", "invalid_request_error"

    def __init__(self, message: str, *, param: str, status_code: int, code: str | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.field = param
        if code:
            self.code = code
        self.retryable = False


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_tokens_field: str = "max_tokens"
    #: Further request parameters for the model, passed as they are (seed, stop, response_format...).
    options: dict[str, Any] = field(default_factory=dict)
    #: The top-level parameters the client chose (OpenAI API): the model refusing one of them is
    #: the client's error (LLMBadParameter), not the gateway's.
    client_params: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the model wrote it

    def openai_shape(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Finish:
    reason: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] | None = None


ChatDelta = TextDelta | Finish


class ChatModel(Protocol):
    def stream(self, request: ChatRequest) -> AsyncGenerator[ChatDelta, None]:
        """Text deltas as they come, then exactly one Finish. Raises LLMError.

        Closing the iterator (or cancelling its consumer) closes the upstream request at once.
        """
        ...

    async def close(self) -> None: ...


class ToolCallAssembler:
    """Joins streamed tool-call fragments (keyed by index) into complete calls."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, Any]] = {}

    def add(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None:
        part = self._parts.setdefault(index, {"id": "", "name": "", "arguments": []})
        if call_id:
            part["id"] = call_id
        if name:
            part["name"] += name
        if arguments:
            part["arguments"].append(arguments)

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(
                id=part["id"] or f"call_{index}", name=part["name"], arguments="".join(part["arguments"])
            )
            for index, part in sorted(self._parts.items())
        ]


#: Characters per token for the estimate: OpenAI's rule of thumb for English text.
CHARS_PER_TOKEN = 4
#: Tokens each message costs beyond its text (role and separators), as OpenAI's chat format counts.
TOKENS_PER_MESSAGE = 3


def estimate_usage(request: ChatRequest, written: list[str], calls: list[ToolCall]) -> dict[str, int]:
    """Token usage estimated when the model reported none: about four characters a token for the
    prompt (messages and tools), and for the answer at least one token per streamed delta."""
    prompt_chars = sum(len(json.dumps(message.get("content") or "")) for message in request.messages)
    prompt_chars += len(json.dumps(request.tools)) if request.tools else 0
    prompt = math.ceil(prompt_chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages)
    answer_chars = sum(len(text) for text in written) + sum(len(c.name) + len(c.arguments) for c in calls)
    completion = max(len(written), math.ceil(answer_chars / CHARS_PER_TOKEN)) + len(calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
