"""The gateway pod's worst-case shutdown fits its grace period, computed from the rendered manifest
and the gateway's own code and settings, so a change on either side that breaks the budget fails.

After the kubelet starts stopping a pod: the preStop hook runs (endpoints stop sending new
requests), then SIGTERM reaches Python. aiohttp stops listening, runs on_shutdown (answers drain
for GATEWAY_SHUTDOWN_GRACE_SECONDS, then open streams get FLUSH_TIMEOUT_S to deliver and close),
then waits up to run_app's shutdown_timeout for handlers, then cleanup and the telemetry flush.
The Istio sidecar gets SIGTERM at the start (it has no preStop) and must keep serving until the
app is done; the kubelet kills whatever is left at terminationGracePeriodSeconds.
"""

from __future__ import annotations

import ast
import importlib

import pytest
import yaml

from tests.deploy.manifests import OVERLAYS, ROOT, find, rendered

GATEWAY = ROOT / "streaming_gateway"
#: Left for cleanup contexts (Redis, the bus) and the telemetry exporter's flush after aiohttp returns.
MARGIN_S = 10


def module_defining(name: str) -> str:
    """The gateway module that assigns `name` at top level (found by reading the package, not by a fixed path)."""
    for path in sorted(GATEWAY.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return ".".join(path.relative_to(ROOT).with_suffix("").parts)
    raise AssertionError(f"no module of streaming_gateway defines {name}")


def run_app_shutdown_timeout() -> float:
    """The shutdown_timeout the gateway's entry point passes to aiohttp's run_app, evaluated in that module."""
    for path in sorted(GATEWAY.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "run_app"
            ):
                keyword = [k for k in node.keywords if k.arg == "shutdown_timeout"]
                assert keyword, f"{path}: run_app without shutdown_timeout waits aiohttp's default 60 s"
                module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
                # The gateway's own source expression (e.g. `FLUSH_TIMEOUT_S + 5`), in its own module.
                expression = compile(ast.Expression(keyword[0].value), str(path), "eval")
                return float(eval(expression, vars(module)))  # noqa: S307 - repository code, not input
    raise AssertionError("streaming_gateway never calls run_app")


def budget(overlay: str) -> dict[str, float]:
    from streaming_gateway.settings import Settings

    template = find(rendered(overlay), "Deployment", "streaming-gateway")[0]["spec"]["template"]
    container = template["spec"]["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    settings_name = container["envFrom"][0]["configMapRef"]["name"]
    environ = dict(find(rendered(overlay), "ConfigMap", settings_name)[0]["data"])
    environ["REDIS_URL"] = "redis://:0123abcd@redis.agents.svc.cluster.local:6379/0"
    flush = importlib.import_module(module_defining("FLUSH_TIMEOUT_S")).FLUSH_TIMEOUT_S
    proxy = yaml.safe_load(template["metadata"]["annotations"]["proxy.istio.io/config"])
    return {
        "preStop": float(command[1]),
        "drain": Settings.from_env(environ).shutdown_grace_s,
        "flush": float(flush),
        "aiohttp": run_app_shutdown_timeout(),
        "sidecar": float(proxy["terminationDrainDuration"].rstrip("s")),
        "grace": float(template["spec"]["terminationGracePeriodSeconds"]),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worst_case_shutdown_fits_the_grace_period(overlay: str) -> None:
    """preStop + drain + flush + aiohttp's handler wait, plus a margin, is within terminationGracePeriodSeconds."""
    figures = budget(overlay)
    worst = figures["preStop"] + figures["drain"] + figures["flush"] + figures["aiohttp"]
    print(
        f"\n{overlay}: worst-case shutdown {figures['preStop']:g} + {figures['drain']:g} + {figures['flush']:g} + "
        f"{figures['aiohttp']:g} = {worst:g} s; sidecar drains {figures['sidecar']:g} s; grace {figures['grace']:g} s"
    )
    assert worst + MARGIN_S <= figures["grace"], figures


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sidecar_outlives_the_gateway_and_dies_before_the_kill(overlay: str) -> None:
    """The sidecar keeps serving through the gateway's whole worst case and stops within the grace period."""
    figures = budget(overlay)
    worst = figures["preStop"] + figures["drain"] + figures["flush"] + figures["aiohttp"]
    assert worst <= figures["sidecar"] <= figures["grace"], figures


def test_the_budget_reads_the_real_values() -> None:
    """The figures come from the code: the flush constant and run_app's timeout are found and positive."""
    figures = budget("prod")
    assert figures["flush"] > 0 and figures["aiohttp"] > 0 and figures["drain"] > 0
