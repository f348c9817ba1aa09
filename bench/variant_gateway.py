"""The real gateway with optional speed-ups hidden, for A/B runs in one process tree each.

`python bench/variant_gateway.py serve` runs `streaming_gateway.__main__` after making each module
named in BENCH_WITHOUT (`+`-separated, e.g. `hiredis+orjson`) fail to import, so the libraries that pick
them up when present (redis-py takes `hiredis` as its parser) run without them, as they would where
the package is not installed. It imports only the gateway, so a baseline tree's gateway (`python -P`,
PYTHONPATH=<tree>) runs the same way: a baseline whose requirements do not pin a speed-up gets it
hidden (`bench.run.target_runs`), so it runs as it would be deployed. GATEWAY_UVLOOP=false is the
gateway's own switch for its event loop.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    # Run by path: this folder is first on sys.path, and its modules (profile, stats) would shadow
    # the standard library's for the gateway.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    for name in filter(None, os.environ.get("BENCH_WITHOUT", "").replace(",", "+").split("+")):
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` now raises ImportError
    from streaming_gateway.__main__ import main as gateway

    return gateway()


if __name__ == "__main__":
    sys.exit(main())
