"""Who may talk to which agent: the one rule `/v1/models` and `model` on chat completions ask.

Agent configurations do not yet say who may use them. Until they do, the rule is the safe
default: the gateway's own agent (the one AGENT_CONFIG_PATH seeds, served to every signed-in
user through the conversation API too) is open to every caller, and other agents in the registry
are open to none. A per-user rule (token roles, groups, scopes) replaces the body of `may_use`.
"""

from __future__ import annotations

from agent_registry import AgentConfig
from streaming_gateway.auth.authenticator import Principal


def may_use(principal: Principal, config: AgentConfig, *, gateway_agent: str) -> bool:
    """Whether this caller may pick this agent (its active configuration) as a model."""
    return config.agent == gateway_agent
