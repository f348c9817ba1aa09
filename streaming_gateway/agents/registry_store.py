"""The gateway's agent configurations from the versioned registry (agent_registry/).

`AgentConfigStore` is what the chat core depends on; `RegistryAgentConfigs` implements it:
`active()` follows activations without a restart (the registry's epoch is polled at most once a
second), `for_new_conversation(id)` adds the canary split (sticky: a function of the id),
`get(version)` serves any published version so a conversation keeps the version it
started with. The file at AGENT_CONFIG_PATH seeds an agent that has no active version yet (a
fresh Redis); after that the registry is the source of truth. The configuration model itself is
agent_registry's `AgentConfig`: there is no second one.
"""

from __future__ import annotations

import logging
from typing import Protocol

from agent_registry import (
    AgentConfig,
    AgentRegistry,
    NoActiveVersion,
    RegistryConfigStore,
    UnknownVersion,
    read_document,
)
from streaming_gateway.errors import Unavailable, UnknownAgentConfig
from streaming_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0


class AgentConfigStore(Protocol):
    """Where the gateway gets agent configurations: the active one, or one by its version."""

    #: The agent whose configurations these are.
    agent: str

    async def active(self) -> AgentConfig: ...

    async def get(self, version: str) -> AgentConfig:
        """The config with this version; raises UnknownAgentConfig."""
        ...

    async def for_new_conversation(self, conversation_id: str) -> AgentConfig:
        """The config a new conversation with this id pins: during a canary, the candidate for
        its share of ids, else the active one."""
        ...

    async def is_withdrawn(self, version: str) -> bool:
        """Whether this version of the agent was withdrawn (as of the last poll of its epoch)."""
        ...


class RegistryAgentConfigs:
    def __init__(self, registry: AgentRegistry, seed_path: str, metrics: GatewayMetrics) -> None:
        # Read (and validated) now: a broken seed file stops the start, naming the file.
        agent: str = read_document(seed_path).get("agent", "default")
        self._store = RegistryConfigStore(
            registry,
            agent,
            poll_interval_s=POLL_INTERVAL_S,
            seed_path=seed_path,
            on_change=lambda config: metrics.set_active_version(config.version),
        )
        self.agent = agent

    async def active(self) -> AgentConfig:
        try:
            return await self._store.active()
        except NoActiveVersion as exc:
            raise Unavailable(str(exc), code="no_active_agent_config") from None

    async def for_new_conversation(self, conversation_id: str) -> AgentConfig:
        try:
            return await self._store.for_new_conversation(conversation_id)
        except NoActiveVersion as exc:
            raise Unavailable(str(exc), code="no_active_agent_config") from None

    async def is_withdrawn(self, version: str) -> bool:
        await self.active()  # rereads the withdrawn set when the epoch moved
        return version in self._store.withdrawn

    async def get(self, version: str) -> AgentConfig:
        try:
            return await self._store.get(version)
        except UnknownVersion:
            raise UnknownAgentConfig(
                f"unknown agent config version {version!r}", field="agent_config_version"
            ) from None
