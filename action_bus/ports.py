"""Ports (protocols) of the action bus. The gateway and the worker depend on these, never on an SDK."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agent_contracts import ActionRequest, ActionResult


class ActionBusError(Exception):
    """Root of the action bus's errors."""


class BusUnavailable(ActionBusError):
    """The bus could not be reached; the caller keeps the message and retries later."""


class ActionBus(Protocol):
    """Where the gateway's outbox relay hands accepted actions (Service Bus queue "actions")."""

    async def publish(self, request: ActionRequest) -> None:
        """Send one request; at-least-once. Raises BusUnavailable when it could not be sent."""
        ...

    async def close(self) -> None: ...


class MessageScheduler(Protocol):
    """Puts a message back on the actions queue to be delivered at a later time (Service Bus
    scheduled messages), so a consumer that cannot handle it now backs off instead of abandoning it
    into an immediate redelivery."""

    async def schedule(
        self, message_id: str, body: str, properties: dict[str, str], enqueue_at: datetime
    ) -> None:
        """Raises BusUnavailable when it could not be scheduled."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class DeadMessage:
    """One message in a queue's dead-letter subqueue (Service Bus) or dead-letter stream (local)."""

    id: str
    message_id: str
    body: str
    reason: str
    description: str
    delivery_count: int
    dead_lettered_at: datetime | None
    properties: dict[str, str] = field(default_factory=dict)


class BusDeadLetters(Protocol):
    """The dead-letter subqueue of the actions queue, for the dead-letter command."""

    async def peek(self, max_count: int = 100) -> list[DeadMessage]:
        """Look without taking: the messages stay where they are."""
        ...

    async def replay(self, dead_id: str) -> bool:
        """Put one message back on its queue and remove it from the subqueue; False if not found."""
        ...

    async def purge(self) -> int:
        """Remove every message from the subqueue; how many were removed."""
        ...

    async def close(self) -> None: ...


class ActionUpdateSink(Protocol):
    """Where the pipeline reports each status change of an action back to the gateway."""

    async def publish_update(self, update: ActionResult) -> None:
        """At-least-once; a re-sent identical update is dropped by the bus's duplicate detection."""
        ...

    async def close(self) -> None: ...


class ActionUpdateSource(Protocol):
    """What the gateway reads action status changes from (any pod may take any update)."""

    async def next_updates(self, max_count: int = 50, wait_s: float = 5.0) -> list[tuple[str, ActionResult]]:
        """Up to max_count (delivery_id, update) pairs, waiting at most wait_s for the first."""
        ...

    async def ack(self, delivery_id: str) -> None:
        """Done with one update: it is not delivered again."""
        ...

    async def close(self) -> None: ...
