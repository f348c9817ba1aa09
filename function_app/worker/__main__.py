"""`python -m function_app.worker`: the local action worker (Redis Streams broker, same orchestrator
and activities as the Functions app). Settings from the environment as the function app reads them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from agent_contracts.redis_connection import open_redis
from agent_contracts.settings import SettingsError
from function_app.runtime import build_runtime, use_runtime
from function_app.settings import Settings
from function_app.worker.service import Worker
from observability import ObservabilityError, setup_observability

log = logging.getLogger("function_app.worker")


async def serve(settings: Settings) -> None:
    redis = await open_redis(settings.redis_url, settings.redis_mode)
    runtime = await build_runtime(settings, redis=redis)
    use_runtime(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(redis, runtime)
    log.info(
        "worker %s: consuming %s from %s",
        worker.queue.consumer,
        settings.servicebus_actions_queue,
        settings.redis_url,
    )
    try:
        await worker.run(stop)
    finally:
        use_runtime(None)
        await runtime.aclose()
        await redis.aclose()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
        # Traces (Azure Monitor or OTLP when configured) and structured logs, as the gateway has them.
        telemetry = setup_observability("function_app.worker", settings)
    except (SettingsError, ObservabilityError) as exc:
        log.error("%s", exc)
        return 2
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        if settings.uses_servicebus:
            log.error("Service Bus is configured: actions are consumed by the Functions app, not this worker")
            return 2
        asyncio.run(serve(settings))
        return 0
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(main())
