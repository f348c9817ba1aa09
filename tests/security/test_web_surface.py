"""The gateway's surface beside the API: security headers on every HTML response, the local-only
dev token endpoint, /metrics on its own port, and a WebSocket sign-in that keeps the JWT out of URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from local_stack.processes import free_port
from streaming_gateway.app import create_app
from streaming_gateway.settings import Settings
from tests.fixtures.gateway import SECRET, Gateway, StartGateway, make_token
from tests.web.chat_page import last_answer, open_signed_in, send, wait_answer_done

ROOT = Path(__file__).resolve().parents[2]
SECURITY_HEADERS = (
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
)


async def test_every_html_response_carries_the_security_headers(gateway: Gateway) -> None:
    """/ and /web/index.html answer with the same CSP (frame-ancestors 'none'), nosniff, DENY framing,
    no referrer and a same-origin opener policy."""
    seen = []
    for path in ("/", "/web/index.html", "/web/./index.html"):
        async with gateway.request("GET", path, user=None) as response:
            assert response.status == 200 and response.content_type == "text/html", path
            seen.append({name: response.headers.get(name) for name in SECURITY_HEADERS})
    assert all(value for value in seen[0].values()), seen[0]
    assert seen[1] == seen[0] and seen[2] == seen[0]
    assert "frame-ancestors 'none'" in seen[0]["Content-Security-Policy"]
    assert seen[0]["X-Frame-Options"] == "DENY"


async def test_the_page_cannot_be_framed_by_another_origin(gateway: Gateway, page: Page) -> None:
    """A page of another origin that frames the client gets an empty frame: the browser refuses it."""

    async def framing(request: aiohttp.web.Request) -> aiohttp.web.Response:
        html = f'<iframe id="f" src="{gateway.url("/")}"></iframe>'
        return aiohttp.web.Response(text=html, content_type="text/html")

    app = aiohttp.web.Application()
    app.router.add_get("/", framing)
    other = TestServer(app, host="localhost")  # another origin: a different host name and port
    await other.start_server()
    try:
        async with page.expect_console_message(lambda message: "frame-ancestors" in message.text) as refused:
            await page.goto(str(other.make_url("/")))
        assert "frame-ancestors 'none'" in (await refused.value).text
        assert await page.frame_locator("#f").locator("#messages").count() == 0
    finally:
        await other.close()


async def dev_token_status(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"user": "mallory"}) as response:
            return response.status


async def test_dev_token_answers_only_a_loopback_peer(gateway_env: dict[str, str], lan_address: str) -> None:
    """With the endpoint enabled, a caller reaching the gateway over a non-loopback address gets 404,
    and so does a loopback caller whose request was forwarded (X-Forwarded-For, Forwarded)."""
    settings = Settings.from_env({**gateway_env, "GATEWAY_DEV_TOKEN_ENDPOINT": "true"})
    server = TestServer(create_app(settings), host="0.0.0.0")  # reachable on both
    await server.start_server()
    try:
        assert await dev_token_status(f"http://127.0.0.1:{server.port}/dev/token") == 200
        assert await dev_token_status(f"http://{lan_address}:{server.port}/dev/token") == 404
        async with aiohttp.ClientSession() as session:
            for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
                async with session.post(
                    f"http://127.0.0.1:{server.port}/dev/token", json={"user": "mallory"}, headers=header
                ) as response:
                    assert response.status == 404, header
    finally:
        await server.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "gateway.internal"])
def test_gateway_refuses_to_start_with_dev_tokens_on_a_non_loopback_host(host: str, redis_url: str) -> None:
    """`python -m streaming_gateway` exits 2 naming GATEWAY_DEV_TOKEN_ENDPOINT when GATEWAY_HOST is not loopback."""
    env = {
        "PATH": os.environ["PATH"],
        "AUTH_JWT_SECRET": SECRET,
        "REDIS_URL": redis_url,
        "GATEWAY_HOST": host,
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_DEV_TOKEN_ENDPOINT": "true",
    }
    result = subprocess.run(
        [sys.executable, "-m", "streaming_gateway"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-500:]
    assert "GATEWAY_DEV_TOKEN_ENDPOINT" in result.stderr and "GATEWAY_HOST" in result.stderr


async def test_metrics_on_their_own_port(start_gateway: StartGateway) -> None:
    """With GATEWAY_METRICS_PORT set, /metrics answers there (Prometheus text) and is 404 on the API port."""
    port = free_port()
    gateway = await start_gateway(GATEWAY_METRICS_PORT=str(port))
    async with gateway.request("GET", "/metrics", user=None) as response:
        assert response.status == 404
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            assert "gateway_active_streams" in await response.text()
        async with session.get(f"http://127.0.0.1:{port}/v1/conversations") as response:
            assert response.status == 404


async def test_websocket_ticket_is_single_use_and_the_query_token_is_off(
    gateway: Gateway, start_gateway
) -> None:
    """POST /v1/ws/tickets gives a short-lived ticket that opens one WebSocket as its user, once; the
    JWT in ?access_token= is refused unless GATEWAY_WS_QUERY_TOKEN allows it."""
    async with gateway.request("POST", "/v1/ws/tickets") as response:
        assert response.status == 201 and response.headers["Cache-Control"] == "no-store"
        issued = await response.json()
    assert 0 < issued["expires_in"] <= 60 and len(issued["ticket"]) >= 32
    async with gateway.session.ws_connect(gateway.url(f"/v1/ws?ticket={issued['ticket']}")) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}
    for query in (f"ticket={issued['ticket']}", "ticket=forged", f"access_token={make_token('alice')}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await gateway.session.ws_connect(gateway.url(f"/v1/ws?{query}"))
        assert raised.value.status == 401, query
    legacy = await start_gateway(GATEWAY_WS_QUERY_TOKEN="true")
    async with legacy.session.ws_connect(legacy.url(f"/v1/ws?access_token={make_token('alice')}")) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}


async def test_web_client_keeps_the_token_out_of_every_url(
    start_gateway: StartGateway, script, page: Page
) -> None:
    """Signing in and chatting over the WebSocket, no URL the page requests or opens carries the token."""
    gateway = await start_gateway(GATEWAY_DEV_TOKEN_ENDPOINT="true", GATEWAY_HEARTBEAT_SECONDS="5")
    await script([{"match": "", "reply": "fine"}])
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))
    await open_signed_in(page, gateway)
    await send(page, "hello")
    await wait_answer_done(page, last_answer(page))
    assert any(url.startswith("ws") for url in urls)
    assert [url for url in urls if "access_token" in url or "eyJ" in url] == []
