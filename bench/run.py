"""`make bench` (python -m bench.run): every benchmark in one run; prints tables and writes the
figures as JSON under bench/results/.

Sizes: quick by default (a few minutes); BENCH_FULL=1 for the full ones. BENCH_ONLY=overhead,trips,
scale,actions,profile picks sections; BENCH_ONLY=targets runs the hot-path targets (bench/targets.py:
added TTFT, throughput at 16 concurrent against LiteLLM, idle stream cost, 10,000 open streams),
which the default run leaves out (it takes several minutes); BENCH_ONLY=cluster runs the scale run
on one Redis node and on a three-node Redis Cluster side by side (bench/cluster_scale.py). The other
sections use REDIS_URL (any node of a cluster; REDIS_MODE as for the gateway) when it is set, else a
Redis server of their own. BENCH_TOKENS and
BENCH_TOKEN_DELAY_MS shape the scripted answers. LiteLLM's proxy runs beside ours when
BENCH_LITELLM (default .local/bench-litellm/bin/litellm) exists; `make bench` installs it there
from bench/requirements-litellm.txt.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import actions, cluster_scale, overhead, profile, redis_memory, redis_trips, scale, stages
from bench import targets as hot_path
from bench.clients import Target, wave
from bench.stack import (
    LITELLM_MASTER_KEY,
    LITELLM_MODEL,
    BenchSetupError,
    Stack,
    new_stack,
    pipeline_env,
    put_script,
    raise_fd_limit,
    start_backend,
    start_cosmos,
    start_worker,
)

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_LITELLM = ROOT / ".local" / "bench-litellm" / "bin" / "litellm"
#: The gateway's model id is its agent (GET /v1/models); another name is a 404 model_not_found.
GATEWAY_MODEL = "default"

QUICK: dict[str, Any] = {
    "overhead": {1: 10, 64: 3, 512: 1},
    "trips": 3,
    "memory": 5,
    "scale": [0, 250, 500, 1000, 1500, 2000],
    "actions": (40, 16),
    "profile_s": 8,
    "targets": {"ttft_rounds": 40, "windows": 2, "window_s": 5.0, "scale": [0, 1000, 2500, 5000, 10000]},
    "stages": 40,
    "cluster": [0, 500, 1000, 2000],
}
FULL: dict[str, Any] = {
    "overhead": {1: 100, 64: 10, 512: 4},
    "trips": 10,
    "memory": 10,
    "scale": [0, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000],
    "actions": (300, 64),
    "profile_s": 20,
    "targets": {"ttft_rounds": 100, "windows": 4, "window_s": 10.0, "scale": [0, 1000, 2500, 5000, 10000]},
    "stages": 100,
    "cluster": [0, 1000, 2500, 5000, 10000],
}


def versions(litellm: Path | None) -> dict[str, str]:
    found = {name: importlib.metadata.version(name) for name in ("aiohttp", "openai", "redis", "pydantic")}
    found["python"] = platform.python_version()
    found["redis-server"] = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    if litellm is not None:
        probe = subprocess.run(
            [
                str(litellm.with_name("python")),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
        )
        found["litellm"] = probe.stdout.strip() or f"unknown ({probe.stderr.strip()[:100]})"
    return found


def machine() -> dict[str, Any]:
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpus": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1), "kernel": platform.release()}


def script(tokens: int, delay_ms: float) -> list[dict[str, Any]]:
    return [*actions.SCRIPT, {"match": "", "tokens": tokens, "token_delay_ms": delay_ms}]


async def profiled_load(stack: Stack, seconds: float, concurrency: int, out: Path) -> dict[str, Any]:
    spy = profile.start(stack.pid("gateway"), seconds, out)
    target = Target("gateway", f"{stack.urls['gateway']}/v1", model=GATEWAY_MODEL, jwt_per_user=True)
    deadline = time.monotonic() + seconds
    round_ = 0
    try:
        while time.monotonic() < deadline and spy.poll() is None:
            await wave(target, concurrency, "profile", round_)
            round_ += 1
    finally:
        await target.close()
    _, err = spy.communicate(timeout=seconds + 30)
    if spy.returncode != 0 or not out.exists():  # noqa: ASYNC240 (nothing else runs here)
        return {"samples": 0, "error": err.decode()[-300:]}
    return profile.summarize(out)


async def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    full = os.environ.get("BENCH_FULL") == "1"
    sizes = FULL if full else QUICK
    only = set(
        filter(None, os.environ.get("BENCH_ONLY", "overhead,trips,memory,scale,actions,profile").split(","))
    )
    tokens = int(os.environ.get("BENCH_TOKENS", "32"))
    delay_ms = float(os.environ.get("BENCH_TOKEN_DELAY_MS", "10"))
    litellm_path = Path(os.environ.get("BENCH_LITELLM", str(DEFAULT_LITELLM)))
    litellm = litellm_path if litellm_path.exists() else None  # noqa: ASYNC240 (before any task)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "mode": "full" if full else "quick",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(litellm),
        "fd_limit": raise_fd_limit(),
        "upstream": {"tokens_per_reply": tokens, "token_delay_ms": delay_ms},
    }
    if litellm is None:
        report["litellm"] = (
            f"not run: {litellm_path} missing (make bench installs it from bench/requirements-litellm.txt)"
        )
    stack = new_stack(RESULTS)
    tables: list[str] = []
    try:
        stack.redis()
        stack.upstream()
        stack.gateway()
        if litellm is not None and ("overhead" in only or "targets" in only):
            stack.litellm(litellm)
        await put_script(stack.urls["upstream"], script(tokens, delay_ms))

        if "overhead" in only:
            targets = [
                Target("direct", stack.urls["upstream"]),
                Target("gateway", f"{stack.urls['gateway']}/v1", model=GATEWAY_MODEL, jwt_per_user=True),
            ]
            if "litellm" in stack.urls:
                targets.append(
                    Target("litellm", stack.urls["litellm"], model=LITELLM_MODEL, api_key=LITELLM_MASTER_KEY)
                )
            try:
                report["overhead"] = await overhead.measure(targets, sizes["overhead"])
            finally:
                for target in targets:
                    await target.close()
            if "litellm" in stack.urls:
                stack.stop("litellm")  # it holds a core's worth of CPU otherwise
            tables.append(
                "Gateway overhead (ms; x = ratio to direct)\n" + overhead.render(report["overhead"])
            )

        if "targets" in only:
            report["targets"] = await target_runs(stack, sizes["targets"], report["fd_limit"])
            tables.append(
                "Hot-path targets (50-token answers, sent at once)\n" + hot_path.render(report["targets"])
            )
            for name, trips in report["targets"].get("trips", {}).items():
                tables.append(f"Redis per turn, {name}\n" + redis_trips.render(trips))
            await put_script(stack.urls["upstream"], script(tokens, delay_ms))

        if "stages" in only:
            await put_script(stack.urls["upstream"], script(hot_path.TOKENS, 0))
            baseline = os.environ.get("BENCH_BASELINE")
            source = (
                export_baseline(baseline, Path(tempfile.mkdtemp(prefix="bench-baseline-")))
                if baseline
                else None
            )
            report["stages"] = await stages.measure(stack, sizes["stages"], GATEWAY_MODEL, source)
            tables.append(
                "Added TTFT by stage, 1 stream (50 tokens sent at once)\n" + stages.render(report["stages"])
            )
            await put_script(stack.urls["upstream"], script(tokens, delay_ms))

        if "profile" in only:
            if "targets" in only:  # the targets' scale run leaves thousands of streams closing
                stack.stop("gateway")
                stack.gateway()
            report["profile"] = await profiled_load(
                stack, sizes["profile_s"], 64, stack.workdir / "gateway.pyspy.txt"
            )
            tables.append(
                "Gateway profile under 64 concurrent streams (py-spy)\n" + profile.render(report["profile"])
            )

        if "trips" in only:
            report["redis_per_turn"] = await redis_trips.measure(
                stack.urls["gateway"], stack.urls["redis"], sizes["trips"]
            )
            tables.append(
                f"Redis traffic per user turn ({tokens} tokens)\n"
                + redis_trips.render(report["redis_per_turn"])
            )

        if "memory" in only:
            report["redis_memory"] = await memory_runs(stack, sizes["memory"])
            tables.append(
                f"Redis memory per turn ({hot_path.TOKENS}-token answers; bytes, medians)\n"
                + redis_memory.render(report["redis_memory"])
            )
            await put_script(stack.urls["upstream"], script(tokens, delay_ms))

        if "scale" in only:
            report["scale"] = await scale_runs(stack, sizes["scale"], probe_rounds=16 if full else 8)
            for name, run in report["scale"].items():
                tables.append(f"Scale: open streams on one gateway process ({name})\n" + scale.render(run))

        if "cluster" in only:
            report["cluster"] = await cluster_scale.measure(
                stack, sizes["cluster"], probe_concurrency=4, probe_rounds=16 if full else 8
            )
            tables.append(
                "Scale on one Redis node vs a three-node Redis Cluster\n"
                + cluster_scale.render(report["cluster"])
            )

        if "actions" in only:
            report["actions"] = await action_runs(stack, *sizes["actions"])
            tables.append("Action pipeline end to end\n" + actions.render(report["actions"]))
    except BenchSetupError as exc:
        log.error("%s", exc)
        report["error"] = str(exc)
    finally:
        stack.close()
    out = RESULTS / f"bench-{report['started'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print("\n\n".join([f"versions: {report['versions']}  machine: {report['machine']}", *tables]))
    print(f"\nJSON: {out.relative_to(ROOT)}; logs: {stack.workdir.relative_to(ROOT)}")
    return 1 if "error" in report else 0


async def scale_runs(stack: Stack, levels: list[int], probe_rounds: int) -> dict[str, Any]:
    """The scale run on a fresh gateway (RSS per stream must not hide under the high-water mark of
    earlier runs). BENCH_SCALE_LEVELS (e.g. 0,1000,2500,5000,10000) sets the levels and runs every
    one of them (not stopped at the first over budget). With BENCH_BASELINE=<git rev>, that
    revision's gateway is measured first the same way, then this checkout's: one after the other,
    since the load generator cannot hold both sets of streams at once (descriptors)."""
    stop_over_budget = "BENCH_SCALE_LEVELS" not in os.environ
    if not stop_over_budget:
        levels = [int(level) for level in os.environ["BENCH_SCALE_LEVELS"].split(",")]
    gateways: list[tuple[str, Path | None]] = []
    baseline = os.environ.get("BENCH_BASELINE")
    if baseline:
        tree = export_baseline(baseline, Path(tempfile.mkdtemp(prefix="bench-baseline-")))
        short = subprocess.run(  # noqa: ASYNC221 (setup, before any load runs)
            ["git", "rev-parse", "--short", baseline], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        gateways.append((f"baseline {short}", tree))
    gateways.append(("gateway", None))
    runs: dict[str, Any] = {}
    stack.stop("gateway")
    for name, source in gateways:
        service = "scale-baseline" if source is not None else "gateway"
        stack.gateway(service, source)
        runs[name] = await scale.measure(
            stack.urls[service],
            stack.pid(service),
            levels,
            probe_concurrency=4,
            probe_rounds=probe_rounds,
            stop_over_budget=stop_over_budget,
            redis_url=stack.urls["redis"],
        )
        runs[name]["started_load_1m"] = round(os.getloadavg()[0], 2)
        stack.stop(service)
    stack.gateway()  # later sections expect the gateway
    return runs


async def memory_runs(stack: Stack, turns: int) -> dict[str, Any]:
    """Redis bytes per stateful turn and per stateless call, right after the answer and once kept;
    with BENCH_BASELINE=<git rev>, that revision's gateway measured the same way in the same run."""
    await put_script(stack.urls["upstream"], script(hot_path.TOKENS, 0))
    delay = redis_memory.COMPACT_DELAY_S
    gateways = {"gateway": stack.gateway("memory", GATEWAY_LOG_COMPACT_DELAY_SECONDS=delay)}
    baseline = os.environ.get("BENCH_BASELINE")
    if baseline:
        source = export_baseline(baseline, Path(tempfile.mkdtemp(prefix="bench-baseline-")))
        name = (
            "baseline "
            + subprocess.run(  # noqa: ASYNC221 (setup, before any load runs)
                ["git", "rev-parse", "--short", baseline], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
        )
        url = stack.gateway("memory-baseline", source, GATEWAY_LOG_COMPACT_DELAY_SECONDS=delay)
        gateways = {name: url, **gateways}
    results = {
        name: await redis_memory.measure(url, stack.urls["redis"], turns, name.split()[0])
        for name, url in gateways.items()
    }
    for service in ("memory", "memory-baseline"):
        if service in stack.urls:
            stack.stop(service)
    return results


#: Optional speed-ups (module names, which are also their PyPI names) a gateway picks up when present.
SPEEDUPS = ("hiredis", "uvloop", "orjson")
VARIANT = ROOT / "bench" / "variant_gateway.py"


def not_pinned(requirements: Path) -> list[str]:
    """The SPEEDUPS a gateway's requirements file does not pin."""
    text = requirements.read_text() if requirements.exists() else ""
    pinned = {line.split("==")[0].split("[")[0].strip().lower() for line in text.splitlines()}
    return [name for name in SPEEDUPS if name not in pinned]


def variants(spec: str) -> dict[str, dict[str, str]]:
    """BENCH_VARIANTS=`name:VAR=value,VAR=value;name2:...`: more gateways of this checkout, each with
    its environment overrides (e.g. `no-uvloop:GATEWAY_UVLOOP=false;no-hiredis:BENCH_WITHOUT=hiredis`),
    measured beside the others in the targets' TTFT rounds and throughput windows."""
    found: dict[str, dict[str, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, assignments = part.partition(":")
        found[name.strip()] = dict(
            item.split("=", 1) for item in filter(None, (a.strip() for a in assignments.split(",")))
        )
    return found


def export_baseline(rev: str, into: Path) -> Path:
    """The tree of git revision `rev`, exported for a baseline gateway beside this checkout's."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


async def target_runs(stack: Stack, sizes: dict[str, Any], fd_limit: int) -> dict[str, Any]:
    """The issue's three targets in one run: every target behind the same upstream and client code.
    With BENCH_BASELINE=<git rev>, that revision's gateway runs beside this one (same Redis, same
    upstream, alternating windows) for a before/after ratio in one run; the scale run is left out."""
    await put_script(stack.urls["upstream"], script(hot_path.TOKENS, 0))
    result: dict[str, Any] = {"fd_limit": fd_limit, "tokens": hot_path.TOKENS}
    sdk = [
        Target("direct", stack.urls["upstream"]),
        Target("gateway", f"{stack.urls['gateway']}/v1", model=GATEWAY_MODEL, jwt_per_user=True),
    ]
    raw = [
        hot_path.RawTarget("direct", stack.urls["upstream"], stack.pid("upstream")),
        hot_path.RawTarget(
            "gateway", f"{stack.urls['gateway']}/v1", stack.pid("gateway"), GATEWAY_MODEL, jwt=True
        ),
    ]
    baseline = os.environ.get("BENCH_BASELINE")
    if baseline:
        # Outside the checkout: a second copy of the packages there would confuse ruff, mypy and pytest.
        source = export_baseline(baseline, Path(tempfile.mkdtemp(prefix="bench-baseline-")))
        # As deployed: the speed-ups its requirements do not pin are hidden from it (this venv has them).
        hidden = not_pinned(source / "streaming_gateway" / "requirements.txt")
        result["baseline_without"] = hidden
        url = stack.gateway("baseline", source, VARIANT, BENCH_WITHOUT="+".join(hidden))
        result["baseline"] = subprocess.run(  # noqa: ASYNC221 (setup, before any load runs)
            ["git", "rev-parse", "--short", baseline], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        sdk.append(Target("baseline", f"{url}/v1", model=GATEWAY_MODEL, jwt_per_user=True))
        raw.append(
            hot_path.RawTarget("baseline", f"{url}/v1", stack.pid("baseline"), GATEWAY_MODEL, jwt=True)
        )
    for name, overrides in variants(os.environ.get("BENCH_VARIANTS", "")).items():
        url = stack.gateway(name, None, VARIANT, **overrides)
        result.setdefault("variants", {})[name] = overrides
        sdk.append(Target(name, f"{url}/v1", model=GATEWAY_MODEL, jwt_per_user=True))
        raw.append(hot_path.RawTarget(name, f"{url}/v1", stack.pid(name), GATEWAY_MODEL, jwt=True))
    if "litellm" in stack.urls:
        sdk.append(Target("litellm", stack.urls["litellm"], model=LITELLM_MODEL, api_key=LITELLM_MASTER_KEY))
        raw.append(
            hot_path.RawTarget(
                "litellm", stack.urls["litellm"], stack.pid("litellm"), LITELLM_MODEL, LITELLM_MASTER_KEY
            )
        )
    try:
        result["ttft"] = await hot_path.added_ttft(sdk, sizes["ttft_rounds"])
    finally:
        for target in sdk:
            await target.close()
    result["throughput"] = await hot_path.throughput(raw, 16, sizes["window_s"], sizes["windows"])
    # Where the gateway's CPU goes under that load: one more gateway window under py-spy.
    out = stack.workdir / "gateway-targets.pyspy.txt"
    spy = profile.start(stack.pid("gateway"), sizes["window_s"], out, rate=100)
    await hot_path.throughput([raw[1]], 16, sizes["window_s"], 1)
    _, err = spy.communicate(timeout=sizes["window_s"] + 60)
    result["profile"] = (
        profile.summarize(out) if out.exists() else {"samples": 0, "error": err.decode()[-300:]}
    )
    if "litellm" in stack.urls:
        stack.stop("litellm")
    if baseline:
        # Redis per turn of each (the same 50-token answer, one turn after another, MONITOR).
        result["trips"] = {
            name: await redis_trips.measure(stack.urls[name], stack.urls["redis"], 5)
            for name in ("baseline", "gateway")
        }
        return result
    stack.stop("gateway")
    stack.gateway()
    result["scale"] = await scale.measure(
        stack.urls["gateway"],
        stack.pid("gateway"),
        sizes["scale"],
        probe_concurrency=4,
        probe_rounds=16,
        stop_over_budget=False,
        redis_url=stack.urls["redis"],
    )
    result["idle"] = hot_path.idle_cost(result["scale"])
    return result


async def action_runs(stack: Stack, count: int, concurrency: int) -> dict[str, Any]:
    """Each failure rate with one worker process, then with two (same run, same gateway)."""
    start_cosmos(stack)
    results: dict[str, Any] = {}
    for label, rate in (("0%", 0.0), ("10%", 0.1)):
        backend = start_backend(stack, f"backend-{rate}", rate)
        try:
            for workers in (1, 2):
                names = [f"worker-{n}" for n in range(1, workers + 1)]
                for name in names:
                    start_worker(stack, name, pipeline_env(stack, backend))
                try:
                    result = await actions.run(stack.urls["gateway"], count, concurrency)
                    results[f"{label}, {workers} worker{'s' if workers > 1 else ''}"] = {
                        **result,
                        "workers": workers,
                    }
                finally:
                    for name in names:
                        stack.stop(name)
        finally:
            stack.stop(f"backend-{rate}")
    return results


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
