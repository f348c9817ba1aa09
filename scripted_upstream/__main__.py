"""Run the scripted upstream: python -m scripted_upstream [--port 8090] [--script FILE]."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from scripted_upstream.script import Script
from scripted_upstream.server import create_upstream_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--script", help="JSON script file (default: the shipped default_script.json)")
    parser.add_argument("--token-delay-ms", type=float, help="override the script's default delay per token")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s upstream %(levelname)s %(message)s")
    script = Script.load(args.script)
    if args.token_delay_ms is not None:
        script = script.model_copy(update={"default_token_delay_ms": args.token_delay_ms})
    web.run_app(create_upstream_app(script), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
