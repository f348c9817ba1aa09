"""The agents a caller may use, and the one authoriser every place that picks an agent or a version asks.

- `usable` / `resolve`: the agents as OpenAI models (`GET /v1/models`, `model` on chat
  completions). A model id is an agent's name and stands for that agent's active configuration, so
  a client keeps its model id across activations and rollbacks. Ids that name no agent the caller
  may use are `ModelNotFound`, whether the agent exists or not (no probing for other teams' agents).
- `for_new_conversation`: the version a new conversation of the gateway's own agent gets.
- `pin`: a version a client names (`agent_config_version`): an agent the caller may use, published,
  not withdrawn, and the version the agent would serve this conversation anyway (its active one,
  or the canary's pick) unless the caller has the operator role.
- `check_turn`: before every new turn, on every transport: the caller may still use the
  conversation's agent (a token that lost its role cannot continue) and its version was not withdrawn.

The rule itself (the `access` block) is access.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agent_registry import AgentConfig, AgentRegistry, RegistryError
from streaming_gateway.agents.access import is_operator, may_use
from streaming_gateway.agents.registry_store import RegistryAgentConfigs
from streaming_gateway.auth.authenticator import Principal
from streaming_gateway.errors import (
    AgentConfigWithdrawn,
    AgentNotAllowed,
    ModelNotFound,
    OperatorRoleRequired,
    Unavailable,
)

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
    def __init__(self, registry: AgentRegistry, configs: RegistryAgentConfigs, *, operator_role: str) -> None:
        self._registry = registry
        self._configs = configs
        self._operator_role = operator_role

    @property
    def gateway_agent(self) -> str:
        """The gateway's own agent (seeded from AGENT_CONFIG_PATH; the conversation API's)."""
        return self._configs.agent

    def may_use(self, principal: Principal, config: AgentConfig) -> bool:
        return may_use(principal, config, gateway_agent=self._configs.agent)

    async def usable(self, principal: Principal) -> list[AgentModel]:
        """Every agent with an active configuration that this caller may use, by name."""
        # The gateway's own agent first: active() seeds it on a fresh registry.
        await self._configs.active()
        try:
            names = await self._registry.agents()
            models = [await self._model(name) for name in names]
        except RegistryError as exc:
            raise _unavailable(exc) from None
        return [model for model in models if model is not None and self.may_use(principal, model.config)]

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
                raise _unavailable(exc) from None
        if config is None or not self.may_use(principal, config):
            raise ModelNotFound(model_id)
        return config

    async def for_new_conversation(self, principal: Principal, conversation_id: str) -> AgentConfig:
        """The gateway's own agent's version for a new conversation (the canary's pick, else the
        active one), when the caller may use that agent."""
        config = await self._configs.for_new_conversation(conversation_id)
        if not self.may_use(principal, config):
            raise AgentNotAllowed(config.agent)
        return config

    async def pin(self, principal: Principal, version: str, conversation_id: str) -> AgentConfig:
        """The configuration a new conversation pins when the client names a version (full id or
        bare content hash); see the module's rules. Each refusal names `agent_config_version`."""
        config = await self._configs.get(version)  # UnknownAgentConfig (422) when not published
        if not self.may_use(principal, config):
            raise AgentNotAllowed(config.agent, field="agent_config_version")
        try:
            if await self._registry.is_withdrawn(config.agent, config.version):
                raise AgentConfigWithdrawn(config.version)
            if is_operator(principal, self._operator_role):
                return config
            if config.version != await self._assigned(config.agent, conversation_id):
                raise OperatorRoleRequired(config.version, self._operator_role)
        except RegistryError as exc:
            raise _unavailable(exc) from None
        return config

    async def check_turn(self, principal: Principal, version: str) -> AgentConfig:
        """The configuration a conversation pinned (`version`) when the caller may start a turn in it now."""
        config = await self._configs.get(version)
        if not self.may_use(principal, config):
            raise AgentNotAllowed(config.agent)
        try:
            if config.agent == self._configs.agent:
                withdrawn = await self._configs.is_withdrawn(config.version)  # cached with the epoch
            else:
                withdrawn = await self._registry.is_withdrawn(config.agent, config.version)
        except RegistryError as exc:
            raise _unavailable(exc) from None
        if withdrawn:
            raise AgentConfigWithdrawn(config.version)
        return config

    async def agent_of(self, version: str) -> str:
        """The agent a published version belongs to (a conversation's pinned version)."""
        return (await self._configs.get(version)).agent

    async def _assigned(self, agent: str, conversation_id: str) -> str | None:
        """The version the agent serves a new conversation with this id: the canary's pick during a
        rollout, else the active version (read from the registry: pinning is not on the hot path)."""
        active = await self._registry.active_version(agent)
        rollout = await self._registry.rollout(agent)
        if active is not None and rollout is not None and rollout.stable == active:
            return rollout.version_for(conversation_id)
        return active

    async def _model(self, agent: str) -> AgentModel | None:
        version = await self._registry.active_version(agent)
        if version is None:
            return None
        record = await self._registry.get(version)
        created = int(datetime.fromisoformat(record.published_at).timestamp())
        return AgentModel(agent, created, await self._configs.get(version))


def _unavailable(exc: RegistryError) -> Unavailable:
    return Unavailable(f"the agent registry is unavailable: {exc}", code="state_unavailable")
