"""The shared package's errors: one root, so a caller can tell them from a dependency's."""

from __future__ import annotations


class ContractError(Exception):
    """Root of agent_contracts' errors (a bad setting, a Redis that cannot be asked its mode)."""
