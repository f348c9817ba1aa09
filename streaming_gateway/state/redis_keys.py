"""Redis key names, in one place. Everything of one conversation shares its `{id}` hash tag so the
keys live in one cluster slot and one Lua script may touch them all."""

from __future__ import annotations

PREFIX = "gw"


def conversation(cid: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}"


def messages(cid: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:msgs"


def event_log(cid: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:log"


def log_wake(cid: str) -> str:
    """The sharded pub/sub channel an append on a cluster publishes its last id on (in the log's slot)."""
    return f"{PREFIX}:conv:{{{cid}}}:wake"


def watchers(cid: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:watchers"


def busy(cid: str) -> str:
    """Holds the id of the turn answering now: one answer at a time per conversation."""
    return f"{PREFIX}:conv:{{{cid}}}:busy"


def cancel(cid: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:cancel"


def step(cid: str, step_id: str) -> str:
    """The tool calls of one assistant step waiting for their action results."""
    return f"{PREFIX}:conv:{{{cid}}}:step:{step_id}"


def step_results(cid: str, step_id: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:step:{step_id}:results"


def step_continued(cid: str, step_id: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:step:{step_id}:continued"


def action(action_id: str) -> str:
    return f"{PREFIX}:action:{action_id}"


def action_seen(action_id: str) -> str:
    return f"{PREFIX}:action:{action_id}:seen"


def user_conversations(user_id: str) -> str:
    return f"{PREFIX}:user:{{{user_id}}}:convs"


def user_conversations_pruned(user_id: str) -> str:
    """Set for a while after the user's index was checked for expired conversations."""
    return f"{PREFIX}:user:{{{user_id}}}:convs:pruned"


def ws_ticket(user_tag: str, digest: str) -> str:
    """A WebSocket ticket (by its secret's hash), tagged with its user's tag (state/ws_tickets.py)."""
    return f"{PREFIX}:wsticket:{{{user_tag}}}:{digest}"


def user_streams(user_id: str) -> str:
    return f"{PREFIX}:user:{{{user_id}}}:streams"


def user_rate(user_id: str, window: int) -> str:
    return f"{PREFIX}:user:{{{user_id}}}:rate:{window}"


def producing(cid: str) -> str:
    """Set (with a short lease) while some pod runs the model for this conversation."""
    return f"{PREFIX}:conv:{{{cid}}}:producing"


def log_owner(cid: str) -> str:
    """The producer that assigns the log's ids while it writes an answer (state/stream_log.py)."""
    return f"{PREFIX}:conv:{{{cid}}}:owner"


def log_deferred(cid: str) -> str:
    """Entries other writers gave while a producer owned the ids: appended when it lets them go."""
    return f"{PREFIX}:conv:{{{cid}}}:deferred"
