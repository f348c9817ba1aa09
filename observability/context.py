"""Per-task log context (conversation, config version, message, action) kept in contextvars.

asyncio copies contextvars into each task, so a value bound while handling one turn shows on
every log line of that turn and of nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

conversation_id_var: ContextVar[str | None] = ContextVar("conversation_id", default=None)
config_version_var: ContextVar[str | None] = ContextVar("config_version", default=None)
message_id_var: ContextVar[str | None] = ContextVar("message_id", default=None)
action_id_var: ContextVar[str | None] = ContextVar("action_id", default=None)

_VARS: dict[str, ContextVar[str | None]] = {
    "conversation_id": conversation_id_var,
    "config_version": config_version_var,
    "message_id": message_id_var,
    "action_id": action_id_var,
}
FIELDS = tuple(_VARS)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Bind conversation_id, config_version, message_id and/or action_id for the block."""
    unknown = set(fields) - set(_VARS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind(**fields: str | None) -> None:
    """Set fields for the rest of the current task (a handler that owns its task)."""
    unknown = set(fields) - set(_VARS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        _VARS[name].set(value)


def current() -> dict[str, str]:
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}
