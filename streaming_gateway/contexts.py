"""Cleanup contexts: one async generator per long-lived client, in dependency order.

redis_ctx -> config_ctx -> auth_ctx -> llm_ctx -> online_ctx -> bus_ctx -> core_ctx ->
action_tasks_ctx -> canary_ctx. Each object gets what it needs in its constructor, so a context
only builds what the earlier ones made; the background tasks start last, once the engine they
feed exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from redis.asyncio.cluster import RedisCluster

from action_bus.factory import create_action_bus, create_update_source
from action_bus.outbox import Outbox
from agent_contracts.redis_connection import open_redis
from agent_registry import AgentRegistry
from agent_registry.canary import analysis_loop
from observability.online import OnlineMetrics
from observability.online_batches import OnlineBatches
from streaming_gateway.agents.catalog import AgentCatalog
from streaming_gateway.agents.registry_store import RegistryAgentConfigs
from streaming_gateway.auth.authenticator import Authenticator, JwksCache
from streaming_gateway.chat.action_updates import consume_updates
from streaming_gateway.chat.engine import ChatEngine
from streaming_gateway.chat.pending_steps import PendingSteps
from streaming_gateway.chat.running_answers import RunningAnswers
from streaming_gateway.keys import (
    authenticator_key,
    bus_stop_key,
    catalog_key,
    configs_key,
    engine_key,
    llm_key,
    log_compactor_key,
    metrics_key,
    online_key,
    outbox_key,
    rate_limiter_key,
    redis_key,
    retention_key,
    settings_key,
    streams_key,
    update_source_key,
    ws_tickets_key,
)
from streaming_gateway.llm.openai_adapter import create_chat_model
from streaming_gateway.state.client_streams import StreamRegistry
from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.limits import RateLimiter, StreamSlots, UserGate
from streaming_gateway.state.log_compaction import LogCompactor
from streaming_gateway.state.retention import StatelessRetention
from streaming_gateway.state.stream_log import StreamLog
from streaming_gateway.state.turn_setup import TurnSetup
from streaming_gateway.state.ws_tickets import WsTickets

log = logging.getLogger(__name__)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    # The gateway starts (and /healthz answers) while Redis is down, and /readyz reports it until
    # Redis answers; in REDIS_MODE=auto the client's kind is settled then (open_redis).
    # An open client stream holds no connection: the pod's log hub reads for all of them (one
    # connection per reader of up to 250 conversations). The pool serves the commands in flight,
    # those readers and the stream log's held script connections (up to 16, at most an eighth of
    # the pool: state/script_calls.py); it waits (bounded) rather than failing when full. On a
    # cluster the limit is per node.
    settings = app[settings_key]
    client = await open_redis(
        settings.redis_url,
        settings.redis_mode,
        pool_timeout=5,
        max_connections=settings.redis_max_connections,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )
    app[redis_key] = client
    yield
    await client.aclose()


async def config_ctx(app: web.Application) -> AsyncIterator[None]:
    # The versioned registry in Redis; AGENT_CONFIG_PATH seeds an agent with no active version.
    registry = AgentRegistry(app[redis_key])
    configs = RegistryAgentConfigs(registry, app[settings_key].agent_config_path, app[metrics_key])
    app[configs_key] = configs
    app[catalog_key] = AgentCatalog(registry, configs, operator_role=app[settings_key].auth_operator_role)
    yield


async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    session: aiohttp.ClientSession | None = None
    jwks = None
    if settings.auth_jwks_url:
        session = aiohttp.ClientSession()
        jwks = JwksCache(
            settings.auth_jwks_url,
            session,
            ttl_s=settings.auth_jwks_cache_s,
            min_refresh_s=settings.auth_jwks_min_refresh_s,
        )
    app[authenticator_key] = Authenticator(settings, jwks)
    app[ws_tickets_key] = WsTickets(app[redis_key], ttl_s=settings.ws_ticket_ttl_s)
    yield
    if session is not None:
        await session.close()


async def llm_ctx(app: web.Application) -> AsyncIterator[None]:
    model = create_chat_model(app[settings_key])
    app[llm_key] = model
    yield
    await model.close()


async def online_ctx(app: web.Application) -> AsyncIterator[None]:
    """Per-version online aggregates on the gateway's Redis, recorded by the engine and the feedback
    view; answered streams are added up on the pod and written once a second (and at shutdown,
    after the answers are drained: this context closes after core_ctx)."""
    online = OnlineMetrics(app[redis_key])
    batches = online.batches = OnlineBatches(online)
    batches.start()
    app[online_key] = online
    yield
    await batches.close()


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """The action bus clients: the outbox (accepted actions, durable in Redis) in front of the bus,
    and the source of action status updates."""
    settings, redis = app[settings_key], app[redis_key]
    bus = create_action_bus(redis, settings)
    source = create_update_source(redis, settings)
    app[outbox_key] = Outbox(redis, bus)
    app[update_source_key] = source
    yield
    await source.close()
    await bus.close()


async def core_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, redis, metrics = app[settings_key], app[redis_key], app[metrics_key]
    stream_log = StreamLog(
        redis,
        maxlen=settings.event_log_maxlen,
        ttl_s=settings.event_log_ttl_s,
        by_slot=settings.redis_mode == "proxy",  # one hash slot per command behind a cluster proxy
    )
    compactor = LogCompactor(redis, delay_s=settings.log_compact_delay_s, enabled=settings.log_compaction)
    app[log_compactor_key] = compactor
    retention = StatelessRetention(redis, ttl_s=settings.stateless_ttl_s)
    app[retention_key] = retention

    def answer_ended(conversation_id: str) -> None:
        retention.answer_ended(conversation_id)
        compactor.schedule(conversation_id)

    answers = RunningAnswers(redis, stream_log, orphan_grace_s=settings.orphan_grace_s, on_end=answer_ended)
    store = ConversationStore(
        redis, ttl_s=settings.conversation_ttl_s, max_per_user=settings.max_conversations_per_user
    )
    limiter = RateLimiter(redis, settings.rate_limit_per_minute)
    gate = UserGate(
        redis,
        limiter,
        streams_per_user=settings.max_streams_per_user,
        conversations_per_user=settings.max_conversations_per_user,
    )
    app[engine_key] = ChatEngine(
        settings=settings,
        store=store,
        log_=stream_log,
        pending=PendingSteps(redis, ttl_s=max(settings.turn_timeout_s * 2, 3600)),
        llm=app[llm_key],
        configs=app[configs_key],
        outbox=app[outbox_key],
        answers=answers,
        metrics=metrics,
        online=app[online_key],
        # One endpoint (a server, or a proxy): a turn's two setup scripts share one pipeline.
        setup=TurnSetup(gate, store, pipeline=None if isinstance(redis, RedisCluster) else redis),
    )
    app[rate_limiter_key] = limiter
    app[streams_key] = StreamRegistry(
        StreamSlots(redis, settings.max_streams_per_user), metrics, stream_log.leases
    )
    yield
    await answers.drain(0)  # normally empty already: shutdown drained it within the grace period
    await compactor.close()  # timers not yet due: those logs stay whole
    await retention.close()
    await stream_log.close()  # the pod's log reader


async def action_tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background tasks of the action bus: the outbox's relay and the update consumer."""
    stop = asyncio.Event()
    app[bus_stop_key] = stop
    tasks = [
        asyncio.create_task(app[outbox_key].run_relay(stop), name="outbox-relay"),
        asyncio.create_task(
            consume_updates(app[update_source_key], app[engine_key], stop), name="action-updates"
        ),
    ]
    yield
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def canary_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background canary analysis (GATEWAY_CANARY_ANALYSIS_SECONDS > 0): aborts a worse candidate."""
    interval = app[settings_key].canary_analysis_interval_s
    if interval <= 0:
        yield
        return
    stop = asyncio.Event()
    registry, agent = AgentRegistry(app[redis_key]), app[configs_key].agent
    task = asyncio.create_task(
        analysis_loop(registry, app[online_key], agent, interval, stop), name="canary-analysis"
    )
    log.info("canary analysis of agent %s every %gs", agent, interval)
    yield
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
