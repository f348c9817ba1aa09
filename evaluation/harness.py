"""Where the evaluated gateway runs: in this process (the real create_app on a free port, a real
Redis, the scripted upstream or any OpenAI-compatible endpoint), or a running gateway's URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from agent_contracts.redis_connection import connect_from_env
from agent_registry import AgentRegistry
from local_stack import processes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A gateway to send turns to, and the Redis its agent registry lives in."""

    base_url: str
    token: str
    redis_url: str
    model: str
    #: The OpenAI-compatible endpoint the gateway's model answers on, when known (in-process):
    #: judged checks use it unless told otherwise.
    llm_base_url: str | None = None
    llm_api_key: str | None = None


@asynccontextmanager
async def _site(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _private_redis() -> AsyncIterator[str]:
    """A redis-server of our own on a free port: evaluation never touches another Redis's data."""
    with tempfile.TemporaryDirectory(prefix="eval-redis-") as data:
        service = processes.redis_server(data_dir=Path(data), log_path=Path(data) / "redis.log")
        await asyncio.to_thread(service.start)
        try:
            yield f"redis://127.0.0.1:{service.port}/0"
        finally:
            await asyncio.to_thread(service.stop)


@asynccontextmanager
async def in_process_gateway(
    documents: list[dict[str, Any]],
    *,
    redis_url: str | None = None,
    model_base_url: str | None = None,
    script: str | None = None,
) -> AsyncIterator[Target]:
    """The real gateway app in this process, with each config document published to its registry.

    The first document is also the gateway's seed config (AGENT_CONFIG_PATH). The model is the
    scripted upstream unless model_base_url names another OpenAI-compatible endpoint (its key is
    OPENAI_API_KEY from the environment).
    """
    from scripted_upstream import Script, create_upstream_app
    from streaming_gateway.app import create_app
    from streaming_gateway.settings import Settings
    from streaming_gateway.token import make_token

    async with AsyncExitStack() as stack:
        if redis_url is None:
            redis_url = await stack.enter_async_context(_private_redis())
        if model_base_url is None:
            upstream = await stack.enter_async_context(_site(create_upstream_app(Script.load(script))))
            model_base_url, api_key, model = f"{upstream}/v1", "scripted-local", "scripted upstream"
        else:
            api_key, model = os.environ.get("OPENAI_API_KEY", ""), model_base_url
            if not api_key:
                raise ValueError("OPENAI_API_KEY must be set to use --model-base-url")
        client = await connect_from_env(redis_url, decode_responses=True)
        stack.push_async_callback(client.aclose)
        registry = AgentRegistry(client)
        for document in documents:
            await registry.publish(document, "evaluation")
        seed_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="eval-config-"))
        seed = Path(seed_dir) / "config.json"
        seed.write_text(json.dumps(documents[0]))
        secret = secrets.token_urlsafe(48)
        settings = Settings.from_env(
            {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": "0",
                "REDIS_URL": redis_url,
                "OPENAI_BASE_URL": model_base_url,
                "OPENAI_API_KEY": api_key,
                "AUTH_JWT_SECRET": secret,
                "AGENT_CONFIG_PATH": str(seed),
                "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
                "GATEWAY_SHUTDOWN_GRACE_SECONDS": "0",
            }
        )
        base_url = await stack.enter_async_context(_site(create_app(settings)))
        log.info("evaluating against an in-process gateway at %s (model: %s)", base_url, model)
        # The operator role: evaluation pins versions that are not (yet) the active one.
        token = make_token(secret, "evaluation", 3600, roles=[settings.auth_operator_role])
        yield Target(base_url, token, redis_url, model, model_base_url, api_key)


@asynccontextmanager
async def remote_gateway(base_url: str, token: str, redis_url: str) -> AsyncIterator[Target]:
    yield Target(base_url.rstrip("/"), token, redis_url, "as configured on the gateway")
