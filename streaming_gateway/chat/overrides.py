"""Per-request choices of the OpenAI-compatible API that change how one turn is answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Overrides:
    """Per-request choices of the OpenAI-compatible API: its own system prompt and client-side tools."""

    system_prompt: str | None = None
    client_tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    #: The name the client gave its token limit (`max_tokens` or `max_completion_tokens`),
    #: used towards the model too: some models take only the newer one, some servers the older.
    max_tokens_field: str = "max_tokens"
    #: Parameters passed to the model unchanged (api/openai_request.PASSED_THROUGH).
    options: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None
