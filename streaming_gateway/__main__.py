"""Run the gateway: python -m streaming_gateway (also the container's entrypoint)."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from agent_contracts.settings import SettingsError
from streaming_gateway.agent_config import AgentConfigError, FileAgentConfigStore
from streaming_gateway.app import create_app
from streaming_gateway.settings import Settings
from streaming_gateway.shutdown import FLUSH_TIMEOUT_S

log = logging.getLogger("streaming_gateway")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        FileAgentConfigStore.load(settings.agent_config_path)  # fail at start, with the file named
    except (SettingsError, AgentConfigError) as exc:
        print(f"streaming_gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    if settings.uses_scripted_upstream:
        log.info("no OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT set: using the scripted upstream at %s",
                 settings.openai_base_url or "(OPENAI_BASE_URL not set)")
    # handler_cancellation: a client that disconnects cancels its handler at once, which stops
    # following and lets the answer's watchdog stop the model. On SIGTERM, shutdown.on_shutdown
    # drains within the grace period; the timeout below only bounds what is left after it.
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None,
                handler_cancellation=True, shutdown_timeout=FLUSH_TIMEOUT_S + 5)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
