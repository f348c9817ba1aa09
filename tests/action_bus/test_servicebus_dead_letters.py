"""The Service Bus dead-letter subqueue adapter: its mapping and its receive/settle logic. No Service
Bus endpoint can run here, so the received messages, the receiver and the sender are test doubles
(ServiceBusReceivedMessageTestDouble, ...) with the SDK's attribute and method names."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue

from action_bus.servicebus import ServiceBusDeadLetters, dead_message, replay_message


@dataclass
class ServiceBusReceivedMessageTestDouble:
    sequence_number: int
    message_id: str = "m-1"
    body: Any = b'{"name": "create_ticket"}'
    dead_letter_reason: str | None = "MaxDeliveryCountExceeded"
    dead_letter_error_description: str | None = "Message could not be consumed after 10 delivery attempts."
    delivery_count: int = 10
    enqueued_time_utc: datetime = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    application_properties: dict[bytes | str, Any] = field(
        default_factory=lambda: {b"action_name": b"create_ticket"}
    )


@dataclass
class ReceiverTestDouble:
    """Hands out `waiting` in batches (completed ones are gone; abandoned ones come back)."""

    waiting: list[ServiceBusReceivedMessageTestDouble]
    completed: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)

    async def peek_messages(self, max_message_count: int) -> list[ServiceBusReceivedMessageTestDouble]:
        return self.waiting[:max_message_count]

    async def receive_messages(self, max_message_count: int, max_wait_time: float) -> list[Any]:
        batch, self.waiting = self.waiting[:max_message_count], self.waiting[max_message_count:]
        return batch

    async def complete_message(self, message: ServiceBusReceivedMessageTestDouble) -> None:
        self.completed.append(message.sequence_number)

    async def abandon_message(self, message: ServiceBusReceivedMessageTestDouble) -> None:
        self.abandoned.append(message.sequence_number)

    async def close(self) -> None:
        return None


@dataclass
class SenderTestDouble:
    sent: list[ServiceBusMessage] = field(default_factory=list)

    async def send_messages(self, message: ServiceBusMessage) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        return None


@dataclass
class ClientTestDouble:
    receiver: ReceiverTestDouble
    sender: SenderTestDouble
    asked: list[tuple[str, Any]] = field(default_factory=list)

    def get_queue_receiver(self, queue: str, sub_queue: Any = None) -> ReceiverTestDouble:
        self.asked.append((queue, sub_queue))
        return self.receiver

    def get_queue_sender(self, queue: str) -> SenderTestDouble:
        return self.sender

    async def close(self) -> None:
        return None


def adapter(*sequence_numbers: int) -> tuple[ServiceBusDeadLetters, ClientTestDouble]:
    client = ClientTestDouble(
        ReceiverTestDouble(
            [ServiceBusReceivedMessageTestDouble(n, message_id=f"m-{n}") for n in sequence_numbers]
        ),
        SenderTestDouble(),
    )
    return ServiceBusDeadLetters(client, None, "actions"), client  # type: ignore[arg-type]


def test_dead_lettered_message_maps_reason_count_and_properties() -> None:
    """Sequence number as id, the dead-letter reason and description, the delivery count, decoded properties."""
    dead = dead_message(ServiceBusReceivedMessageTestDouble(42))
    assert (dead.id, dead.message_id, dead.reason) == ("42", "m-1", "MaxDeliveryCountExceeded")
    assert dead.delivery_count == 10 and "10 delivery attempts" in dead.description
    assert dead.properties == {"action_name": "create_ticket"} and dead.body == '{"name": "create_ticket"}'


def test_replayed_copy_gets_a_new_id_naming_the_original() -> None:
    """The copy sent back has the body and properties and an id the duplicate detection will not drop."""
    copy = replay_message(dead_message(ServiceBusReceivedMessageTestDouble(42)))
    assert copy.message_id == "m-1~dlq42" and str(copy) == '{"name": "create_ticket"}'
    assert copy.application_properties == {"action_name": "create_ticket"}


async def test_adapter_reads_the_dead_letter_subqueue() -> None:
    """The receiver is opened on the queue's dead-letter subqueue; peek takes nothing."""
    dead_letters, client = adapter(1, 2)
    assert [m.id for m in await dead_letters.peek(10)] == ["1", "2"]
    assert client.asked == [("actions", ServiceBusSubQueue.DEAD_LETTER)]
    assert client.receiver.completed == []


async def test_replay_one_sends_a_copy_completes_it_and_gives_the_others_back() -> None:
    """Replay of sequence 2: one copy sent, 2 completed, 1 and 3 abandoned (they stay in the subqueue)."""
    dead_letters, client = adapter(1, 2, 3)
    assert await dead_letters.replay("2") is True
    assert [m.message_id for m in client.sender.sent] == ["m-2~dlq2"]
    assert client.receiver.completed == [2] and sorted(client.receiver.abandoned) == [1, 3]
    assert await adapter(1)[0].replay("9") is False


async def test_purge_completes_everything() -> None:
    """Purge receives until the subqueue is empty and completes each message."""
    dead_letters, client = adapter(*range(1, 120))
    assert await dead_letters.purge() == 119 and client.sender.sent == []
