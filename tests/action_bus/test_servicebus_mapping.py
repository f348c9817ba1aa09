"""The Service Bus adapters' message mapping and error mapping. No Service Bus endpoint can run
here, so the sender is ServiceBusSenderTestDouble: it only records messages or raises SDK errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    OperationTimeoutError,
    ServiceBusAuthorizationError,
    ServiceBusConnectionError,
    ServiceBusServerBusyError,
)

from action_bus.factory import create_action_bus, create_update_source, updates_queue, uses_servicebus
from action_bus.local import RedisStreamsActionBus, RedisUpdateSource
from action_bus.ports import BusUnavailable
from action_bus.servicebus import (
    MessageRejected,
    ServiceBusActionBus,
    send_one,
    to_servicebus_message,
    update_to_servicebus_message,
)
from agent_contracts import ActionRequest, ActionResult, ActionStatus
from tests.function_app.helpers import make_request


@dataclass
class ServiceBusSenderTestDouble:
    """Stands in for azure.servicebus.aio.ServiceBusSender: records sends, or raises `error`."""

    error: Exception | None = None
    sent: list[ServiceBusMessage] = field(default_factory=list)

    async def send_messages(self, message: ServiceBusMessage) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(message)


def test_request_maps_to_message_with_dedup_id_and_trace() -> None:
    """message_id is the idempotency key, body is the request JSON, trace context and content type travel along."""
    request = make_request()
    message = to_servicebus_message(request)
    assert message.message_id == request.idempotency_key
    assert message.content_type == "application/json"
    assert message.subject == "create_ticket" and message.correlation_id == "conv-1"
    assert message.application_properties is not None
    assert message.application_properties["traceparent"] == request.trace_context["traceparent"]
    assert ActionRequest.model_validate_json(str(message)) == request


def test_replay_gets_a_new_message_id() -> None:
    """A replayed request is not swallowed by duplicate detection: its message id differs."""
    request = make_request()
    assert (
        to_servicebus_message(request.model_copy(update={"replay_count": 2})).message_id
        != request.idempotency_key
    )


def test_update_maps_to_message_per_status_change() -> None:
    """Each status change has its own message id; the body is the ActionResult JSON."""
    result = ActionResult.queued_for(make_request())
    running = result.model_copy(update={"status": ActionStatus.running, "attempts": 1})
    first, second = update_to_servicebus_message(result), update_to_servicebus_message(running)
    assert first.message_id != second.message_id
    assert json.loads(str(second))["status"] == "running"
    assert second.application_properties is not None
    assert second.application_properties["action_id"] == result.id


async def test_send_records_message() -> None:
    """A successful send hands exactly one mapped message to the SDK sender."""
    sender = ServiceBusSenderTestDouble()
    await send_one(sender, to_servicebus_message(make_request()))  # type: ignore[arg-type]
    assert [m.message_id for m in sender.sent] == ["conv-1:call_1"]


@pytest.mark.parametrize(
    "error",
    [
        ServiceBusConnectionError(message="no route"),
        OperationTimeoutError(message="timed out"),
        ServiceBusServerBusyError(message="busy"),
        ServiceBusAuthorizationError(message="unauthorized"),
    ],
)
async def test_transport_errors_become_bus_unavailable(error: Exception) -> None:
    """Connection, timeout, busy and auth errors map to BusUnavailable: the outbox keeps the request and retries."""
    with pytest.raises(BusUnavailable):
        await send_one(ServiceBusSenderTestDouble(error), to_servicebus_message(make_request()))  # type: ignore[arg-type]


async def test_too_large_message_is_rejected_for_good() -> None:
    """MessageSizeExceeded is not retryable: MessageRejected, which is not a BusUnavailable."""
    with pytest.raises(MessageRejected) as info:
        await send_one(
            ServiceBusSenderTestDouble(MessageSizeExceededError(message="too big")),  # type: ignore[arg-type]
            to_servicebus_message(make_request()),
        )
    assert not isinstance(info.value, BusUnavailable)


@dataclass
class BusSettings:
    servicebus_connection_string: str | None = None
    servicebus_fully_qualified_namespace: str | None = None
    servicebus_actions_queue: str = "actions"
    servicebus_updates_queue: str = ""


async def test_factory_picks_redis_without_servicebus(aredis: Any) -> None:
    """No Service Bus settings: the Redis Streams adapters; the updates queue defaults to action-updates."""
    settings = BusSettings()
    assert not uses_servicebus(settings) and updates_queue(settings) == "action-updates"
    assert isinstance(create_action_bus(aredis, settings), RedisStreamsActionBus)
    assert isinstance(create_update_source(aredis, settings), RedisUpdateSource)


async def test_factory_picks_servicebus_with_connection_string(aredis: Any) -> None:
    """A connection string selects the Service Bus adapter (no connection is opened until a send)."""
    settings = BusSettings(
        servicebus_connection_string=(
            "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"
        )
    )
    bus = create_action_bus(aredis, settings)
    assert isinstance(bus, ServiceBusActionBus)
    await bus.close()


async def test_factory_uses_entra_id_for_a_bare_namespace(aredis: Any) -> None:
    """A namespace without a connection string selects Service Bus with DefaultAzureCredential, closed on close()."""
    from azure.identity.aio import DefaultAzureCredential

    settings = BusSettings(servicebus_fully_qualified_namespace="example.servicebus.windows.net")
    bus = create_action_bus(aredis, settings)
    assert isinstance(bus, ServiceBusActionBus)
    assert isinstance(bus._credential, DefaultAzureCredential)
    await bus.close()
