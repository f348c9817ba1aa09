"""Browser fixtures: Debian's headless Chromium driven by Playwright, against the real gateway app
(its web client included) on a free port with the suite's Redis and the scripted upstream.

Reused, not copied: the gateway fixtures of tests/gateway (app factory on a TestServer, the
scripted upstream's control endpoint) and, for action cards, the function app's fixtures (the
Cosmos DB server, the sample tickets backend, the runtime) with the local worker running in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, async_playwright, expect

from function_app.runtime import Runtime
from function_app.worker.service import Worker
from tests.fixtures.gateway import Gateway, StartGateway
from tests.web.chat_page import EXPECT_TIMEOUT_MS, FAILED, web_page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.stash[FAILED] = True


@pytest.fixture
async def web_gateway(start_gateway: StartGateway) -> Gateway:
    """The gateway with the local dev token endpoint enabled, as `make dev` runs it; an answer whose
    client dropped keeps going for 10 s (room to reconnect), as in production."""
    # Heartbeat 5 s (the gateway tests use 0.3 s): a pong late by more than half the heartbeat
    # closes the WebSocket, which a loaded CI machine's browser can be.
    return await start_gateway(
        GATEWAY_DEV_TOKEN_ENDPOINT="true", GATEWAY_ORPHAN_GRACE_SECONDS="10", GATEWAY_HEARTBEAT_SECONDS="5"
    )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(
    browser: Browser, request: pytest.FixtureRequest, output_dir: Path, start_gateway: StartGateway
) -> AsyncIterator[Page]:
    """A desktop-sized page; on failure its screenshot and console go to test-output/."""
    async for page in web_page(browser, request, output_dir, viewport={"width": 1200, "height": 800}):
        yield page


@pytest.fixture
async def phone_page(
    browser: Browser, request: pytest.FixtureRequest, output_dir: Path, start_gateway: StartGateway
) -> AsyncIterator[Page]:
    async for page in web_page(
        browser, request, output_dir, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    ):
        yield page


@pytest.fixture
async def worker(runtime: Runtime, aredis: aioredis.Redis) -> AsyncIterator[Worker]:
    """The local action worker (the function app's orchestrator and activities) running in-process."""
    stop = asyncio.Event()
    running = Worker(aredis, runtime)
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, timeout=10)
