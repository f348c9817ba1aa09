"""Every piece of application state, behind one typed AppKey each."""

from __future__ import annotations

import asyncio

from aiohttp import web

from action_bus.outbox import Outbox
from action_bus.ports import ActionUpdateSource
from observability.online import OnlineMetrics
from streaming_gateway.agents.catalog import AgentCatalog
from streaming_gateway.agents.registry_store import AgentConfigStore
from streaming_gateway.auth.authenticator import Authenticator
from streaming_gateway.chat.engine import ChatEngine
from streaming_gateway.llm.port import ChatModel
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from streaming_gateway.state.client_streams import StreamRegistry
from streaming_gateway.state.limits import RateLimiter
from streaming_gateway.state.log_compaction import LogCompactor
from streaming_gateway.state.redis_replies import Redis
from streaming_gateway.state.retention import StatelessRetention
from streaming_gateway.state.ws_tickets import WsTickets

settings_key = web.AppKey("settings", Settings)
metrics_key = web.AppKey("metrics", GatewayMetrics)
redis_key: web.AppKey[Redis] = web.AppKey("redis")
configs_key = web.AppKey("agent_configs", AgentConfigStore)
#: The agents each caller may use, as OpenAI model ids.
catalog_key = web.AppKey("agent_catalog", AgentCatalog)
authenticator_key = web.AppKey("authenticator", Authenticator)
ws_tickets_key = web.AppKey("ws_tickets", WsTickets)
llm_key = web.AppKey("llm", ChatModel)
engine_key = web.AppKey("engine", ChatEngine)
online_key = web.AppKey("online_metrics", OnlineMetrics)
outbox_key = web.AppKey("outbox", Outbox)
update_source_key = web.AppKey("update_source", ActionUpdateSource)
rate_limiter_key = web.AppKey("rate_limiter", RateLimiter)
streams_key = web.AppKey("streams", StreamRegistry)
log_compactor_key = web.AppKey("log_compactor", LogCompactor)
retention_key = web.AppKey("stateless_retention", StatelessRetention)
#: Set when the action bus tasks (outbox relay, update consumer) must stop.
bus_stop_key = web.AppKey("bus_stop", asyncio.Event)
