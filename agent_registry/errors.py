"""The agent registry's errors: one root, small subclasses carrying what went wrong."""

from __future__ import annotations


class RegistryError(Exception):
    """Root of the agent registry's errors."""


class InvalidConfig(RegistryError):
    """A configuration file or document does not satisfy the schema."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"agent config {source}: {problem}")
        self.source = source
        self.problem = problem


class UnknownVersion(RegistryError):
    def __init__(self, version: str) -> None:
        super().__init__(f"no published agent config version {version!r}")
        self.version = version


class WrongAgent(RegistryError):
    """The version exists but belongs to another agent."""

    def __init__(self, agent: str, version: str, owner: str) -> None:
        super().__init__(f"version {version!r} belongs to agent {owner!r}, not {agent!r}")
        self.agent, self.version, self.owner = agent, version, owner


class VersionWithdrawn(RegistryError):
    """The version was withdrawn: nobody may use, activate or roll out it again."""

    def __init__(self, version: str) -> None:
        super().__init__(f"agent config version {version!r} was withdrawn")
        self.version = version


class WithdrawRefused(RegistryError):
    """A version that cannot be withdrawn now (the active one)."""

    def __init__(self, version: str, problem: str) -> None:
        super().__init__(f"cannot withdraw {version!r}: {problem}")
        self.version = version
        self.problem = problem


class NoActiveVersion(RegistryError):
    def __init__(self, agent: str) -> None:
        super().__init__(f"agent {agent!r} has no active version (publish one with --activate)")
        self.agent = agent


class NothingToRollBack(RegistryError):
    def __init__(self, agent: str) -> None:
        super().__init__(f"agent {agent!r} has no previously active version to roll back to")
        self.agent = agent


class RegistryUnavailable(RegistryError, ConnectionError):
    """Redis could not be reached (a ConnectionError too, so callers that answer 503 for
    connection failures do so for this)."""


class RolloutRefused(RegistryError):
    """A rollout change that cannot apply: no rollout, one already under way, a bad candidate."""

    def __init__(self, agent: str, problem: str) -> None:
        super().__init__(f"agent {agent!r}: {problem}")
        self.agent = agent
        self.problem = problem


class InvalidToolCall(RegistryError):
    """A model's tool call that its agent configuration refuses: unknown tool, arguments that are
    not a JSON object or break the tool's schema. The message says where."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
