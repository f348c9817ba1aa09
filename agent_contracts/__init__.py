"""Contracts shared by the streaming gateway and the function app.

Defined once here and validated on both ends: the action request the gateway puts on the bus,
the result document the function app writes to Cosmos DB, and the events clients receive.
"""

from agent_contracts.actions import (
    ACTION_STATUS_ORDER,
    ActionRequest,
    ActionResult,
    ActionStatus,
    AttemptRecord,
    is_forward_transition,
)
from agent_contracts.events import (
    ActionStatusEvent,
    ErrorEvent,
    MessageEndEvent,
    StreamEvent,
    TokenEvent,
    ToolCallEvent,
    parse_event,
)

__all__ = [
    "ACTION_STATUS_ORDER",
    "ActionRequest",
    "ActionResult",
    "ActionStatus",
    "ActionStatusEvent",
    "AttemptRecord",
    "ErrorEvent",
    "MessageEndEvent",
    "StreamEvent",
    "TokenEvent",
    "ToolCallEvent",
    "is_forward_transition",
    "parse_event",
]
