"""Run the image's entrypoint here the way the container runs it, and stop it the way Kubernetes does.

No Docker engine runs on this machine, so the image's file tree is laid out from the Dockerfile's
COPY lines (honouring .dockerignore) and its ENTRYPOINT runs in that tree with the image's ENV
plus the pod's settings. The Azure endpoints of the pod are swapped for local stand-ins (the
suite's Redis, a local JWT secret, the scripted upstream); the process, module, working
directory and variable names are the container's.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack.processes import free_port
from tests.deploy.dockerfile import copy_sources, stages
from tests.deploy.manifests import ROOT, find, rendered
from tests.polling import eventually

STARTUP_DEADLINE_S = 60.0


def image_tree(target: Path) -> Path:
    """Lay out /app as the Dockerfile builds it: each COPY source under the WORKDIR."""
    build = stages()[0]
    (workdir,) = build.all("WORKDIR")
    app = target / workdir.lstrip("/")
    for source, destination in copy_sources(build):
        if not destination.startswith("/"):
            shutil.copytree(
                ROOT / source, app / destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
    return app


def snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(tree)): (p.stat().st_size, p.stat().st_mtime_ns) for p in tree.rglob("*")}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def wait_for_status(process: subprocess.Popen[bytes], url: str, status: int) -> str:
    """The body of `url` once it answers `status`; fails at once if the process exits."""

    async def answered() -> tuple[str] | None:
        if process.poll() is not None:
            raise AssertionError(f"entrypoint exited with {process.returncode} before {url} answered")
        try:
            code, body = await asyncio.to_thread(get, url)
        except OSError:
            return None
        return (body,) if code == status else None

    (body,) = await eventually(answered, f"{url} to answer {status}", timeout=STARTUP_DEADLINE_S)
    return body


@pytest.fixture
def container_env(redis_url: str, upstream_base_url: str) -> dict[str, str]:
    """The image's ENV, then the pod's settings ConfigMap, then local stand-ins for Azure."""
    runtime = stages()[-1]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/nonexistent"}
    env |= {k: v for k, v in runtime.env().items() if k != "PATH"}
    pod = find(rendered("dev"), "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"]
    settings_name = pod["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    settings = dict(find(rendered("dev"), "ConfigMap", settings_name)[0]["data"])
    for azure_only in (
        "AZURE_OPENAI_ENDPOINT",
        "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
        "AUTH_JWKS_URL",
        "AUTH_ISSUER",
        "AUTH_AUDIENCE",
    ):
        settings.pop(azure_only)
    env |= settings
    env |= {
        "REDIS_URL": redis_url,
        "AUTH_JWT_SECRET": "deploy-test-secret-0123456789abcdef-0123",
        "OPENAI_BASE_URL": upstream_base_url,
        # The container listens on 0.0.0.0 inside its own network namespace; here that would be
        # the machine's interfaces, so the test binds loopback on a free port.
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(free_port()),
    }
    return env


@pytest.fixture
def entrypoint(
    tmp_path: Path, container_env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    app = image_tree(tmp_path / "image")
    argv = stages()[-1].exec_form("ENTRYPOINT")
    assert argv[0] == "python"
    log = open(tmp_path / "gateway.log", "wb")
    process = subprocess.Popen(
        [sys.executable, *argv[1:]],
        cwd=app,
        env=container_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{container_env['GATEWAY_PORT']}"
    try:
        yield process, base, app
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


async def test_entrypoint_serves_health_and_readiness_from_the_image_tree(
    entrypoint: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """`python -m streaming_gateway` in the image layout answers /healthz, then /readyz once Redis answers."""
    process, base, _ = entrypoint
    assert json.loads(await wait_for_status(process, f"{base}/healthz", 200))["status"] == "ok"
    assert json.loads(await wait_for_status(process, f"{base}/readyz", 200))["status"] == "ok"


async def test_entrypoint_writes_nothing_into_the_image(
    entrypoint: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """The app tree is unchanged after serving (fit for readOnlyRootFilesystem: no byte code, no files)."""
    process, base, app = entrypoint
    before = snapshot(app)
    await wait_for_status(process, f"{base}/readyz", 200)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=STARTUP_DEADLINE_S)
    assert snapshot(app) == before


async def test_sigterm_stops_the_entrypoint_cleanly(
    entrypoint: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """SIGTERM, as the kubelet sends it after preStop, ends PID 1 with status 0 within the grace period."""
    process, base, _ = entrypoint
    await wait_for_status(process, f"{base}/healthz", 200)
    process.send_signal(signal.SIGTERM)
    grace = find(rendered("prod"), "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert process.wait(timeout=grace) == 0


def test_image_tree_holds_only_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """Tests, local tooling and the function app are not in the image's /app."""
    app = image_tree(tmp_path / "image")
    top = {p.name for p in app.iterdir()}
    assert "streaming_gateway" in top and "agent_contracts" in top
    assert not top & {"tests", "function_app", "local_stack", "scripted_upstream", "aks", "node_modules"}
