"""Per-request choices of the OpenAI-compatible API that change how one turn is answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Overrides:
    """Per-request choices of the OpenAI-compatible API: its own system prompt and client-side tools."""

    system_prompt: str | None = None
    client_tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    traceparent: str | None = None
