"""`make dev`: the whole system on loopback, in the foreground, on embedded defaults.

Starts what is not already there (Redis when nothing answers on REDIS_URL, the scripted
upstream when no OpenAI key is set, the action pipeline: Azurite, the Cosmos DB server, the sample
tickets backend and the local action worker), then the gateway. Ctrl-C stops, in reverse order, exactly
the processes started here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

from local_stack import processes

log = logging.getLogger("local_stack")

STATE_DIR = processes.ROOT / ".local"
#: Local only: the gateway refuses to start without a secret, so the dev stack embeds one.
DEV_JWT_SECRET = "local-dev-secret-change-me-0123456789abcdef"  # noqa: S105 (local only, by design)
UPSTREAM_PORT = 8090


def dev_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AUTH_JWT_SECRET", DEV_JWT_SECRET)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("GATEWAY_PORT", "8080")
    # The web client's "Get a local dev token" button (POST /dev/token): local stack only.
    env.setdefault("GATEWAY_DEV_TOKEN_ENDPOINT", "true")
    return env


def plan(env: dict[str, str]) -> list[processes.Service]:
    """The services to start, in order; mutates env with the addresses they will listen on."""
    services: list[processes.Service] = []
    redis_url = urlparse(env["REDIS_URL"])
    redis_port = redis_url.port or 6379
    if redis_url.hostname in {"127.0.0.1", "localhost"} and not processes.port_answers(redis_port):
        data = STATE_DIR / "redis"
        data.mkdir(parents=True, exist_ok=True)
        services.append(processes.redis_server(port=redis_port, data_dir=data))
    else:
        log.info("using the Redis already answering at %s", env["REDIS_URL"])

    if not (env.get("OPENAI_API_KEY") or env.get("AZURE_OPENAI_ENDPOINT")):
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{UPSTREAM_PORT}/v1"
        env["OPENAI_API_KEY"] = "scripted-local"
        log.info(
            "no OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT: the model is the scripted upstream at %s",
            env["OPENAI_BASE_URL"],
        )
        services.append(
            processes.python_module(
                "scripted-upstream", "scripted_upstream", UPSTREAM_PORT, "--port", str(UPSTREAM_PORT)
            )
        )

    services.extend(action_pipeline(env))

    gateway_port = int(env["GATEWAY_PORT"])
    services.append(processes.python_module("gateway", "streaming_gateway", gateway_port, env=env))
    return services


# --- the action pipeline: emulators, the sample backend, the local worker ------------------------
AZURITE_PORTS = (10000, 10001, 10002)  # what UseDevelopmentStorage=true expects (func start)
COSMOS_PORT = 8081
TICKETS_PORT = 8095


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


def action_pipeline(env: dict[str, str]) -> list[processes.Service]:
    """Azurite and the Cosmos DB server (from node_modules), the tickets backend, then the worker that
    runs the function app's orchestrator and activities on the Redis Streams bus."""
    services: list[processes.Service] = []
    if not processes.port_answers(AZURITE_PORTS[0]):
        location = STATE_DIR / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        blob, queue, table = AZURITE_PORTS
        argv = [
            "node",
            str(processes.NODE_MODULES / "azurite/dist/src/azurite.js"),
            "--silent",
            "--location",
            str(location),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(blob),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(queue),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(table),
        ]
        services.append(processes.Service("azurite", argv, blob, STATE_DIR / "azurite.log"))
    env.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")

    if "COSMOS_ENDPOINT" not in env:
        env.update(
            {
                "COSMOS_ENDPOINT": f"https://127.0.0.1:{COSMOS_PORT}",
                "COSMOS_KEY": processes.COSMOS_EMULATOR_KEY,
                "COSMOS_VERIFY_TLS": "false",
                "COSMOS_CREATE_IF_MISSING": "true",
            }
        )
        if not processes.port_answers(COSMOS_PORT):
            services.append(
                processes.cosmos_server(port=COSMOS_PORT, log_path=STATE_DIR / "cosmosdb-server.log")
            )

    if "TICKETS_SERVICE_URL" not in env:
        env["TICKETS_SERVICE_URL"] = f"http://127.0.0.1:{TICKETS_PORT}"
        services.append(
            processes.python_module(
                "sample-backend", "sample_backend", TICKETS_PORT, "--port", str(TICKETS_PORT)
            )
        )

    if env.get("SERVICEBUS_CONNECTION_STRING") or env.get("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"):
        log.info("Service Bus configured: actions go to Azure; the local worker is not started")
    else:
        services.append(ProcessWithoutPort("worker", [sys.executable, "-m", "function_app.worker"], 0))
    return services


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s local_stack %(levelname)s %(message)s")
    env = dev_environment()
    started: list[processes.Service] = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for service in plan(env):
            service.env = {**env, **service.env}
            log.info("starting %s%s", service.name, f" on 127.0.0.1:{service.port}" if service.port else "")
            service.start()
            started.append(service)
        log.info(
            "ready: gateway on http://127.0.0.1:%s (GET /healthz); a token: make token", env["GATEWAY_PORT"]
        )
        while all(service.running for service in started):
            time.sleep(0.5)
        dead = [s.name for s in started if not s.running]
        log.error("%s exited; stopping the rest", ", ".join(dead))
        return 1
    except processes.ServiceStartError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        # A second Ctrl-C (or a SIGTERM sent to the whole process group, as `timeout` does) must not
        # cut the shutdown short and leave children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
