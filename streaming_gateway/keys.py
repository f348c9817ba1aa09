"""Every piece of application state, behind one typed AppKey each."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from streaming_gateway.settings import Settings

settings_key = web.AppKey("settings", Settings)
redis_key = web.AppKey("redis", aioredis.Redis)
