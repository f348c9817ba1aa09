"""Which actions exist: for each name, the backend endpoint (from settings), the arguments schema
(a pydantic model from agent_contracts/tools.py, the one source of the JSON schema the agent
configuration's tool offers the model) and the retry policy (first interval, attempts;
overridable per name with ACTION_RETRY_POLICIES).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from agent_contracts.tools import CreateTicketArgs, GetTicketArgs, arguments_schema
from function_app.errors import UnknownAction
from function_app.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    first_interval_s: float = 2.0
    max_attempts: int = 5
    backoff_coefficient: float = 2.0
    max_interval_s: float = 300.0
    #: A server's Retry-After is honoured up to this; beyond it the backend is treated as down for longer.
    max_retry_after_s: float = 3600.0

    def delay_after(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): backoff, or Retry-After if longer."""
        backoff = min(self.max_interval_s, self.first_interval_s * self.backoff_coefficient ** (attempt - 1))
        if retry_after_s is not None:
            return max(backoff, min(retry_after_s, self.max_retry_after_s))
        return backoff

    def to_wire(self) -> dict[str, float]:
        return {
            "firstIntervalS": self.first_interval_s,
            "maxAttempts": self.max_attempts,
            "backoffCoefficient": self.backoff_coefficient,
            "maxIntervalS": self.max_interval_s,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(
            first_interval_s=float(data["firstIntervalS"]),
            max_attempts=int(data["maxAttempts"]),
            backoff_coefficient=float(data["backoffCoefficient"]),
            max_interval_s=float(data["maxIntervalS"]),
        )


@dataclass(frozen=True)
class ActionSpec:
    name: str
    description: str
    method: str
    base_url: str
    #: Path with {placeholders} filled from arguments; the remaining arguments are the JSON body.
    path: str
    arguments: type[BaseModel]
    retry: RetryPolicy

    def url_and_body(self, arguments: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        args = self.arguments.model_validate(arguments).model_dump()
        path_keys = [key for key in args if "{" + key + "}" in self.path]
        path = self.path.format(**{key: args[key] for key in path_keys})
        body = {key: value for key, value in args.items() if key not in path_keys}
        return self.base_url.rstrip("/") + path, (body if self.method in {"POST", "PUT", "PATCH"} else None)

    def tool_definition(self) -> dict[str, Any]:
        """The OpenAI tool definition for this action (what the agent configuration offers the model)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": arguments_schema(self.arguments),
            },
        }


class ActionRegistry:
    def __init__(self, specs: list[ActionSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownAction(name) from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def tool_definitions(self) -> list[dict[str, Any]]:
        return [self._specs[name].tool_definition() for name in self.names()]


def default_registry(settings: Settings) -> ActionRegistry:
    base = RetryPolicy(max_interval_s=settings.retry_max_interval_s)
    specs = [
        ActionSpec(
            "create_ticket",
            "Open a support ticket for the user's problem.",
            "POST",
            settings.tickets_service_url,
            "/tickets",
            CreateTicketArgs,
            base,
        ),
        ActionSpec(
            "get_ticket",
            "Look up a support ticket by its id.",
            "GET",
            settings.tickets_service_url,
            "/tickets/{ticket_id}",
            GetTicketArgs,
            replace(base, max_attempts=3, first_interval_s=1.0),
        ),
    ]
    for i, spec in enumerate(specs):
        override = settings.action_retry_policies.get(spec.name)
        if override is not None:
            specs[i] = replace(
                spec,
                retry=replace(
                    spec.retry, first_interval_s=override.first_interval_s, max_attempts=override.max_attempts
                ),
            )
    unknown = set(settings.action_retry_policies) - {spec.name for spec in specs}
    if unknown:
        from agent_contracts.settings import SettingsError

        raise SettingsError("ACTION_RETRY_POLICIES", f"no such action: {', '.join(sorted(unknown))}")
    return ActionRegistry(specs)
