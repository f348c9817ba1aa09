"""Azure Service Bus adapters of the action bus ports (`azure-servicebus`, async).

Kept thin on purpose: no endpoint runs here, so everything testable lives in the pure mapping
functions (request -> ServiceBusMessage, SDK error -> BusUnavailable) and the adapters only send,
receive and settle. The client is built in the factory and owned by the caller.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError
from pydantic import ValidationError

from action_bus.local import request_properties, update_message_id
from action_bus.ports import ActionBusError, BusUnavailable
from agent_contracts import ActionRequest, ActionResult

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"


class MessageRejected(ActionBusError):
    """The bus refused this message for good (too large); retrying cannot help."""

    def __init__(self, message_id: str, detail: str) -> None:
        super().__init__(f"message {message_id} rejected: {detail}")
        self.message_id = message_id


def to_servicebus_message(request: ActionRequest) -> ServiceBusMessage:
    """The message the gateway sends: message_id drives Service Bus duplicate detection."""
    properties: dict[str | bytes, Any] = dict(request_properties(request))
    properties.pop("content_type", None)
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
    application_properties: dict[str | bytes, Any] = dict(properties)
    application_properties.pop("content_type", None)
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
