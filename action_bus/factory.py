"""Choose the action bus adapters from settings: Service Bus when configured, else Redis Streams.

`settings` is a `BusSettings`: the gateway's and the function app's settings both are one.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from action_bus.local import (
    RedisMessageScheduler,
    RedisStreamsActionBus,
    RedisUpdateSink,
    RedisUpdateSource,
    StreamDeadLetters,
)
from action_bus.ports import (
    ActionBus,
    ActionUpdateSink,
    ActionUpdateSource,
    BusDeadLetters,
    MessageScheduler,
)
from agent_contracts.redis_connection import AnyRedis

log = logging.getLogger(__name__)

DEFAULT_UPDATES_QUEUE = "action-updates"


class BusSettings(Protocol):
    """What the factory reads of a deployable's settings."""

    @property
    def servicebus_connection_string(self) -> str | None: ...
    @property
    def servicebus_fully_qualified_namespace(self) -> str | None: ...
    @property
    def servicebus_actions_queue(self) -> str: ...
    @property
    def servicebus_updates_queue(self) -> str: ...


def updates_queue(settings: BusSettings) -> str:
    return settings.servicebus_updates_queue or DEFAULT_UPDATES_QUEUE


def uses_servicebus(settings: BusSettings) -> bool:
    return bool(settings.servicebus_connection_string or settings.servicebus_fully_qualified_namespace)


def servicebus_client(settings: BusSettings) -> tuple[Any, Any]:
    """A ServiceBusClient from a connection string, or Entra ID (managed identity) for a namespace;
    with the credential the caller closes (None for a connection string)."""
    from azure.servicebus.aio import ServiceBusClient

    if settings.servicebus_connection_string:
        return ServiceBusClient.from_connection_string(settings.servicebus_connection_string), None
    from azure.identity.aio import DefaultAzureCredential

    namespace = settings.servicebus_fully_qualified_namespace
    assert namespace, "called only when uses_servicebus(settings)"
    credential = DefaultAzureCredential()
    return ServiceBusClient(namespace, credential), credential


def create_action_bus(redis: AnyRedis, settings: BusSettings) -> ActionBus:
    if uses_servicebus(settings):
        from action_bus.servicebus import ServiceBusActionBus

        log.info("action bus: Service Bus queue %s", settings.servicebus_actions_queue)
        return ServiceBusActionBus(*servicebus_client(settings), settings.servicebus_actions_queue)
    log.info("action bus: Redis stream %s (no Service Bus configured)", settings.servicebus_actions_queue)
    return RedisStreamsActionBus(redis, settings.servicebus_actions_queue)


def create_update_sink(redis: AnyRedis, settings: BusSettings) -> ActionUpdateSink:
    if uses_servicebus(settings):
        from action_bus.servicebus import ServiceBusUpdateSink

        return ServiceBusUpdateSink(*servicebus_client(settings), updates_queue(settings))
    return RedisUpdateSink(redis, updates_queue(settings))


def create_message_scheduler(redis: AnyRedis, settings: BusSettings) -> MessageScheduler:
    """Scheduled re-sends onto the actions queue (the function app's start back-off)."""
    if uses_servicebus(settings):
        from action_bus.servicebus import ServiceBusMessageScheduler

        return ServiceBusMessageScheduler(*servicebus_client(settings), settings.servicebus_actions_queue)
    return RedisMessageScheduler(redis, settings.servicebus_actions_queue)


def create_bus_dead_letters(redis: AnyRedis, settings: BusSettings) -> BusDeadLetters:
    """The actions queue's dead-letter subqueue (the dead-letter command)."""
    if uses_servicebus(settings):
        from action_bus.servicebus import ServiceBusDeadLetters

        return ServiceBusDeadLetters(*servicebus_client(settings), settings.servicebus_actions_queue)
    return StreamDeadLetters(redis, settings.servicebus_actions_queue)


def create_update_source(redis: AnyRedis, settings: BusSettings) -> ActionUpdateSource:
    if uses_servicebus(settings):
        from action_bus.servicebus import ServiceBusUpdateSource

        return ServiceBusUpdateSource(*servicebus_client(settings), updates_queue(settings))
    return RedisUpdateSource(redis, updates_queue(settings))
