"""Run the gateway: python -m streaming_gateway (also the container's entrypoint)."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from agent_contracts.settings import SettingsError
from streaming_gateway.app import create_app
from streaming_gateway.settings import Settings

log = logging.getLogger("streaming_gateway")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"streaming_gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    if settings.uses_scripted_upstream:
        log.info("no OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT set: using the scripted upstream at %s",
                 settings.openai_base_url or "(OPENAI_BASE_URL not set)")
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
