"""The arguments of each backend action an agent may call: one pydantic model per action.

One source for two readers. The function app validates an action's arguments with the model
before it calls the backend; an agent configuration offers the action to the model as a tool
whose `parameters` is the model's JSON schema (`parameters_schema`). The shipped configurations
are checked against these schemas by the test suite, so the two cannot drift apart;
`python -m agent_contracts.tools NAME` prints one to paste into a new configuration.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CreateTicketArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", title="create_ticket")

    title: str = Field(min_length=1, max_length=200, description="One-line summary of the problem")
    description: str = Field(default="", max_length=5000, description="Details the user gave")
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class GetTicketArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", title="get_ticket")

    ticket_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-]+$")


#: Action name -> the model of its arguments.
ACTION_ARGUMENTS: dict[str, type[BaseModel]] = {
    "create_ticket": CreateTicketArgs,
    "get_ticket": GetTicketArgs,
}


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema minus the generated `title`s (noise in a prompt, and not a constraint)."""
    result = {key: value for key, value in schema.items() if key != "title"}
    if isinstance(result.get("properties"), dict):
        result["properties"] = {
            name: _without_titles(item) if isinstance(item, dict) else item
            for name, item in result["properties"].items()
        }
    return result


def arguments_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of an arguments model, as a tool's `parameters`."""
    return _without_titles(model.model_json_schema())


def parameters_schema(action: str) -> dict[str, Any]:
    """The JSON schema of the named action's arguments (raises KeyError for an unknown action)."""
    return arguments_schema(ACTION_ARGUMENTS[action])


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(ACTION_ARGUMENTS)
    unknown = [name for name in names if name not in ACTION_ARGUMENTS]
    if unknown:
        print(f"unknown action(s) {', '.join(unknown)}; known: {', '.join(sorted(ACTION_ARGUMENTS))}")
        sys.exit(2)
    print(json.dumps({name: parameters_schema(name) for name in names}, indent=2))
