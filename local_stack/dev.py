"""`make dev`: the whole system on loopback, in the foreground, on embedded defaults.

Starts what is not already there (Redis when nothing answers on REDIS_URL, a local 3-node Redis
Cluster instead with REDIS_MODE=cluster, the scripted
upstream when no OpenAI key is set, the action pipeline: Azurite, the Cosmos DB server, the sample
tickets backend and the local action worker), then the gateway. Before it starts anything it checks
that every port it will listen on is free, and names each one in use with what to do. Ctrl-C (or
SIGTERM, or SIGHUP) stops, in reverse order, exactly the processes started here; so does any
failure on the way.

The Cosmos DB stand-in keeps its data in memory only, so when this stack starts it, the action
pipeline's local state in Redis is cleared first (see `local_stack.pipeline_state`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from agent_contracts.settings import Env, SettingsError
from local_stack import pipeline_state, processes
from local_stack.errors import LocalStackError
from local_stack.redis_cluster import LocalRedisCluster

log = logging.getLogger("local_stack")

#: Local only: the gateway refuses to start without a secret, so the dev stack embeds one.
DEV_JWT_SECRET = "local-dev-secret-change-me-0123456789abcdef"  # noqa: S105 (local only, by design)
UPSTREAM_PORT = 8090
AZURITE_PORTS = (10000, 10001, 10002)  # what UseDevelopmentStorage=true expects (func start)
COSMOS_PORT = 8081
TICKETS_PORT = 8095


@dataclass(frozen=True)
class DevSettings:
    """Where `make dev` keeps its files and the ports of the stand-ins it starts."""

    state_dir: Path
    upstream_port: int
    azurite_ports: tuple[int, int, int]
    cosmos_port: int
    tickets_port: int

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> DevSettings:
        env = Env(environ)
        port = {"minimum": 1, "maximum": 65535}
        raw = env.str("LOCAL_AZURITE_PORTS", ",".join(map(str, AZURITE_PORTS)))
        try:
            blob, queue, table = (int(part) for part in raw.split(","))
        except ValueError:
            raise SettingsError(
                "LOCAL_AZURITE_PORTS", f"expected three ports like 10000,10001,10002, got {raw!r}"
            ) from None
        return cls(
            state_dir=Path(env.str("LOCAL_STATE_DIR", str(processes.ROOT / ".local"))),
            upstream_port=env.int("LOCAL_UPSTREAM_PORT", UPSTREAM_PORT, **port),
            azurite_ports=(blob, queue, table),
            cosmos_port=env.int("LOCAL_COSMOS_PORT", COSMOS_PORT, **port),
            tickets_port=env.int("LOCAL_TICKETS_PORT", TICKETS_PORT, **port),
        )


def dev_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AUTH_JWT_SECRET", DEV_JWT_SECRET)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("GATEWAY_PORT", "8080")
    # The web client's "Get a local dev token" button (POST /dev/token): local stack only.
    env.setdefault("GATEWAY_DEV_TOKEN_ENDPOINT", "true")
    return env


@dataclass(frozen=True)
class PortNeed:
    """A port this stack will listen on, who listens there, and the variable that moves it."""

    port: int
    owner: str
    variable: str


class PortsInUse(LocalStackError):
    def __init__(self, busy: list[PortNeed]) -> None:
        lines = [
            f"port {need.port} ({need.owner}) is already in use: stop what listens there (another "
            f"`make dev`? `ss -ltnp 'sport = :{need.port}'` names it) or set {need.variable} to a free port"
            for need in busy
        ]
        super().__init__("nothing was started:\n  " + "\n  ".join(lines))
        self.busy = busy


def check_ports(needs: list[PortNeed]) -> None:
    """Raise PortsInUse naming every needed port something already answers on."""
    busy = [need for need in needs if processes.port_answers(need.port)]
    if busy:
        raise PortsInUse(busy)


def plan(
    env: dict[str, str], settings: DevSettings | None = None, *, local_cluster: bool = False
) -> tuple[list[processes.Service], list[PortNeed]]:
    """The services to start, in order, and the ports they need; mutates env with their addresses.
    With `local_cluster` a Redis Cluster on free ports of its own stands in for Redis (started by
    the caller once the ports are checked), so no Redis is planned."""
    settings = settings or DevSettings.from_env(env)
    services: list[processes.Service] = []
    needs: list[PortNeed] = []
    redis_url = urlparse(env["REDIS_URL"])
    redis_port = redis_url.port or 6379
    if local_cluster:
        pass
    elif redis_url.hostname in {"127.0.0.1", "localhost"} and not processes.port_answers(redis_port):
        data = settings.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        services.append(processes.redis_server(port=redis_port, data_dir=data))
        needs.append(PortNeed(redis_port, "Redis", "REDIS_URL"))
    else:
        log.info("using the Redis already answering at %s", env["REDIS_URL"])

    if not (env.get("OPENAI_API_KEY") or env.get("AZURE_OPENAI_ENDPOINT")):
        port = settings.upstream_port
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        env["OPENAI_API_KEY"] = "scripted-local"
        log.info(
            "no OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT: the model is the scripted upstream at %s",
            env["OPENAI_BASE_URL"],
        )
        services.append(
            processes.python_module("scripted-upstream", "scripted_upstream", port, "--port", str(port))
        )
        needs.append(PortNeed(port, "the scripted model", "LOCAL_UPSTREAM_PORT"))

    pipeline = action_pipeline(env, settings)
    services.extend(pipeline)
    needs.extend(pipeline_ports(pipeline, settings))

    gateway_port = Env(env).int("GATEWAY_PORT", 8080, minimum=1, maximum=65535)
    # No env of its own: it gets the stack's at start, REDIS_URL included once a local cluster runs.
    services.append(processes.python_module("gateway", "streaming_gateway", gateway_port))
    needs.append(PortNeed(gateway_port, "the gateway", "GATEWAY_PORT"))
    return services, needs


class ProcessWithoutPort(processes.Service):
    """A child that listens on nothing (the worker): ready once it is still alive shortly after start."""

    def start(self, timeout: float = 30.0) -> processes.Service:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.argv, cwd=processes.ROOT, env={**os.environ, **self.env}, start_new_session=True
        )
        try:
            code = self.process.wait(timeout=1.5)
        except subprocess.TimeoutExpired:
            return self
        raise processes.ServiceStartError(self.name, f"exited with {code}")


def action_pipeline(env: dict[str, str], settings: DevSettings | None = None) -> list[processes.Service]:
    """Azurite and the Cosmos DB server (from node_modules), the tickets backend, then the worker that
    runs the function app's orchestrator and activities on the Redis Streams bus."""
    settings = settings or DevSettings.from_env(env)
    services: list[processes.Service] = []
    if not env.get("AzureWebJobsStorage"):
        location = settings.state_dir / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        blob, queue, table = settings.azurite_ports
        argv = ["node", str(processes.NODE_MODULES / "azurite/dist/src/azurite.js"), "--silent", "--location",
                str(location), "--skipApiVersionCheck", "--disableTelemetry", "--loose",
                "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost", "127.0.0.1",
                "--queuePort", str(queue), "--tableHost", "127.0.0.1", "--tablePort", str(table)]  # fmt: skip
        service = processes.Service("azurite", argv, blob, settings.state_dir / "azurite.log")
        service.env["AZURITE_QUEUE_PORT"], service.env["AZURITE_TABLE_PORT"] = str(queue), str(table)
        services.append(service)
        env["AzureWebJobsStorage"] = (
            "UseDevelopmentStorage=true"
            if settings.azurite_ports == AZURITE_PORTS
            else processes.azurite_connection_string(service)
        )

    if "COSMOS_ENDPOINT" not in env:
        env.update(
            {
                "COSMOS_ENDPOINT": f"https://127.0.0.1:{settings.cosmos_port}",
                "COSMOS_KEY": processes.COSMOS_EMULATOR_KEY,
                "COSMOS_VERIFY_TLS": "false",
                "COSMOS_CREATE_IF_MISSING": "true",
            }
        )
        services.append(
            processes.cosmos_server(
                port=settings.cosmos_port, log_path=settings.state_dir / "cosmosdb-server.log"
            )
        )

    if "TICKETS_SERVICE_URL" not in env:
        env["TICKETS_SERVICE_URL"] = f"http://127.0.0.1:{settings.tickets_port}"
        services.append(
            processes.python_module(
                "sample-backend",
                "sample_backend",
                settings.tickets_port,
                "--port",
                str(settings.tickets_port),
            )
        )

    if env.get("SERVICEBUS_CONNECTION_STRING") or env.get("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"):
        log.info("Service Bus configured: actions go to Azure; the local worker is not started")
    else:
        services.append(ProcessWithoutPort("worker", [sys.executable, "-m", "function_app.worker"], 0))
    return services


def pipeline_ports(services: list[processes.Service], settings: DevSettings) -> list[PortNeed]:
    owners = {
        "azurite": ("Azurite", "LOCAL_AZURITE_PORTS"),
        "cosmosdb-server": ("the Cosmos DB stand-in", "LOCAL_COSMOS_PORT"),
        "sample-backend": ("the sample tickets backend", "LOCAL_TICKETS_PORT"),
    }
    needs: list[PortNeed] = []
    for service in services:
        if service.name not in owners:
            continue
        owner, variable = owners[service.name]
        ports = settings.azurite_ports if service.name == "azurite" else (service.port,)
        needs.extend(PortNeed(port, owner, variable) for port in ports)
    return needs


def wants_local_cluster(env: dict[str, str]) -> bool:
    """REDIS_MODE=cluster and nothing answering on a loopback REDIS_URL."""
    url = urlparse(env["REDIS_URL"])
    if Env(env).choice("REDIS_MODE", "auto", ("auto", "standalone", "cluster")) != "cluster":
        return False
    return url.hostname in {"127.0.0.1", "localhost"} and not processes.port_answers(url.port or 6379)


def local_cluster(env: dict[str, str], settings: DevSettings | None = None) -> LocalRedisCluster | None:
    """When `wants_local_cluster`: a 3-node cluster on free ports, started now (env's REDIS_URL then
    names one of its nodes); None otherwise."""
    if not wants_local_cluster(env):
        return None
    settings = settings or DevSettings.from_env(env)
    data = settings.state_dir / "redis-cluster"
    data.mkdir(parents=True, exist_ok=True)
    cluster = LocalRedisCluster(primaries=3, data_dir=Path(tempfile.mkdtemp(dir=data)), log_dir=data)
    log.info("REDIS_MODE=cluster: starting a local 3-node Redis Cluster")
    cluster.start()
    env["REDIS_URL"] = cluster.url
    log.info(
        "Redis Cluster nodes on 127.0.0.1:%s; REDIS_URL=%s", ",".join(map(str, cluster.ports)), cluster.url
    )
    return cluster


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s local_stack %(levelname)s %(message)s")
    started: list[processes.Service] = []
    cluster: LocalRedisCluster | None = None
    # SIGTERM (`kill`, `timeout`) and SIGHUP (the terminal closed) stop the stack like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        env = dev_environment()
        services, needs = plan(env, local_cluster=wants_local_cluster(env))
        check_ports(needs)
        cluster = local_cluster(env)
        for service in services:
            service.env = {**env, **service.env}
            if service.name == "worker" and any(s.name == "cosmosdb-server" for s in started):
                # The Cosmos DB stand-in just started empty: the pipeline's state in Redis goes too.
                asyncio.run(
                    pipeline_state.clear(env["REDIS_URL"], updates_queue=env.get("SERVICEBUS_UPDATES_QUEUE"))
                )
            log.info("starting %s%s", service.name, f" on 127.0.0.1:{service.port}" if service.port else "")
            started.append(service)  # before start: a start that fails half-way is still stopped
            service.start()
        log.info(
            "ready: gateway on http://127.0.0.1:%s (GET /healthz); a token: make token", env["GATEWAY_PORT"]
        )
        while all(service.running for service in started):
            time.sleep(0.5)
        dead = [s.name for s in started if not s.running]
        log.error("%s exited; stopping the rest", ", ".join(dead))
        return 1
    except (LocalStackError, SettingsError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        # A second Ctrl-C (or a SIGTERM sent to the whole process group, as `timeout` does) must not
        # cut the shutdown short and leave children running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for service in reversed(started):
            service.stop()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
