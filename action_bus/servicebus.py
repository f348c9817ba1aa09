"""Azure Service Bus adapters of the action bus ports (`azure-servicebus`, async).

Kept thin on purpose: no endpoint runs here, so everything testable lives in the pure mapping
functions (request -> ServiceBusMessage, SDK error -> BusUnavailable) and the adapters only send,
receive and settle. The client is built in the factory and owned by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError
from pydantic import ValidationError

from action_bus.local import request_properties, update_message_id
from action_bus.ports import ActionBusError, BusUnavailable, DeadMessage
from agent_contracts import ActionRequest, ActionResult

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"


class MessageRejected(ActionBusError):
    """The bus refused this message for good (too large); retrying cannot help."""

    def __init__(self, message_id: str, detail: str) -> None:
        super().__init__(f"message {message_id} rejected: {detail}")
        self.message_id = message_id


def application_properties_of(properties: Mapping[str, str]) -> dict[str | bytes, Any]:
    """Our string properties as the SDK types them (keys str or bytes); content_type is a message field."""
    result: dict[str | bytes, Any] = {}
    for key, value in properties.items():
        if key != "content_type":
            result[key] = value
    return result


def to_servicebus_message(request: ActionRequest) -> ServiceBusMessage:
    """The message the gateway sends: message_id drives Service Bus duplicate detection."""
    properties = application_properties_of(request_properties(request))
    return ServiceBusMessage(
        request.to_json(),
        message_id=request.message_id,
        content_type=CONTENT_TYPE,
        correlation_id=request.conversation_id,
        subject=request.name,
        application_properties=properties,
    )


def update_to_servicebus_message(update: ActionResult) -> ServiceBusMessage:
    return ServiceBusMessage(
        update.to_json(),
        message_id=update_message_id(update),
        content_type=CONTENT_TYPE,
        correlation_id=update.conversation_id,
        subject=update.status.value,
        application_properties={"action_id": update.id, "status": update.status.value},
    )


def message_body_text(message: ServiceBusReceivedMessage) -> str:
    body = message.body
    if isinstance(body, (bytes, str)):
        return body.decode() if isinstance(body, bytes) else body
    return b"".join(body).decode()


def map_error(exc: ServiceBusError, message_id: str) -> ActionBusError:
    """Too large is final; everything else (connection, timeout, busy, auth, quota) is retried later."""
    if isinstance(exc, MessageSizeExceededError):
        return MessageRejected(message_id, str(exc))
    return BusUnavailable(f"service bus: {type(exc).__name__}: {exc}")


async def _close_client(client: ServiceBusClient, credential: Any) -> None:
    await client.close()
    if credential is not None:
        await credential.close()


async def send_one(sender: ServiceBusSender, message: ServiceBusMessage) -> None:
    try:
        await sender.send_messages(message)
    except ServiceBusError as exc:
        raise map_error(exc, str(message.message_id)) from exc


class ServiceBusActionBus:
    """ActionBus adapter: one sender on the actions queue (duplicate detection on the queue)."""

    def __init__(self, client: ServiceBusClient, credential: Any, queue: str) -> None:
        self._client = client
        self._credential = credential
        self._sender: ServiceBusSender = client.get_queue_sender(queue)

    async def publish(self, request: ActionRequest) -> None:
        await send_one(self._sender, to_servicebus_message(request))

    async def close(self) -> None:
        await self._sender.close()
        await _close_client(self._client, self._credential)


def scheduled_message(
    message_id: str, body: str, properties: dict[str, str], enqueue_at: datetime
) -> ServiceBusMessage:
    """A copy of a received message to be enqueued at `enqueue_at` (UTC), under a new message id."""
    application_properties = application_properties_of(properties)
    return ServiceBusMessage(
        body,
        message_id=message_id,
        content_type=CONTENT_TYPE,
        application_properties=application_properties,
        scheduled_enqueue_time_utc=enqueue_at.astimezone(UTC),
    )


class ServiceBusMessageScheduler:
    """MessageScheduler adapter: a scheduled message on the actions queue."""

    def __init__(self, client: ServiceBusClient, credential: Any, queue: str) -> None:
        self._client = client
        self._credential = credential
        self._sender: ServiceBusSender = client.get_queue_sender(queue)

    async def schedule(
        self, message_id: str, body: str, properties: dict[str, str], enqueue_at: datetime
    ) -> None:
        await send_one(self._sender, scheduled_message(message_id, body, properties, enqueue_at))

    async def close(self) -> None:
        await self._sender.close()
        await _close_client(self._client, self._credential)


class ServiceBusUpdateSink:
    """ActionUpdateSink adapter: the function app sends each status change to the updates queue."""

    def __init__(self, client: ServiceBusClient, credential: Any, queue: str) -> None:
        self._client = client
        self._credential = credential
        self._sender: ServiceBusSender = client.get_queue_sender(queue)

    async def publish_update(self, update: ActionResult) -> None:
        await send_one(self._sender, update_to_servicebus_message(update))

    async def close(self) -> None:
        await self._sender.close()
        await _close_client(self._client, self._credential)


class ServiceBusUpdateSource:
    """ActionUpdateSource adapter: gateway pods receive competitively (peek-lock) from the updates queue."""

    def __init__(self, client: ServiceBusClient, credential: Any, queue: str) -> None:
        self._client = client
        self._credential = credential
        self._receiver: ServiceBusReceiver = client.get_queue_receiver(queue)
        self._locked: dict[str, ServiceBusReceivedMessage] = {}

    async def next_updates(self, max_count: int = 50, wait_s: float = 5.0) -> list[tuple[str, ActionResult]]:
        try:
            messages = await self._receiver.receive_messages(
                max_message_count=max_count, max_wait_time=wait_s
            )
        except ServiceBusError as exc:
            raise map_error(exc, "-") from exc
        updates: list[tuple[str, ActionResult]] = []
        for message in messages:
            try:
                update = ActionResult.model_validate_json(message_body_text(message))
            except ValidationError as exc:
                await self._receiver.dead_letter_message(
                    message, reason="invalid ActionResult", error_description=str(exc)[:1000]
                )
                continue
            delivery_id = str(message.lock_token)
            self._locked[delivery_id] = message
            updates.append((delivery_id, update))
        return updates

    async def ack(self, delivery_id: str) -> None:
        message = self._locked.pop(delivery_id, None)
        if message is None:
            return
        try:
            await self._receiver.complete_message(message)
        except ServiceBusError as exc:
            # The lock expired: Service Bus delivers the update again, and the gateway's write is idempotent.
            log.warning("update %s not completed: %s", delivery_id, exc)

    async def close(self) -> None:
        await self._receiver.close()
        await _close_client(self._client, self._credential)


#: How many dead-lettered messages one receive takes while looking for the one to replay.
DLQ_BATCH = 50


def dead_message(message: Any) -> DeadMessage:
    """A received (or peeked) dead-lettered ServiceBusReceivedMessage as the port's DeadMessage; the id
    is the sequence number, which Service Bus keeps unique per queue."""
    properties = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in (message.application_properties or {}).items()
    }
    return DeadMessage(
        id=str(message.sequence_number),
        message_id=str(message.message_id or ""),
        body=message_body_text(message),
        reason=str(message.dead_letter_reason or ""),
        description=str(message.dead_letter_error_description or ""),
        delivery_count=int(message.delivery_count or 0),
        dead_lettered_at=message.enqueued_time_utc,
        properties=properties,
    )


def replay_message(dead: DeadMessage) -> ServiceBusMessage:
    """The copy sent back to the queue: a new message id (the original may still be inside the
    duplicate-detection window) that names the dead-lettered one."""
    properties = application_properties_of(dead.properties)
    return ServiceBusMessage(
        dead.body,
        message_id=f"{dead.message_id}~dlq{dead.id}",
        content_type=CONTENT_TYPE,
        application_properties=properties,
    )


class ServiceBusDeadLetters:
    """BusDeadLetters adapter: the dead-letter subqueue of one queue (peek, replay by sequence number,
    purge). Replay receives in batches until it holds the message; the others go back at once
    (abandon: a dead-letter subqueue has no delivery limit)."""

    def __init__(self, client: ServiceBusClient, credential: Any, queue: str) -> None:
        from azure.servicebus import ServiceBusSubQueue

        self._client = client
        self._credential = credential
        self._receiver: ServiceBusReceiver = client.get_queue_receiver(
            queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        )
        self._sender: ServiceBusSender = client.get_queue_sender(queue)

    async def peek(self, max_count: int = 100) -> list[DeadMessage]:
        try:
            return [dead_message(m) for m in await self._receiver.peek_messages(max_message_count=max_count)]
        except ServiceBusError as exc:
            raise map_error(exc, "-") from exc

    async def replay(self, dead_id: str) -> bool:
        try:
            while batch := await self._receiver.receive_messages(
                max_message_count=DLQ_BATCH, max_wait_time=5
            ):
                found = None
                for message in batch:
                    if found is None and str(message.sequence_number) == dead_id:
                        found = message
                    else:
                        await self._receiver.abandon_message(message)
                if found is not None:
                    await send_one(self._sender, replay_message(dead_message(found)))
                    await self._receiver.complete_message(found)
                    return True
        except ServiceBusError as exc:
            raise map_error(exc, dead_id) from exc
        return False

    async def purge(self) -> int:
        removed = 0
        try:
            while batch := await self._receiver.receive_messages(
                max_message_count=DLQ_BATCH, max_wait_time=5
            ):
                for message in batch:
                    await self._receiver.complete_message(message)
                    removed += 1
        except ServiceBusError as exc:
            raise map_error(exc, "-") from exc
        return removed

    async def close(self) -> None:
        await self._receiver.close()
        await self._sender.close()
        await _close_client(self._client, self._credential)
