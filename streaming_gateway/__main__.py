"""Run the gateway: python -m streaming_gateway (also the container's entrypoint)."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvloop
from aiohttp import web

from agent_contracts.settings import SettingsError
from agent_registry import InvalidConfig, read_document
from observability import ObservabilityError, setup_observability
from streaming_gateway.app import create_app
from streaming_gateway.settings import Settings
from streaming_gateway.shutdown import FLUSH_TIMEOUT_S

log = logging.getLogger("streaming_gateway")


def main() -> int:
    try:
        settings = Settings.from_env()
        read_document(settings.agent_config_path)  # the seed config: fail at start, with the file named
        # JSON logs with trace/conversation/config version, secrets redacted; traces to Azure Monitor
        # and/or OTLP when configured, nowhere otherwise.
        telemetry = setup_observability("streaming_gateway", settings)
    except (SettingsError, InvalidConfig, ObservabilityError) as exc:
        print(f"streaming_gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    if settings.uses_scripted_upstream:
        log.info(
            "no OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT set: using the scripted upstream at %s",
            settings.openai_base_url or "(OPENAI_BASE_URL not set)",
        )
    # handler_cancellation: a client that disconnects cancels its handler at once, which stops
    # following and lets the answer's watchdog stop the model. On SIGTERM, shutdown.on_shutdown
    # drains within the grace period; the timeout below only bounds what is left after it.
    # uvloop: the transports' writes and the loop's own work in C, less CPU per relayed token
    # (bench/README.md); GATEWAY_UVLOOP=false runs on asyncio's loop.
    loop = uvloop.new_event_loop() if settings.uvloop else asyncio.new_event_loop()
    log.info("event loop: %s", type(loop).__module__.split(".")[0])
    web.run_app(
        create_app(settings),
        loop=loop,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        shutdown_timeout=FLUSH_TIMEOUT_S + 5,
    )
    log.info("stopped")
    telemetry.shutdown()  # flush the spans still batched
    return 0


if __name__ == "__main__":
    sys.exit(main())
