"""The long-lived clients activities use (Cosmos DB, HTTP, update sink), built once per process on
first use, never at import. The Functions worker keeps one per worker process; the local worker
and the tests build their own and install it with `use_runtime`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from action_bus.factory import create_message_scheduler, create_update_sink
from action_bus.ports import ActionUpdateSink, MessageScheduler
from agent_contracts.redis_connection import AnyRedis, build, open_redis
from agent_contracts.settings import SettingsError
from function_app.deadletters_store import CosmosDeadLetterStore, DeadLetterStore
from function_app.registry import ActionRegistry, default_registry
from function_app.results import CosmosResultStore, ResultStore
from function_app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    registry: ActionRegistry
    results: ResultStore
    dead_letters: DeadLetterStore
    updates: ActionUpdateSink
    http: aiohttp.ClientSession
    #: Scheduled re-sends onto the actions queue (the start back-off in function_app.accept).
    scheduler: MessageScheduler
    _closers: tuple[Any, ...] = ()

    async def aclose(self) -> None:
        for closer in self._closers:
            await closer()


def cosmos_client(settings: Settings) -> CosmosClient:
    if settings.cosmos_key:
        credential: Any = settings.cosmos_key
    else:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return CosmosClient(
        settings.cosmos_endpoint, credential=credential, connection_verify=settings.cosmos_verify_tls
    )


async def pipeline_redis(settings: Settings) -> AnyRedis:
    """The local bus's Redis; with Service Bus configured nothing uses it, so Redis is not asked."""
    if settings.uses_servicebus:
        return build(settings.redis_url, settings.redis_mode == "cluster")
    return await open_redis(settings.redis_url, settings.redis_mode)


async def build_runtime(settings: Settings, *, redis: AnyRedis | None = None) -> Runtime:
    cosmos = cosmos_client(settings)
    if settings.cosmos_create_if_missing:
        database = await cosmos.create_database_if_not_exists(settings.cosmos_database)
        results = await database.create_container_if_not_exists(
            settings.cosmos_container, partition_key=PartitionKey("/conversationId")
        )
        dead = await database.create_container_if_not_exists(
            settings.cosmos_deadletter_container, partition_key=PartitionKey("/partition")
        )
    else:
        database = cosmos.get_database_client(settings.cosmos_database)
        results = database.get_container_client(settings.cosmos_container)
        dead = database.get_container_client(settings.cosmos_deadletter_container)
    own_redis = redis is None
    redis = redis or await pipeline_redis(settings)
    updates = create_update_sink(redis, settings)
    scheduler = create_message_scheduler(redis, settings)
    http = aiohttp.ClientSession()
    closers: list[Any] = [http.close, cosmos.close, updates.close, scheduler.close]
    if own_redis:
        closers.append(redis.aclose)
    return Runtime(
        settings,
        default_registry(settings),
        CosmosResultStore(results),
        CosmosDeadLetterStore(dead),
        updates,
        http,
        scheduler,
        tuple(closers),
    )


#: The marker an alert rule matches (Application Insights: traces | where message has "settings_invalid").
SETTINGS_ALERT = "ALERT settings_invalid"
_reported: set[str] = set()


def _report_settings_error(exc: SettingsError) -> None:
    """Once per process and problem, at CRITICAL: host.json lets the host ship exactly this level of
    the worker's own lines, because the app's exporter cannot start without valid settings."""
    key = f"{exc.name}:{exc.problem}"
    if key in _reported:
        log.debug("settings still invalid: %s", exc)
        return
    _reported.add(key)
    log.critical("%s variable=%s: %s (no action can start until it is fixed)", SETTINGS_ALERT, exc.name, exc)


_current: Runtime | None = None
_lock: asyncio.Lock | None = None


def use_runtime(runtime: Runtime | None) -> None:
    """Install the runtime activities use (the local worker and tests); None clears it."""
    global _current
    _current = runtime


async def current_runtime() -> Runtime:
    """The process's runtime, built from the app settings on first use (in the Functions worker)."""
    global _current, _lock
    if _current is None:
        _lock = _lock or asyncio.Lock()
        async with _lock:
            if _current is None:
                from observability import setup_observability

                try:
                    settings = Settings.from_env()
                except SettingsError as exc:
                    _report_settings_error(exc)
                    raise
                # The Functions worker's first activity or trigger: tracing and JSON logs, once per process.
                setup_observability("function_app", settings)
                _current = await build_runtime(settings)
    return _current
