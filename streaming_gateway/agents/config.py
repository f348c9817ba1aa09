"""Agent configurations: what model, prompt, limits and tools serve a conversation.

A config's version is `<label>@<first 12 hex of sha256 of the canonical JSON>`, so any edit makes
a new version and a conversation names exactly what served it. Callers depend on the
`AgentConfigStore` protocol only: the running gateway serves configs from the versioned registry
(registry_store.py); `FileAgentConfigStore` reads one JSON file (`agent_configs/default.json`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_registry import AgentConfig as RegistryAgentConfig
from streaming_gateway.errors import GatewayError, UnknownAgentConfig

log = logging.getLogger(__name__)


class AgentConfigError(GatewayError):
    """The agent configuration file is missing or malformed (fails the start)."""

    code = "invalid_agent_config"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"agent config {path}: {problem}")
        self.path = path


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str = ""
    #: JSON schema of the arguments object.
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    #: The backend action this tool call becomes (the ActionRequest name).
    action: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")

    def openai_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_output_tokens: int = Field(default=1024, ge=1)
    max_history_messages: int = Field(default=60, ge=1)
    max_tool_rounds: int = Field(default=4, ge=0)


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    model: str = Field(min_length=1)
    system_prompt: str = ""
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    limits: Limits = Field(default_factory=Limits)
    tools: list[ToolSpec] = Field(default_factory=list)
    version: str = ""

    def tool(self, name: str) -> ToolSpec | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.openai_tool() for tool in self.tools]


def config_version(label: str, document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{label}@{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def parse_config(document: dict[str, Any], source: str = "<document>") -> AgentConfig:
    document = {key: value for key, value in document.items() if key != "version"}
    try:
        config = AgentConfig.model_validate(document)
    except ValidationError as exc:
        raise AgentConfigError(source, str(exc)) from None
    names = [tool.name for tool in config.tools]
    if len(names) != len(set(names)):
        raise AgentConfigError(source, "tool names must be unique")
    return config.model_copy(update={"version": config_version(config.label, document)})


class AgentConfigStore(Protocol):
    """Where the gateway gets agent configurations: the active one, or one by its version. The
    running gateway's store (registry_store.py) serves agent_registry's model."""

    async def active(self) -> RegistryAgentConfig: ...

    async def get(self, version: str) -> RegistryAgentConfig:
        """The config with this version; raises UnknownAgentConfig."""
        ...


class FileAgentConfigStore:
    """One active config read from a JSON file at start; knows the versions it has loaded."""

    def __init__(self, config: AgentConfig) -> None:
        self._active = config
        self._known = {config.version: config}

    @classmethod
    def load(cls, path: str | Path) -> FileAgentConfigStore:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AgentConfigError(str(path), str(exc)) from None
        if not isinstance(document, dict):
            raise AgentConfigError(str(path), "must be a JSON object")
        config = parse_config(document, str(path))
        log.info("agent config %s loaded from %s", config.version, path)
        return cls(config)

    async def active(self) -> AgentConfig:
        return self._active

    async def get(self, version: str) -> AgentConfig:
        try:
            return self._known[version]
        except KeyError:
            raise UnknownAgentConfig(
                f"unknown agent config version {version!r}", field="agent_config_version"
            ) from None
