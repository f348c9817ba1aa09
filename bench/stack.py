"""The processes a benchmark measures, each its own OS process on a free loopback port.

The load generator (bench/run.py) never shares an event loop with what it measures: Redis, the
scripted upstream, the gateway, the LiteLLM proxy and the action pipeline are started here through
local_stack.processes and stopped in reverse order.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from local_stack import processes
from local_stack.redis_cluster import LocalRedisCluster
from streaming_gateway.token import make_token

log = logging.getLogger(__name__)

JWT_SECRET = "bench-only-secret-0123456789abcdef0123"  # noqa: S105 (benchmark on loopback only)
LITELLM_MODEL = "bench-scripted"
#: LiteLLM's proxy refuses to start without a master key; a local one for the benchmark only.
LITELLM_MASTER_KEY = "sk-bench-local-6f1c2a9e0d4b47a8b1c3"


class BenchSetupError(RuntimeError):
    """A process the benchmark needs could not be started."""


def raise_fd_limit() -> int:
    """Thousands of open streams need thousands of descriptors in every process (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, read from /proc (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchSetupError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def token(user: str) -> str:
    return make_token(JWT_SECRET, user, 6 * 3600)


@dataclass
class Stack:
    """A started set of services; `close()` stops exactly what was started."""

    workdir: Path
    services: list[processes.Service] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    #: REDIS_MODE for the gateways and workers started after `redis()` / `redis_cluster()`.
    redis_mode: str = "auto"
    clusters: list[LocalRedisCluster] = field(default_factory=list)

    def start(self, service: processes.Service, timeout: float = 60.0) -> processes.Service:
        try:
            service.start(timeout)
        except processes.ServiceStartError as exc:
            raise BenchSetupError(str(exc)) from exc
        self.services.append(service)
        return service

    def find(self, name: str) -> processes.Service:
        return next(s for s in self.services if s.name == name)

    def pid(self, name: str) -> int:
        process = self.find(name).process
        assert process is not None
        return process.pid

    def stop(self, name: str) -> None:
        service = self.find(name)
        service.stop()
        self.services.remove(service)

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        for cluster in self.clusters:
            cluster.stop()
        self.clusters.clear()

    # --- the services -------------------------------------------------------------------------
    def redis(self, *, appendonly: bool = False) -> str:
        """The Redis the benchmark uses: REDIS_URL (any node of a cluster, with REDIS_MODE) when set,
        else a server of its own."""
        if os.environ.get("REDIS_URL") and not appendonly:
            self.urls["redis"] = os.environ["REDIS_URL"]
            self.redis_mode = os.environ.get("REDIS_MODE", "auto")
            return self.urls["redis"]
        return self.own_redis(appendonly=appendonly)

    def own_redis(self, *, appendonly: bool = False) -> str:
        """A single Redis server of the benchmark's own."""
        self.redis_mode = "standalone"
        service = processes.redis_server(data_dir=self.workdir / "redis", log_path=self.workdir / "redis.log")
        (self.workdir / "redis").mkdir(exist_ok=True)
        if appendonly:
            service.argv[service.argv.index("--appendonly") + 1] = "yes"
        self.start(service)
        self.urls["redis"] = f"redis://127.0.0.1:{service.port}/0"
        return self.urls["redis"]

    def redis_cluster(self, primaries: int) -> LocalRedisCluster:
        """A local Redis Cluster of `primaries` nodes (no replicas) of the benchmark's own."""
        data = self.workdir / f"redis-cluster-{len(self.clusters)}"
        try:
            cluster = LocalRedisCluster(primaries=primaries, data_dir=data, log_dir=data).start()
        except processes.ServiceStartError as exc:
            raise BenchSetupError(str(exc)) from exc
        self.clusters.append(cluster)
        self.urls["redis"] = cluster.url
        self.redis_mode = "cluster"
        return cluster

    def stop_cluster(self, cluster: LocalRedisCluster) -> None:
        cluster.stop()
        self.clusters.remove(cluster)

    def upstream(self) -> str:
        port = processes.free_port()
        self.start(
            processes.python_module(
                "upstream",
                "scripted_upstream",
                port,
                "--port",
                str(port),
                log_path=self.workdir / "upstream.log",
            )
        )
        self.urls["upstream"] = f"http://127.0.0.1:{port}/v1"
        return self.urls["upstream"]

    def gateway(
        self, name: str = "gateway", source: Path | None = None, script: Path | None = None, **overrides: str
    ) -> str:
        """Our gateway; with `source`, the one in that exported tree (an A/B baseline), run with
        `python -P` so that tree's packages come first on the path, not this checkout's; with
        `script`, started by that file (`<script> serve`, e.g. bench/staged_gateway.py)."""
        port = processes.free_port()
        env = {
            "AUTH_JWT_SECRET": JWT_SECRET,
            "REDIS_URL": self.urls["redis"],
            "REDIS_MODE": self.redis_mode,
            "OPENAI_BASE_URL": self.urls["upstream"],
            "OPENAI_API_KEY": "scripted",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            # Benchmarks measure the gateway, not its per-user limits: lift them out of the way.
            "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000",
            "GATEWAY_MAX_STREAMS_PER_USER": "100000",
            "GATEWAY_REDIS_MAX_CONNECTIONS": "20000",
            "GATEWAY_ORPHAN_GRACE_SECONDS": "1",
            **overrides,
        }
        service = processes.python_module(
            name, "streaming_gateway", port, env=env, log_path=self.workdir / f"{name}.log"
        )
        if script is not None:
            service.argv[1:] = [str(script), "serve"]
            service.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout's
        if source is not None:
            service.argv.insert(1, "-P")
            service.env["PYTHONPATH"] = str(source)
        self.start(service)
        self.urls[name] = f"http://127.0.0.1:{port}"
        return self.urls[name]

    def litellm(self, binary: Path) -> str:
        """LiteLLM's proxy (from its own virtual environment) in front of the same scripted upstream."""
        port = processes.free_port()
        config = self.workdir / "litellm.yaml"
        config.write_text(
            json.dumps(
                {  # JSON is YAML
                    "model_list": [
                        {
                            "model_name": LITELLM_MODEL,
                            "litellm_params": {
                                "model": "openai/scripted",
                                "api_base": self.urls["upstream"],
                                "api_key": "scripted",
                            },
                        }
                    ],
                    "litellm_settings": {"telemetry": False, "drop_params": True},
                }
            )
        )
        env = {
            "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_SCHEMA_UPDATE": "True",
        }
        argv = [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        self.start(
            processes.Service("litellm", argv, port, self.workdir / "litellm.log", env=env), timeout=120
        )
        self.urls["litellm"] = f"http://127.0.0.1:{port}/v1"
        return self.urls["litellm"]


class Worker(processes.Service):
    """The local action worker listens on no port: ready once it is still alive shortly after start."""

    def start(self, timeout: float = 30.0) -> processes.Service:
        log_file = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 (the child process owns it)
        self.process = subprocess.Popen(
            self.argv,
            cwd=processes.ROOT,
            env={**os.environ, **self.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return self
        raise processes.ServiceStartError(self.name, f"exited with {code}; see {self.log_path}")


def pipeline_env(stack: Stack, backend_url: str) -> dict[str, str]:
    """The function app's settings for the local worker: the stack's Redis and Cosmos DB server."""
    return {
        "COSMOS_ENDPOINT": stack.urls["cosmos"],
        "COSMOS_KEY": processes.COSMOS_EMULATOR_KEY,
        "COSMOS_VERIFY_TLS": "false",  # the local server's certificate is self-signed
        "COSMOS_CREATE_IF_MISSING": "true",
        "COSMOS_DATABASE": f"bench-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": stack.urls["redis"],
        "REDIS_MODE": stack.redis_mode,
        "TICKETS_SERVICE_URL": backend_url,
        "ACTION_RETRY_POLICIES": "create_ticket=0.2:6",
    }


def start_cosmos(stack: Stack) -> str:
    service = stack.start(processes.cosmos_server(log_path=stack.workdir / "cosmos.log"))
    stack.urls["cosmos"] = f"https://127.0.0.1:{service.port}"
    return stack.urls["cosmos"]


def start_backend(stack: Stack, name: str, fail_rate: float) -> str:
    port = processes.free_port()
    stack.start(
        processes.python_module(
            name,
            "bench.backend",
            port,
            "--port",
            str(port),
            "--fail-rate",
            str(fail_rate),
            "--seed",
            "8",
            log_path=stack.workdir / f"{name}.log",
        )
    )
    return f"http://127.0.0.1:{port}"


def start_worker(stack: Stack, name: str, env: dict[str, str]) -> processes.Service:
    return stack.start(
        Worker(name, [sys.executable, "-m", "function_app.worker"], 0, stack.workdir / f"{name}.log", env=env)
    )


def new_stack(root: Path) -> Stack:
    workdir = root / time.strftime("stack-%Y%m%d-%H%M%S")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return Stack(workdir)


async def put_script(upstream_v1: str, rules: list[dict[str, Any]]) -> None:
    base = upstream_v1.removesuffix("/v1")
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{base}/_control/script", json={"rules": rules}) as response:
            if response.status != 200:
                raise BenchSetupError(f"upstream refused the script: {await response.text()}")


async def upstream_stats(upstream_v1: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{upstream_v1.removesuffix('/v1')}/_control/stats") as response:
            stats: dict[str, Any] = await response.json()
            return stats
