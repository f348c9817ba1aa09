"""The agent configuration schema: model, prompt, sampling, limits and tools mapped to actions.

Field names match the gateway's `agent_configs/*.json` files. `agent` names which agent the
configuration is for (one active version per agent) and defaults to "default".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent_registry.errors import InvalidConfig

NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
LABEL_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
#: A system prompt bigger than this is almost certainly a mistake (and costs on every turn).
MAX_SYSTEM_PROMPT_CHARS = 32_000
MAX_TOOLS = 64


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=1024)
    #: JSON schema (draft 2020-12) of the arguments object the model must produce.
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    #: The backend action this tool call becomes (ActionRequest.name).
    action: str = Field(pattern=NAME_PATTERN)

    @field_validator("parameters")
    @classmethod
    def _a_json_schema_of_an_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError('parameters must describe an object ("type": "object")')
        return value

    def openai_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_output_tokens: int = Field(default=1024, ge=1, le=128_000)
    max_history_messages: int = Field(default=60, ge=1, le=10_000)
    max_tool_rounds: int = Field(default=4, ge=0, le=32)


#: One claim value an `access` block names (an app role, a group object id, a delegated scope).
ClaimValue = Annotated[str, Field(min_length=1, max_length=256)]


class Access(BaseModel):
    """Who may use the agent: a signed-in caller whose token carries any one of these.

    `roles` are app roles (the token's `roles` claim), `groups` group object ids (`groups`),
    `scopes` delegated scopes (`scp`, space-separated). `everyone` opens the agent to every
    signed-in user. An empty block opens it to nobody. Without a block at all, the gateway's own
    agent (the one AGENT_CONFIG_PATH seeds) is open to everyone and other agents to nobody.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    everyone: bool = False
    roles: list[ClaimValue] = Field(default_factory=list, max_length=64)
    groups: list[ClaimValue] = Field(default_factory=list, max_length=64)
    scopes: list[ClaimValue] = Field(default_factory=list, max_length=64)


class AgentConfig(BaseModel):
    """One immutable agent configuration; `version` is set by the registry, never by the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str = Field(default="default", pattern=NAME_PATTERN)
    label: str = Field(pattern=LABEL_PATTERN)
    #: The model name (OpenAI) or deployment name (Azure OpenAI).
    model: str = Field(min_length=1, max_length=128)
    system_prompt: str = Field(default="", max_length=MAX_SYSTEM_PROMPT_CHARS)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    limits: Limits = Field(default_factory=Limits)
    tools: list[ToolSpec] = Field(default_factory=list, max_length=MAX_TOOLS)
    #: Who may use this agent (see Access); None: the gateway's default rule.
    access: Access | None = None
    #: What the OpenAI-compatible API does with a client's system/developer messages: `refuse`
    #: them (400), or `append` them after this config's system prompt. None: the gateway's
    #: GATEWAY_CLIENT_SYSTEM_MESSAGES.
    client_system_messages: Literal["refuse", "append"] | None = None
    version: str = ""

    @model_validator(mode="after")
    def _unique_tool_names(self) -> AgentConfig:
        names = [tool.name for tool in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @property
    def max_tokens(self) -> int:
        return self.limits.max_output_tokens

    def tool(self, name: str) -> ToolSpec | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.openai_tool() for tool in self.tools]


def validate_document(document: Any, source: str = "<document>") -> AgentConfig:
    """The config in a parsed file, without its version; raises InvalidConfig naming the problem."""
    if not isinstance(document, dict):
        raise InvalidConfig(source, "must be a mapping (a JSON object / YAML mapping)")
    body = {key: value for key, value in document.items() if key != "version"}
    try:
        return AgentConfig.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidConfig(source, problems) from None
