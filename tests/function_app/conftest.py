"""Fixtures for the function app: the Cosmos DB server from npm (session), the sample backend on a
free port, and a Runtime wired to both with a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from function_app.runtime import Runtime, build_runtime, use_runtime
from function_app.settings import Settings
from local_stack import processes
from sample_backend import create_backend_app


@pytest.fixture(scope="session")
def cosmos_service(output_dir: Path) -> Iterator[processes.Service]:
    service = processes.cosmos_server(log_path=output_dir / "cosmosdb-server.log")
    service.start()
    yield service
    service.stop()


@pytest.fixture
def cosmos_endpoint(cosmos_service: processes.Service) -> str:
    cosmos_service.start()
    return f"https://127.0.0.1:{cosmos_service.port}"


@pytest.fixture
async def backend() -> AsyncIterator[TestServer]:
    server = TestServer(create_backend_app(), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def settings_env(cosmos_endpoint: str, redis_url: str, backend_url: str, **overrides: str) -> dict[str, str]:
    return {
        "COSMOS_ENDPOINT": cosmos_endpoint,
        "COSMOS_KEY": processes.COSMOS_EMULATOR_KEY,
        "COSMOS_VERIFY_TLS": "false",  # the local server's certificate is self-signed
        "COSMOS_CREATE_IF_MISSING": "true",
        "COSMOS_DATABASE": f"test-{uuid.uuid4().hex[:10]}",
        "REDIS_URL": redis_url,
        "TICKETS_SERVICE_URL": backend_url,
        "DISPATCH_TIMEOUT_SECONDS": "2",
        "ACTION_RETRY_POLICIES": "create_ticket=0.1:3,get_ticket=0.1:2",
        "WORKER_CLAIM_IDLE_MS": "300",
        "WORKER_LEASE_MS": "2000",
        **overrides,
    }


@pytest.fixture
def app_env(cosmos_endpoint: str, redis_url: str, backend: TestServer) -> dict[str, str]:
    """The app settings of one test (its own Cosmos database), as the worker process would read them."""
    return settings_env(cosmos_endpoint, redis_url, str(backend.make_url("")).rstrip("/"))


@pytest.fixture
def settings(app_env: dict[str, str]) -> Settings:
    return Settings.from_env(app_env)


@pytest.fixture
async def runtime(settings: Settings, aredis: aioredis.Redis) -> AsyncIterator[Runtime]:
    runtime = await build_runtime(settings, redis=aredis)
    use_runtime(runtime)
    yield runtime
    use_runtime(None)
    await runtime.aclose()
