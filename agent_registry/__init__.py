"""Versioned agent configurations: immutable published versions, one active per agent.

registry = AgentRegistry(redis_client)
record, created = await registry.publish(read_document("agent_configs/default.json"))
await registry.activate("default", record.version)
store = RegistryConfigStore(registry, "default")      # the gateway's AgentConfigStore
config = await store.active()                         # follows activations without restart
"""

from agent_registry.errors import (
    InvalidConfig,
    InvalidToolCall,
    NoActiveVersion,
    NothingToRollBack,
    RegistryError,
    RegistryUnavailable,
    RolloutRefused,
    UnknownVersion,
    VersionWithdrawn,
    WithdrawRefused,
    WrongAgent,
)
from agent_registry.loader import read_document
from agent_registry.registry import Activation, AgentRegistry, PublishedVersion, Rollout
from agent_registry.schema import Access, AgentConfig, Limits, ToolSpec, validate_document
from agent_registry.store import RegistryConfigStore
from agent_registry.versioning import content_hash, version_of

__all__ = [
    "Access",
    "Activation",
    "AgentConfig",
    "AgentRegistry",
    "InvalidConfig",
    "InvalidToolCall",
    "Limits",
    "NoActiveVersion",
    "NothingToRollBack",
    "PublishedVersion",
    "RegistryConfigStore",
    "RegistryError",
    "RegistryUnavailable",
    "Rollout",
    "RolloutRefused",
    "ToolSpec",
    "UnknownVersion",
    "VersionWithdrawn",
    "WithdrawRefused",
    "WrongAgent",
    "content_hash",
    "read_document",
    "validate_document",
    "version_of",
]
