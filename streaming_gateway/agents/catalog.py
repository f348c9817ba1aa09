"""The agents a caller may use, as OpenAI models: `GET /v1/models` lists them, `model` picks one.

A model id is an agent's name; it stands for that agent's active configuration, so a client keeps
its model id across activations and rollbacks. Ids that name no agent the caller may use are
`ModelNotFound`, whether the agent exists or not (no probing for other teams' agents).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agent_registry import AgentConfig, AgentRegistry, RegistryError
from streaming_gateway.agents.access import may_use
from streaming_gateway.agents.registry_store import RegistryAgentConfigs
from streaming_gateway.auth.authenticator import Principal
from streaming_gateway.errors import ModelNotFound, Unavailable

#: `owned_by` of every model the gateway lists: the agents are the operator's, not a provider's.
OWNER = "agent-platform"


@dataclass(frozen=True)
class AgentModel:
    id: str
    created: int
    config: AgentConfig

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": OWNER}


class AgentCatalog:
    def __init__(self, registry: AgentRegistry, configs: RegistryAgentConfigs) -> None:
        self._registry = registry
        self._configs = configs

    async def usable(self, principal: Principal) -> list[AgentModel]:
        """Every agent with an active configuration that this caller may use, by name."""
        # The gateway's own agent first: active() seeds it on a fresh registry.
        await self._configs.active()
        try:
            names = await self._registry.agents()
            models = [await self._model(name) for name in names]
        except RegistryError as exc:
            raise Unavailable(f"the agent registry is unavailable: {exc}", code="state_unavailable") from None
        return [
            model
            for model in models
            if model is not None and may_use(principal, model.config, gateway_agent=self._configs.agent)
        ]

    async def resolve(self, principal: Principal, model_id: str) -> AgentConfig:
        """The active configuration of the agent this caller means by `model_id`; ModelNotFound
        when there is none they may use. The gateway's own agent costs no Redis read (cached)."""
        config: AgentConfig | None
        if model_id == self._configs.agent:
            config = await self._configs.active()
        else:
            try:
                version = await self._registry.active_version(model_id)
                config = None if version is None else await self._configs.get(version)
            except RegistryError as exc:
                raise Unavailable(
                    f"the agent registry is unavailable: {exc}", code="state_unavailable"
                ) from None
        if config is None or not may_use(principal, config, gateway_agent=self._configs.agent):
            raise ModelNotFound(model_id)
        return config

    async def agent_of(self, version: str) -> str:
        """The agent a published version belongs to (a conversation's pinned version)."""
        return (await self._configs.get(version)).agent

    async def _model(self, agent: str) -> AgentModel | None:
        version = await self._registry.active_version(agent)
        if version is None:
            return None
        record = await self._registry.get(version)
        created = int(datetime.fromisoformat(record.published_at).timestamp())
        return AgentModel(agent, created, await self._configs.get(version))
