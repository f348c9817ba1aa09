"""`make dev`: the whole system on loopback, in the foreground, on embedded defaults.

Starts what is not already there (Redis when nothing answers on REDIS_URL, the scripted
upstream when no OpenAI key is set), then the gateway. Ctrl-C stops, in reverse order, exactly
the processes started here.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from local_stack import processes

log = logging.getLogger("local_stack")

STATE_DIR = processes.ROOT / ".local"
#: Local only: the gateway refuses to start without a secret, so the dev stack embeds one.
DEV_JWT_SECRET = "local-dev-secret-change-me-0123456789abcdef"
UPSTREAM_PORT = 8090


def dev_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AUTH_JWT_SECRET", DEV_JWT_SECRET)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("GATEWAY_PORT", "8080")
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
        log.info("no OPENAI_API_KEY or AZURE_OPENAI_ENDPOINT: the model is the scripted upstream at %s",
                 env["OPENAI_BASE_URL"])
        services.append(processes.python_module("scripted-upstream", "scripted_upstream", UPSTREAM_PORT,
                                                "--port", str(UPSTREAM_PORT)))

    gateway_port = int(env["GATEWAY_PORT"])
    services.append(processes.python_module("gateway", "streaming_gateway", gateway_port, env=env))
    return services


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s local_stack %(levelname)s %(message)s")
    env = dev_environment()
    started: list[processes.Service] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for service in plan(env):
            service.env = {**env, **service.env}
            log.info("starting %s on 127.0.0.1:%d", service.name, service.port)
            service.start()
            started.append(service)
        log.info("ready: gateway on http://127.0.0.1:%s (GET /healthz); a token: make token", env["GATEWAY_PORT"])
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
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
