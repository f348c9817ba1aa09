"""`python -m bench.backend --port N --fail-rate 0.1`: the sample tickets backend with a share of its
requests failing transiently (503), drawn at random, for the action pipeline benchmark.

The backend itself is sample_backend's app; only the fault injector differs (the shipped one
fails the next N matching requests, which would bunch every failure at the start).
"""

from __future__ import annotations

import argparse
import logging
import random

from aiohttp import web

from sample_backend import create_backend_app
from sample_backend.faults import FaultInjector, FaultRule


class RandomFaults(FaultInjector):
    """Fails each `POST /tickets` with probability `rate`, before the effect (a clean transient error)."""

    def __init__(self, rate: float, seed: int | None = None) -> None:
        super().__init__()
        self.rate = rate
        self._random = random.Random(seed)

    def take(self, request: web.Request, phase: str) -> FaultRule | None:
        if phase != "before" or request.method != "POST" or request.path != "/tickets":
            return None
        if self._random.random() >= self.rate:
            return None
        self.injected += 1
        return FaultRule(status=503, body="injected transient failure (bench)", retry_after=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    web.run_app(
        create_backend_app(RandomFaults(args.fail_rate, args.seed)),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
