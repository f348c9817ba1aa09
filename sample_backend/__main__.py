"""`python -m sample_backend [--port N]`: the tickets service.

SAMPLE_BACKEND_FAULTS holds fault rules (JSON).
"""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from sample_backend.app import create_backend_app
from sample_backend.faults import FaultInjector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("SAMPLE_BACKEND_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAMPLE_BACKEND_PORT", "8095")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sample_backend %(levelname)s %(message)s")
    faults = FaultInjector.from_json(os.environ.get("SAMPLE_BACKEND_FAULTS"))
    web.run_app(create_backend_app(faults), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
