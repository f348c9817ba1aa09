"""The gateway as its own OS process (python -m streaming_gateway), so its memory, descriptors and
open streams can be read from outside: /proc for RSS and fds, /metrics for the stream gauge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from local_stack import processes
from tests.gateway.conftest import SECRET, auth


class GatewayProcess:
    def __init__(self, service: processes.Service) -> None:
        self.service = service
        self.base = f"http://127.0.0.1:{service.port}"

    @property
    def pid(self) -> int:
        assert self.service.process is not None
        return self.service.process.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.base}/metrics") as response:
                text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

    async def conversation(self, session: aiohttp.ClientSession, user: str = "alice") -> str:
        async with session.post(f"{self.base}/v1/conversations", json={}, headers=auth(user)) as response:
            assert response.status == 201, await response.text()
            return (await response.json())["id"]


def start_gateway_process(
    redis_url: str, upstream_base_url: str, log_path: Path, **env: str
) -> GatewayProcess:
    port = processes.free_port()
    settings: dict[str, Any] = {
        "AUTH_JWT_SECRET": SECRET,
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": upstream_base_url,
        "OPENAI_API_KEY": "scripted",
        "GATEWAY_PORT": str(port),
        "GATEWAY_HEARTBEAT_SECONDS": "0.5",
        "GATEWAY_ORPHAN_GRACE_SECONDS": "0",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
        "GATEWAY_MAX_STREAMS_PER_USER": "10000",
        **env,
    }
    service = processes.python_module(
        "gateway-under-fault", "streaming_gateway", port, env=settings, log_path=log_path
    )
    service.start()
    return GatewayProcess(service)


@pytest.fixture
def gateway_process(redis_url: str, upstream_base_url: str, output_dir: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway_process(redis_url, upstream_base_url, output_dir / "gateway-faults.log")
    yield gateway
    gateway.service.stop()


@pytest.fixture
def upstream_process(output_dir: Path) -> Iterator[str]:
    """The scripted upstream as its own process (for tests whose body blocks: no event loop to share)."""
    port = processes.free_port()
    service = processes.python_module(
        "upstream-for-faults",
        "scripted_upstream",
        port,
        "--port",
        str(port),
        "--token-delay-ms",
        "0",
        log_path=output_dir / "upstream-faults.log",
    )
    service.start()
    yield f"http://127.0.0.1:{port}/v1"
    service.stop()


@pytest.fixture
def standalone_gateway(redis_url: str, upstream_process: str, output_dir: Path) -> Iterator[GatewayProcess]:
    """Gateway, upstream and Redis all in other processes: a synchronous test may block freely."""
    gateway = start_gateway_process(
        redis_url, upstream_process, output_dir / "gateway-fuzz.log", GATEWAY_MAX_MESSAGE_CHARS="2000"
    )
    yield gateway
    gateway.service.stop()
