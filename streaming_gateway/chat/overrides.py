"""Per-request choices of the OpenAI-compatible API that change how one turn is answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Overrides:
    """Per-request choices of the OpenAI-compatible API: client-side tools, sampling, and a client's
    system text where the agent allows it (after the agent's prompt, never instead of it)."""

    client_system: str | None = None
    client_tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    #: The name the client gave its token limit (`max_tokens` or `max_completion_tokens`),
    #: used towards the model too: some models take only the newer one, some servers the older.
    max_tokens_field: str = "max_tokens"
    #: Parameters passed to the model unchanged (api/openai_request.PASSED_THROUGH).
    options: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None

    def client_params(self) -> frozenset[str]:
        """The top-level request parameters the client chose for the model."""
        chosen = set(self.options)
        if self.max_tokens is not None:
            chosen.add(self.max_tokens_field)
        if self.temperature is not None:
            chosen.add("temperature")
        if self.client_tools:
            chosen.add("tools")
        return frozenset(chosen)

    def system_prompt(self, agent_prompt: str) -> str:
        """The agent's system prompt, then the client's system text (when there is one)."""
        if not self.client_system:
            return agent_prompt
        return f"{agent_prompt}\n\n{self.client_system}" if agent_prompt else self.client_system
