"""Redis key names of the registry. Each agent's keys share the `{agent}` hash tag so the
activation script touches one cluster slot."""

from __future__ import annotations

PREFIX = "agentreg"
#: Where activations are announced (payload: {"agent", "version", "epoch"}).
CHANNEL = f"{PREFIX}:activations"


def seq() -> str:
    """Global publish counter: orders every agent's history."""
    return f"{PREFIX}:seq"


def agents() -> str:
    return f"{PREFIX}:agents"


def version(version_id: str) -> str:
    """The immutable record of one published version (JSON)."""
    return f"{PREFIX}:version:{version_id}"


def by_hash(content_hash: str) -> str:
    return f"{PREFIX}:hash:{content_hash}"


def history(agent: str) -> str:
    """ZSET of the agent's versions scored by publish sequence."""
    return f"{PREFIX}:{{{agent}}}:history"


def active(agent: str) -> str:
    return f"{PREFIX}:{{{agent}}}:active"


def previous(agent: str) -> str:
    """LIST of previously active versions, newest first: what rollback returns to."""
    return f"{PREFIX}:{{{agent}}}:previous"


def log(agent: str) -> str:
    """LIST of activation records, newest first (bounded)."""
    return f"{PREFIX}:{{{agent}}}:log"


def epoch(agent: str) -> str:
    """Incremented on every activation change: the one key gateways poll."""
    return f"{PREFIX}:{{{agent}}}:epoch"


def rollout(agent: str) -> str:
    """HASH of the agent's canary rollout (candidate, stable, percent, ...); absent when none."""
    return f"{PREFIX}:{{{agent}}}:rollout"


def withdrawn(agent: str) -> str:
    """SET of the agent's withdrawn versions: never pinned, activated or rolled out again."""
    return f"{PREFIX}:{{{agent}}}:withdrawn"


def analyses(agent: str) -> str:
    """LIST of canary analysis records, newest first (bounded)."""
    return f"{PREFIX}:{{{agent}}}:analyses"


def analysis_lock(agent: str) -> str:
    """Held by the one gateway pod that runs the background canary analysis this interval."""
    return f"{PREFIX}:{{{agent}}}:analysis-lock"
