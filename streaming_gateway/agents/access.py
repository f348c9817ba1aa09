"""Who may use which agent: the one rule every place that picks an agent or a version asks.

An agent configuration's `access` block (agent_registry's `Access`) names token claim values:
app roles (`roles`), group object ids (`groups`), delegated scopes (`scp`, space-separated);
any one of them admits the caller, and `everyone: true` admits every signed-in user. A config
without the block follows the default: the gateway's own agent (the one AGENT_CONFIG_PATH seeds)
is open to every signed-in user, every other agent to nobody, so publishing a new agent never
opens it by accident.

Entra ID leaves `groups` out of a token for a user in more than 200 groups (the overage claim);
such a user is admitted by roles or scopes only. App roles are the dependable choice.
"""

from __future__ import annotations

from typing import Any

from agent_registry import AgentConfig
from streaming_gateway.auth.authenticator import Principal


def may_use(principal: Principal, config: AgentConfig, *, gateway_agent: str) -> bool:
    """Whether this caller may use this agent (any of its versions that they may pin)."""
    access = config.access
    if access is None:
        return config.agent == gateway_agent
    if access.everyone:
        return True
    claims = principal.claims
    return bool(
        set(access.roles) & _values(claims.get("roles"))
        or set(access.groups) & _values(claims.get("groups"))
        or set(access.scopes) & _scopes(claims.get("scp"))
    )


def is_operator(principal: Principal, role: str) -> bool:
    """Whether the token carries the operator app role (AUTH_OPERATOR_ROLE)."""
    return role in _values(principal.claims.get("roles"))


def _scopes(claim: Any) -> set[str]:
    """`scp`: one space-separated string."""
    return set(claim.split()) if isinstance(claim, str) else set()


def _values(claim: Any) -> set[str]:
    """`roles`, `groups`: a list of strings (anything else carries none)."""
    if isinstance(claim, list):
        return {value for value in claim if isinstance(value, str)}
    return set()
