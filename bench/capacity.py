"""Redis capacity from measured figures: `python -m bench.capacity [bench-results.json]`.

Reads a bench results file (default: the newest under bench/results/ with a `redis_memory`
section, written by `BENCH_ONLY=trips,memory make bench`) and prints, per gateway measured in that
run (this checkout's, and BENCH_BASELINE's when given):

1. what one turn costs Redis: bytes while it streams and kept afterwards, the keys' TTLs, Redis CPU
   per turn, and commands and round trips per turn (from the `trips` section when present);
2. per Azure Redis size: how many answers may stream at once, and how many new stateful
   conversations or stateless calls per second the memory carries in steady state, and the turns
   per second a primary's CPU carries.

Steady state: a conversation started at rate r holds `conv_kept` bytes for its TTL and `log_kept`
for the log's TTL, so memory = r x (conv_kept x conversation TTL + log_kept x log TTL); a stateless
call holds its kept bytes for the stateless TTL. A streaming answer holds the bytes "at end" (its
full token log) until it is compacted. Usable memory is the listed size less RESERVE (Azure advises
keeping about a tenth for maxmemory-reserved, and fragmentation takes more). A primary's CPU is
counted at CPU_TARGET busy, from the Redis CPU this machine measured per turn (Azure's cores differ:
treat it as an order of magnitude).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.stats import table

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1024**3
#: Of the listed memory, what is kept free: the deployment's memory alert fires above 65 % used
#: (docs/deploy.md), which leaves room for fragmentation, replication buffers and a burst.
RESERVE = 0.35
#: The share of one primary's single thread the model lets the gateway's traffic use.
CPU_TARGET = 0.5
#: Listed memory per cache or per shard, GB, as the SKU names give it (Azure Managed Redis, the sizes
#: infra/ deploys first; Azure Cache for Redis Premium per shard, being retired). Check Azure's
#: pricing page for the region before buying; edit here to recompute.
SKUS: dict[str, float] = {
    "Managed Balanced B1 (dev)": 1,
    "Managed Balanced B20 (prod)": 24,
    "Managed Balanced B50": 60,
    "Managed Balanced B100": 120,
    "Managed Memory Optimized M250": 240,
    "Premium P1 (per shard)": 6,
    "Premium P2 (per shard)": 13,
    "Premium P3 (per shard)": 26,
    "Premium P4 (per shard)": 53,
    "Premium P5 (per shard)": 120,
}


def newest(results: Path = RESULTS) -> Path:
    for path in sorted(results.glob("bench-*.json"), reverse=True):
        if "redis_memory" in json.loads(path.read_text()):
            return path
    raise SystemExit(f"no bench results with a redis_memory section under {results}")


def per_turn(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per gateway: the figures the model uses, from one bench report."""
    trips = report.get("redis_per_turn", {}).get("turns", [])
    commands = sorted(t["client_commands"] for t in trips)
    round_trips = sorted(t["round_trips_est"] for t in trips)
    lua = sorted(t["lua_commands"] for t in trips)
    figures: dict[str, dict[str, Any]] = {}
    for name, result in report["redis_memory"].items():
        stateful, stateless = result["stateful"], result["stateless"]
        ttl = stateful["ttl_s"]
        figures[name] = {
            "streaming_bytes": stateful["end"]["log_bytes"] + stateful["end"]["conversation_bytes"],
            "conv_kept": stateful["kept"]["conversation_bytes"],
            "log_kept": stateful["kept"]["log_bytes"],
            "conv_ttl_s": max(ttl.get(":conv", 0), 0),
            "log_ttl_s": max(ttl.get(":log", 0), 0),
            "stateless_kept": stateless["kept"]["log_bytes"] + stateless["kept"]["conversation_bytes"],
            "stateless_ttl_s": max(stateless["ttl_s"].get(":conv", 0), 0),
            "redis_cpu_ms": max(stateful["redis_cpu_ms"] - stateful["idle_cpu_ms"], 0.01),
            # The trips section measures this checkout's gateway only.
            "commands": commands[len(commands) // 2] if commands and name == "gateway" else None,
            "round_trips": round_trips[len(round_trips) // 2] if round_trips and name == "gateway" else None,
            "lua_commands": lua[len(lua) // 2] if lua and name == "gateway" else None,
        }
    return figures


def capacity(f: dict[str, Any], listed_gb: float) -> dict[str, float]:
    usable = listed_gb * GB * (1 - RESERVE)
    stateful_byte_s = f["conv_kept"] * f["conv_ttl_s"] + f["log_kept"] * f["log_ttl_s"]
    stateless_byte_s = f["stateless_kept"] * f["stateless_ttl_s"]
    # A conversation's log expires before it (24 h against 30 days): it holds its share of the time.
    log_share = min(1.0, f["log_ttl_s"] / f["conv_ttl_s"]) if f["conv_ttl_s"] else 1.0
    return {
        "streaming": usable / f["streaming_bytes"],
        "kept": usable / (f["conv_kept"] + f["log_kept"] * log_share),
        "stateful_per_s": usable / stateful_byte_s if stateful_byte_s else float("inf"),
        "stateless_per_s": usable / stateless_byte_s if stateless_byte_s else float("inf"),
    }


def _n(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f} M"
    if value >= 1e4:
        return f"{value / 1e3:.0f} k"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(figures: dict[str, dict[str, Any]]) -> str:
    turn_rows = [
        [
            name,
            f["streaming_bytes"],
            f["conv_kept"],
            f["log_kept"],
            f"{f['conv_ttl_s'] / 86400:.0f} d / {f['log_ttl_s'] / 3600:.0f} h",
            f["stateless_kept"],
            f"{f['stateless_ttl_s'] / 3600:.1f} h",
            f"{f['redis_cpu_ms']:.2f}",
            _n(CPU_TARGET * 1000 / f["redis_cpu_ms"]),
            "-" if f["commands"] is None else f"{f['commands']} / {f['round_trips']} / {f['lua_commands']}",
        ]
        for name, f in figures.items()
    ]
    out = [
        "Per turn (50-token answer)\n"
        + table(
            [
                "gateway",
                "bytes streaming",
                "conv kept",
                "log kept",
                "TTL conv / log",
                "stateless kept",
                "stateless TTL",
                "Redis CPU ms",
                f"turns/s per primary at {CPU_TARGET:.0%}",
                "commands / trips / in Lua",
            ],
            turn_rows,
        )
    ]
    names = list(figures)
    rows = []
    for sku, listed in SKUS.items():
        row: list[Any] = [sku, f"{listed:g}"]
        for key in ("streaming", "kept", "stateful_per_s", "stateless_per_s"):
            row += [_n(capacity(figures[name], listed)[key]) for name in names]
        rows.append(row)
    header = ["size", "GB"]
    for what in ("answers streaming", "conversations kept", "new conversations/s", "stateless calls/s"):
        header += [f"{what} ({name.split()[0]})" for name in names]
    out.append(f"Per Azure Redis size ({RESERVE:.0%} of memory kept free)\n" + table(header, rows))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("results", nargs="?", type=Path, help="a bench results JSON (default: the newest)")
    args = parser.parse_args(argv)
    path = args.results or newest()
    report = json.loads(path.read_text())
    print(f"from {path.name} ({report.get('started', '?')})\n")
    print(render(per_turn(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
