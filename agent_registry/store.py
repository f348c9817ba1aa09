"""The gateway's view of the registry: the active config (hot-swapped) and configs by version.

Implements the gateway's `AgentConfigStore` protocol (`active()`, `get(version)`,
`for_new_conversation(id)`). Activations and canary rollouts are picked up without a restart:
`active()` reads the agent's epoch (one GET) at most once per `poll_interval_s` and reloads the
active version, the rollout and the withdrawn versions only when it moved. Published versions
are immutable, so they are cached forever in a small LRU. When Redis is briefly unreachable the
last known active config keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from agent_registry.errors import InvalidConfig, NoActiveVersion, RegistryUnavailable
from agent_registry.loader import read_document
from agent_registry.registry import AgentRegistry, Rollout
from agent_registry.schema import AgentConfig

log = logging.getLogger(__name__)


class RegistryConfigStore:
    def __init__(
        self,
        registry: AgentRegistry,
        agent: str = "default",
        *,
        poll_interval_s: float = 1.0,
        cache_size: int = 64,
        seed_path: str | Path | None = None,
        on_change: Callable[[AgentConfig], None] | None = None,
    ) -> None:
        self._registry = registry
        self.agent = agent
        #: Published and activated by the first active() that finds the agent without an active version.
        self._seed_path = seed_path
        self._on_change = on_change
        self._poll_interval_s = poll_interval_s
        self._cache: OrderedDict[str, AgentConfig] = OrderedDict()
        self._cache_size = cache_size
        self._active: AgentConfig | None = None
        self._rollout: Rollout | None = None
        self._withdrawn: frozenset[str] = frozenset()
        self._epoch = -1
        self._checked_at = float("-inf")

    async def seed(self, path: str | Path) -> AgentConfig:
        """Publish and activate the file when the agent has no active version yet (a fresh Redis)."""
        if await self._registry.active_version(self.agent) is None:
            document = read_document(path)
            record, _ = await self._registry.publish(document, str(path))
            if record.agent != self.agent:
                raise InvalidConfig(str(path), f"is for agent {record.agent!r}, not {self.agent!r}")
            result = await self._registry.activate_if_none(self.agent, record.version, actor="gateway-seed")
            if result.changed:
                log.info("agent %s had no active config: seeded %s from %s", self.agent, record.version, path)
        self._epoch = -1  # re-read whatever is active now (ours, or another pod's seed)
        self._checked_at = float("-inf")
        return await self.active()

    async def active(self) -> AgentConfig:
        now = time.monotonic()
        if self._active is not None and now - self._checked_at < self._poll_interval_s:
            return self._active
        try:
            epoch = await self._registry.epoch(self.agent)
            if epoch != self._epoch or self._active is None:
                version = await self._registry.active_version(self.agent)
                if version is None:
                    if self._seed_path is None:
                        raise NoActiveVersion(self.agent)
                    await self.seed(self._seed_path)
                    return await self.active()
                config = await self.get(version)
                rollout = await self._registry.rollout(self.agent)
                if rollout is not None and rollout != self._rollout:
                    log.info(
                        "agent %s: rollout of %s at %g%%", self.agent, rollout.candidate, rollout.percent
                    )
                elif rollout is None and self._rollout is not None:
                    log.info("agent %s: rollout of %s ended", self.agent, self._rollout.candidate)
                self._rollout = rollout
                # Withdrawing bumps the epoch too, so this set is as fresh as the active version.
                self._withdrawn = await self._registry.withdrawn(self.agent)
                changed = self._active is None or config.version != self._active.version
                if self._active is not None and changed:
                    log.info(
                        "agent %s: active config is now %s (was %s)",
                        self.agent,
                        config.version,
                        self._active.version,
                    )
                self._active, self._epoch = config, epoch
                if changed and self._on_change is not None:
                    self._on_change(config)
            self._checked_at = now
        except RegistryUnavailable as exc:
            if self._active is None:
                raise
            log.warning(
                "agent registry unreachable, serving the last active config %s: %s", self._active.version, exc
            )
        return self._active

    async def for_new_conversation(self, conversation_id: str) -> AgentConfig:
        """The version a new conversation gets: the candidate for its share of ids during a rollout.

        The pick depends only on the conversation id (see Rollout.version_for), so every pod agrees,
        and the conversation then pins the version it got.
        """
        active = await self.active()
        rollout = self._rollout
        if rollout is None or rollout.stable != active.version:
            return active
        version = rollout.version_for(conversation_id)
        if version == active.version:
            return active
        try:
            return await self.get(version)
        except RegistryUnavailable:
            log.warning("agent %s: candidate %s unreadable, serving stable", self.agent, version)
            return active

    @property
    def rollout(self) -> Rollout | None:
        """The rollout as last read (None when none is under way)."""
        return self._rollout

    @property
    def withdrawn(self) -> frozenset[str]:
        """The agent's withdrawn versions as last read (with the active version)."""
        return self._withdrawn

    async def get(self, version: str) -> AgentConfig:
        """The config of one version (raises UnknownVersion); immutable, so cached."""
        cached = self._cache.get(version)
        if cached is not None:
            self._cache.move_to_end(version)
            return cached
        config = await self._registry.config(version)
        self._cache[version] = config
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return config
