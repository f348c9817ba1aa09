"""Versioned agent configurations in Redis: publish (immutable), list, activate, roll back, withdraw.

A published version never changes: its record is written once (SET NX) under its id
`<label>@<content hash>`. Each agent has one active version; activating or rolling back is
one Lua script (current -> previous stack, new active, epoch + 1, a log entry), so two
operators racing cannot lose a step. Gateways notice a change by reading the agent's epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from agent_contracts.redis_connection import AnyRedis
from agent_registry import keys
from agent_registry.errors import (
    NoActiveVersion,
    NothingToRollBack,
    RegistryUnavailable,
    RolloutRefused,
    UnknownVersion,
    VersionWithdrawn,
    WithdrawRefused,
    WrongAgent,
)
from agent_registry.schema import AgentConfig, validate_document
from agent_registry.versioning import HASH_LENGTH, content_hash, version_of

log = logging.getLogger(__name__)

#: How many earlier active versions rollback can walk back through, and activation log length.
MAX_PREVIOUS = 100
MAX_LOG = 500
MAX_ANALYSES = 200

# KEYS: history, active, previous, log, epoch, rollout, withdrawn (one agent's, one hash tag).
# ARGV: mode (activate | seed | rollback | promote), version, log entry prefix, max previous, max log.
_ACTIVATE = """
local current = redis.call('GET', KEYS[2])
local target
if ARGV[1] == 'rollback' then
  -- withdraw removes a version from this stack; skipping here too keeps rollback safe regardless.
  repeat
    target = redis.call('LPOP', KEYS[3])
    if not target then return {'empty', ''} end
  until redis.call('SISMEMBER', KEYS[7], target) == 0
else
  if ARGV[1] == 'promote' then
    target = redis.call('HGET', KEYS[6], 'candidate')
    if not target then return {'norollout', ''} end
  else
    target = ARGV[2]
  end
  if not redis.call('ZSCORE', KEYS[1], target) then return {'unknown', ''} end
  if redis.call('SISMEMBER', KEYS[7], target) == 1 then return {'withdrawn', target} end
  if ARGV[1] == 'seed' and current then return {'unchanged', current, redis.call('GET', KEYS[5]) or '0'} end
  if current == target then return {'unchanged', current, redis.call('GET', KEYS[5]) or '0'} end
  if current then
    redis.call('LPUSH', KEYS[3], current)
    redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
  end
end
-- A new active version ends any canary: its stable side is no longer what serves.
local ended = redis.call('HGET', KEYS[6], 'candidate') or ''
redis.call('DEL', KEYS[6])
redis.call('SET', KEYS[2], target)
local epoch = redis.call('INCR', KEYS[5])
local entry = ARGV[3] .. ',"version":"' .. target .. '","previous":"' .. (current or '')
  .. '","rollout_ended":"' .. ended .. '","epoch":' .. epoch .. '}'
redis.call('LPUSH', KEYS[4], entry)
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
return {'changed', current or '', tostring(epoch), target}
"""

# KEYS: history, active, rollout, log, epoch, withdrawn. ARGV: mode (set | abort), candidate,
# percent, log entry prefix, max log, now, baseline JSON ('' keeps the current one). Every change
# bumps the epoch so gateways reread the split.
_ROLLOUT = """
local current = redis.call('GET', KEYS[2])
local candidate = redis.call('HGET', KEYS[3], 'candidate')
local entry
if ARGV[1] == 'abort' then
  if not candidate then return {'norollout'} end
  redis.call('DEL', KEYS[3])
  entry = ',"version":"' .. candidate .. '","previous":"' .. (current or '')
else
  if not current then return {'noactive'} end
  if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return {'unknown'} end
  if redis.call('SISMEMBER', KEYS[6], ARGV[2]) == 1 then return {'withdrawn'} end
  if current == ARGV[2] then return {'isactive'} end
  if candidate and candidate ~= ARGV[2] then return {'busy', candidate} end
  if not candidate then
    redis.call('HSET', KEYS[3], 'candidate', ARGV[2], 'stable', current, 'started_at', ARGV[6])
  end
  redis.call('HSET', KEYS[3], 'percent', ARGV[3], 'updated_at', ARGV[6])
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[3], 'baseline', ARGV[7]) end
  entry = ',"version":"' .. ARGV[2] .. '","previous":"' .. current
end
local epoch = redis.call('INCR', KEYS[5])
redis.call('LPUSH', KEYS[4], ARGV[4] .. entry .. '","epoch":' .. epoch .. '}')
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
return {'changed', tostring(epoch), candidate or ARGV[2]}
"""

# KEYS: history, active, rollout, log, epoch, withdrawn, previous (one agent's, one hash tag).
# ARGV: version, log entry prefix, max log. The active version cannot be withdrawn; withdrawing
# the rollout's candidate ends the rollout; rollback never returns to a withdrawn version.
_WITHDRAW = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'unknown'} end
local current = redis.call('GET', KEYS[2]) or ''
if current == ARGV[1] then return {'isactive'} end
if redis.call('SADD', KEYS[6], ARGV[1]) == 0 then return {'unchanged'} end
redis.call('LREM', KEYS[7], 0, ARGV[1])
local ended = ''
if redis.call('HGET', KEYS[3], 'candidate') == ARGV[1] then
  ended = ARGV[1]
  redis.call('DEL', KEYS[3])
end
local epoch = redis.call('INCR', KEYS[5])
redis.call('LPUSH', KEYS[4], ARGV[2] .. ',"version":"' .. ARGV[1] .. '","previous":"' .. current
  .. '","rollout_ended":"' .. ended .. '","epoch":' .. epoch .. '}')
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1)
return {'changed', tostring(epoch), ended}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class PublishedVersion:
    version: str
    agent: str
    label: str
    content_hash: str
    seq: int
    published_at: str
    document: dict[str, Any] = field(repr=False)

    def config(self) -> AgentConfig:
        return validate_document(self.document, self.version).model_copy(update={"version": self.version})

    def to_record(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "agent": self.agent,
                "label": self.label,
                "content_hash": self.content_hash,
                "seq": self.seq,
                "published_at": self.published_at,
                "document": self.document,
            },
            sort_keys=True,
        )

    @classmethod
    def from_record(cls, raw: str | bytes) -> PublishedVersion:
        data = json.loads(raw)
        return cls(
            version=data["version"],
            agent=data["agent"],
            label=data["label"],
            content_hash=data["content_hash"],
            seq=int(data["seq"]),
            published_at=data["published_at"],
            document=data["document"],
        )


@dataclass(frozen=True)
class Rollout:
    """A canary: `candidate` answers `percent` % of new conversations, `stable` (the active) the rest.

    `baseline` holds both versions' online counters when the share was last set (the start, or
    a change of percent), so analysis compares only what each served under the current split: not
    an offline evaluation run, not last month, and not a period in which only one side served.
    """

    agent: str
    candidate: str
    stable: str
    percent: float
    started_at: str
    updated_at: str
    baseline: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def version_for(self, conversation_id: str) -> str:
        """The version a new conversation gets: the same answer for the same id on every pod.

        The id's SHA-256 picks one of 10 000 buckets; buckets below percent x 100 go to the
        candidate, so raising the share keeps every earlier candidate conversation a candidate one.
        """
        digest = hashlib.sha256(f"{self.agent}:{conversation_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % 10_000
        return self.candidate if bucket < round(self.percent * 100) else self.stable

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "candidate": self.candidate,
            "stable": self.stable,
            "percent": self.percent,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Activation:
    agent: str
    version: str
    previous: str | None
    changed: bool
    epoch: int


class AgentRegistry:
    """The registry over one Redis client (the caller owns the client's lifetime)."""

    def __init__(self, client: AnyRedis) -> None:
        self._redis = client
        self._activate_script = client.register_script(_ACTIVATE)
        self._rollout_script = client.register_script(_ROLLOUT)
        self._withdraw_script = client.register_script(_WITHDRAW)

    async def publish(
        self, document: dict[str, Any], source: str = "<document>"
    ) -> tuple[PublishedVersion, bool]:
        """Publish a validated document; returns (version, created). Same content -> same version."""
        config = validate_document(document, source)
        body = {key: value for key, value in document.items() if key != "version"}
        version = version_of(body)
        try:
            existing = await self._redis.get(keys.version(version))
            if existing is not None:
                record = PublishedVersion.from_record(existing)
                await self._index(record)  # repairs a publish interrupted between its writes
                return record, False
            record = PublishedVersion(
                version=version,
                agent=config.agent,
                label=config.label,
                content_hash=content_hash(body),
                seq=int(await self._redis.incr(keys.seq())),
                published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                document=body,
            )
            if not await self._redis.set(keys.version(version), record.to_record(), nx=True):
                # Someone published the same content a moment earlier: theirs stands.
                return await self.get(version), False
            await self._index(record)
        except RedisError as exc:
            raise RegistryUnavailable(f"publishing {version}: {exc}") from exc
        log.info("published agent config %s for agent %s", version, config.agent)
        return record, True

    async def _index(self, record: PublishedVersion) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.history(record.agent), {record.version: record.seq}, nx=True)
            pipe.sadd(keys.agents(), record.agent)
            pipe.set(keys.by_hash(record.content_hash), record.version, nx=True)
            await pipe.execute()

    async def get(self, version: str) -> PublishedVersion:
        """A published version by its id, or by its 12-hex content hash alone."""
        try:
            if len(version) == HASH_LENGTH and "@" not in version:
                full = await self._redis.get(keys.by_hash(version))
                if full is None:
                    raise UnknownVersion(version)
                version = _text(full)
            raw = await self._redis.get(keys.version(version))
        except RedisError as exc:
            raise RegistryUnavailable(f"reading {version}: {exc}") from exc
        if raw is None:
            raise UnknownVersion(version)
        return PublishedVersion.from_record(raw)

    async def config(self, version: str) -> AgentConfig:
        return (await self.get(version)).config()

    async def agents(self) -> list[str]:
        return sorted(_text(name) for name in await self._call(self._redis.smembers(keys.agents())))

    async def versions(self, agent: str) -> list[PublishedVersion]:
        """The agent's versions in publish order, oldest first."""
        ids = [_text(v) for v in await self._call(self._redis.zrange(keys.history(agent), 0, -1))]
        if not ids:
            return []
        # Records live in their own hash slots (MGET on a cluster takes one slot): a pipeline of
        # GETs, one round trip per node; records never change, so nothing needs them read together.
        async with self._redis.pipeline(transaction=False) as pipe:
            for v in ids:
                pipe.get(keys.version(v))
            raws = await self._call(pipe.execute())
        return [PublishedVersion.from_record(raw) for raw in raws if raw is not None]

    async def history_between(self, agent: str, start: str, end: str) -> list[str]:
        """Version ids from start to end inclusive, in publish order (either may come first)."""
        ids = [_text(v) for v in await self._call(self._redis.zrange(keys.history(agent), 0, -1))]
        for version in (start, end):
            if version not in ids:
                record = await self.get(version)  # raises UnknownVersion
                raise WrongAgent(agent, version, record.agent)
        i, j = ids.index(start), ids.index(end)
        return ids[i : j + 1] if i <= j else list(reversed(ids[j : i + 1]))

    async def active_version(self, agent: str) -> str | None:
        raw = await self._call(self._redis.get(keys.active(agent)))
        return None if raw is None else _text(raw)

    async def active_config(self, agent: str) -> AgentConfig:
        version = await self.active_version(agent)
        if version is None:
            raise NoActiveVersion(agent)
        return await self.config(version)

    async def epoch(self, agent: str) -> int:
        raw = await self._call(self._redis.get(keys.epoch(agent)))
        return 0 if raw is None else int(raw)

    async def activate(self, agent: str, version: str, actor: str = "cli") -> Activation:
        record = await self.get(version)
        if record.agent != agent:
            raise WrongAgent(agent, record.version, record.agent)
        return await self._run(agent, "activate", record.version, actor)

    async def activate_if_none(self, agent: str, version: str, actor: str = "seed") -> Activation:
        """Activate only when the agent has no active version (pods seeding an empty registry race safely)."""
        record = await self.get(version)
        if record.agent != agent:
            raise WrongAgent(agent, record.version, record.agent)
        return await self._run(agent, "seed", record.version, actor)

    async def rollback(self, agent: str, actor: str = "cli") -> Activation:
        return await self._run(agent, "rollback", "", actor)

    async def promote(self, agent: str, actor: str = "cli") -> Activation:
        """Make the rollout's candidate the active version (and end the rollout)."""
        return await self._run(agent, "promote", "", actor)

    async def start_rollout(
        self,
        agent: str,
        candidate: str,
        percent: float,
        *,
        actor: str = "cli",
        baseline: dict[str, dict[str, float]] | None = None,
    ) -> Rollout:
        """Send `percent` % of new conversations to `candidate`; again with the same one changes the share.

        A second candidate is refused while one is under way (promote or abort it first). `baseline`
        (both versions' counters now) starts a new comparison window; None keeps the current one.
        """
        if math.isnan(percent) or not 0 < percent <= 100:
            raise RolloutRefused(agent, f"percent must be above 0 and at most 100, not {percent}")
        record = await self.get(candidate)
        if record.agent != agent:
            raise WrongAgent(agent, record.version, record.agent)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        prefix = json.dumps({"at": now, "action": "rollout", "actor": actor, "percent": percent})[:-1]
        result = await self._rollout_call(
            agent,
            "set",
            record.version,
            percent,
            prefix,
            now,
            "" if baseline is None else json.dumps(baseline),
        )
        status = _text(result[0])
        if status == "noactive":
            raise NoActiveVersion(agent)
        if status == "unknown":
            raise UnknownVersion(record.version)
        if status == "withdrawn":
            raise VersionWithdrawn(record.version)
        if status == "isactive":
            raise RolloutRefused(agent, f"{record.version} is already the active version")
        if status == "busy":
            raise RolloutRefused(
                agent, f"a rollout of {_text(result[1])} is under way; promote or abort it first"
            )
        rollout = await self.rollout(agent)
        assert rollout is not None
        log.info(
            "agent %s: rollout of %s at %g%% (stable %s)", agent, rollout.candidate, percent, rollout.stable
        )
        await self._announce(agent, rollout.stable, int(_text(result[1])))
        return rollout

    async def abort_rollout(self, agent: str, *, actor: str = "cli", reason: str = "") -> Rollout:
        """End the rollout: every new conversation gets the active version again. Returns what ended."""
        rollout = await self.rollout(agent)
        if rollout is None:
            raise RolloutRefused(agent, "has no rollout under way to abort")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        prefix = json.dumps({"at": now, "action": "abort", "actor": actor, "reason": reason[:2000]})[:-1]
        result = await self._rollout_call(agent, "abort", "", 0, prefix, now, "")
        if _text(result[0]) == "norollout":
            raise RolloutRefused(agent, "has no rollout under way to abort")
        log.warning("agent %s: rollout of %s aborted by %s: %s", agent, rollout.candidate, actor, reason)
        await self._announce(agent, rollout.stable, int(_text(result[1])))
        return rollout

    async def rollout(self, agent: str) -> Rollout | None:
        raw = await self._call(self._redis.hgetall(keys.rollout(agent)))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return Rollout(
            agent=agent,
            candidate=fields["candidate"],
            stable=fields["stable"],
            percent=float(fields["percent"]),
            started_at=fields["started_at"],
            updated_at=fields.get("updated_at", fields["started_at"]),
            baseline=json.loads(fields.get("baseline") or "{}"),
        )

    async def record_analysis(self, agent: str, record: dict[str, Any]) -> None:
        """Keep one canary analysis (decision and numbers) for `status` and the audit trail."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.analyses(agent), json.dumps(record, sort_keys=True))
            pipe.ltrim(keys.analyses(agent), 0, MAX_ANALYSES - 1)
            await self._call(pipe.execute())

    async def claim_analysis(self, agent: str, holder: str, ttl_s: float) -> bool:
        """True for the one caller per ttl that should analyze the agent's rollout now."""
        claimed = await self._call(
            self._redis.set(keys.analysis_lock(agent), holder, nx=True, px=max(1, int(ttl_s * 1000)))
        )
        return bool(claimed)

    async def analyses(self, agent: str, limit: int = 10) -> list[dict[str, Any]]:
        raws = await self._call(self._redis.lrange(keys.analyses(agent), 0, max(0, limit - 1)))
        return [json.loads(raw) for raw in raws]

    async def _rollout_call(
        self, agent: str, mode: str, candidate: str, percent: float, prefix: str, now: str, baseline: str
    ) -> list[Any]:
        result: list[Any] = await self._call(
            self._rollout_script(
                keys=[
                    keys.history(agent),
                    keys.active(agent),
                    keys.rollout(agent),
                    keys.log(agent),
                    keys.epoch(agent),
                    keys.withdrawn(agent),
                ],
                args=[mode, candidate, repr(float(percent)), prefix, MAX_LOG, now, baseline],
            )
        )
        return result

    async def withdraw(self, version: str, *, actor: str = "cli", reason: str = "") -> bool:
        """Make a published version unusable by everyone, for good: it cannot be pinned, activated,
        rolled out or rolled back to, and conversations pinned to it take no further messages.
        The active version cannot be withdrawn (activate or roll back first); withdrawing the
        rollout's candidate ends the rollout. False when it was withdrawn already."""
        record = await self.get(version)
        agent = record.agent
        at = datetime.now(UTC).isoformat(timespec="seconds")
        prefix = json.dumps({"at": at, "action": "withdraw", "actor": actor, "reason": reason[:2000]})[:-1]
        result = await self._call(
            self._withdraw_script(
                keys=[
                    keys.history(agent),
                    keys.active(agent),
                    keys.rollout(agent),
                    keys.log(agent),
                    keys.epoch(agent),
                    keys.withdrawn(agent),
                    keys.previous(agent),
                ],
                args=[record.version, prefix, MAX_LOG],
            )
        )
        status = _text(result[0])
        if status == "unknown":
            raise UnknownVersion(record.version)
        if status == "isactive":
            raise WithdrawRefused(record.version, "it is the active version; activate another one first")
        if status == "unchanged":
            return False
        log.warning("agent %s: version %s withdrawn by %s: %s", agent, record.version, actor, reason)
        active = await self.active_version(agent)
        if active is not None:
            await self._announce(agent, active, int(_text(result[1])))
        return True

    async def is_withdrawn(self, agent: str, version: str) -> bool:
        """Whether this version (full id) of the agent was withdrawn; one read."""
        return bool(await self._call(self._redis.sismember(keys.withdrawn(agent), version)))

    async def withdrawn(self, agent: str) -> frozenset[str]:
        """Every withdrawn version of the agent."""
        return frozenset(_text(v) for v in await self._call(self._redis.smembers(keys.withdrawn(agent))))

    async def activation_log(self, agent: str, limit: int = 20) -> list[dict[str, Any]]:
        raws = await self._call(self._redis.lrange(keys.log(agent), 0, max(0, limit - 1)))
        return [json.loads(raw) for raw in raws]

    async def _run(self, agent: str, mode: str, version: str, actor: str) -> Activation:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        prefix = json.dumps({"at": at, "action": mode, "actor": actor})[:-1]
        result = await self._call(
            self._activate_script(
                keys=[
                    keys.history(agent),
                    keys.active(agent),
                    keys.previous(agent),
                    keys.log(agent),
                    keys.epoch(agent),
                    keys.rollout(agent),
                    keys.withdrawn(agent),
                ],
                args=[mode, version, prefix, MAX_PREVIOUS, MAX_LOG],
            )
        )
        status = _text(result[0])
        if status == "empty":
            raise NothingToRollBack(agent)
        if status == "unknown":
            raise UnknownVersion(version)
        if status == "withdrawn":
            raise VersionWithdrawn(_text(result[1]))
        if status == "norollout":
            raise RolloutRefused(agent, "has no rollout under way to promote")
        if status == "unchanged":
            return Activation(agent, _text(result[1]), _text(result[1]), False, int(_text(result[2])))
        previous = _text(result[1]) or None
        target = _text(result[3])
        log.info(
            "agent %s: %s %s (was %s)",
            agent,
            {"rollback": "rolled back to", "promote": "promoted"}.get(mode, "activated"),
            target,
            previous or "none",
        )
        await self._announce(agent, target, int(_text(result[2])))
        return Activation(agent, target, previous, True, int(_text(result[2])))

    async def _announce(self, agent: str, version: str, epoch: int) -> None:
        # Best effort: gateways also poll the epoch, so a lost message only delays the pickup.
        try:
            await self._redis.publish(
                keys.CHANNEL, json.dumps({"agent": agent, "version": version, "epoch": epoch})
            )
        except RedisError as exc:
            log.warning("activation of %s not announced (gateways will poll it): %s", version, exc)

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as exc:
            raise RegistryUnavailable(str(exc)) from exc
