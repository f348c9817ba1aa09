"""The web client's routes on the real app: the page and its files, the sign-in config, the local-only
dev token endpoint (404 unless enabled), and the settings that drive them."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from agent_contracts.settings import SettingsError
from streaming_gateway.api.web_client import WEB_DIR
from streaming_gateway.settings import Settings
from tests.fixtures.gateway import SECRET, Gateway, StartGateway

AUTHORITY = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001"
ENTRA = {
    "WEB_ENTRA_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "WEB_ENTRA_AUTHORITY": AUTHORITY,
    "WEB_ENTRA_SCOPES": "api://agent-gateway/chat offline_access",
}


async def test_dev_token_endpoint_is_404_unless_enabled(gateway: Gateway) -> None:
    """Without GATEWAY_DEV_TOKEN_ENDPOINT=true there is no dev token endpoint at all."""
    async with gateway.request("POST", "/dev/token", user=None, json={"user": "mallory"}) as response:
        assert response.status == 404
    async with gateway.request("GET", "/client-config.json", user=None) as response:
        assert (await response.json()) == {"dev_token": False, "entra": None}


async def test_dev_token_signs_a_token_the_api_accepts(web_gateway: Gateway) -> None:
    """The enabled endpoint returns a short-lived token for the named user that /v1 accepts as that user."""
    async with web_gateway.request("POST", "/dev/token", user=None, json={"user": "erin"}) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert body["user"] == "erin" and body["expires_in"] == 3600
    headers = {"Authorization": f"Bearer {body['token']}"}
    async with web_gateway.request(
        "POST", "/v1/conversations", user=None, headers=headers, json={}
    ) as response:
        assert response.status == 201
    async with web_gateway.request("GET", "/v1/conversations", user="erin") as response:
        assert len((await response.json())["data"]) == 1


@pytest.mark.parametrize(
    "body",
    [{"user": ""}, {"user": "a" * 65}, {"user": "<script>"}, {"user": 5}, {"user": "ok", "admin": True}],
)
async def test_dev_token_rejects_bad_user_names(web_gateway: Gateway, body: dict[str, object]) -> None:
    """User names outside 1-64 of [A-Za-z0-9._@-], or extra fields, get the API's validation error (422)."""
    async with web_gateway.request("POST", "/dev/token", user=None, json=body) as response:
        assert response.status == 422
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"


async def test_dev_token_body_limit(web_gateway: Gateway) -> None:
    """A dev token request body over 1 KiB is refused with 413."""
    async with web_gateway.request(
        "POST",
        "/dev/token",
        user=None,
        data=b"{" + b" " * 2048 + b"}",
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 413


async def test_page_and_assets_are_served_with_a_strict_policy(gateway: Gateway) -> None:
    """GET / is the client with a same-origin-only script policy; its CSS and modules are served; no
    file escapes the web folder."""
    async with gateway.request("GET", "/", user=None) as response:
        assert response.status == 200 and response.content_type == "text/html"
        csp = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for path in re.findall(r'(?:src|href)="(/web/[^"]+)"', page):
        async with gateway.request("GET", path, user=None) as response:
            assert response.status == 200, path
    async with gateway.request("GET", "/web/js/app.js", user=None) as response:
        assert response.content_type in {"text/javascript", "application/javascript"}
    async with gateway.request("GET", "/web/../settings.py", user=None) as response:
        assert response.status in {403, 404}
    async with gateway.request("GET", "/web/%2e%2e/settings.py", user=None) as response:
        assert response.status in {403, 404}


def test_client_files_load_nothing_from_other_origins() -> None:
    """No file of the client pulls a script, style or font from a CDN (the page must work offline)."""
    for path in [*WEB_DIR.glob("*.html"), *WEB_DIR.glob("*.css"), *WEB_DIR.glob("js/*.js")]:
        text = path.read_text()
        assert not re.search(r"""(src|href)=["']https?://""", text), path
        assert not re.search(r"""import[^;]*from\s+["']https?://""", text), path
        assert "@import url(http" not in text, path


async def test_entra_config_is_served_and_the_policy_allows_its_authority(
    start_gateway: StartGateway,
) -> None:
    """With WEB_ENTRA_* set, the page is told the client id, authority, scopes and the vendored MSAL path."""
    gateway = await start_gateway(**ENTRA)
    async with gateway.request("GET", "/client-config.json", user=None) as response:
        config = await response.json()
    assert config["entra"] == {
        "client_id": ENTRA["WEB_ENTRA_CLIENT_ID"],
        "authority": AUTHORITY,
        "scopes": ["api://agent-gateway/chat", "offline_access"],
        "msal_script": "/web/vendor/msal-browser.min.js",
    }
    async with gateway.request("GET", config["entra"]["msal_script"], user=None) as response:
        assert response.status == 200 and "PublicClientApplication" in await response.text()
    async with gateway.request("GET", "/", user=None) as response:
        csp = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' https://login.microsoftonline.com" in csp
    assert "frame-src https://login.microsoftonline.com" in csp


async def test_entra_sign_in_is_offered_with_the_vendored_msal(
    page: Page, start_gateway: StartGateway
) -> None:
    """In the browser, Entra settings load MSAL.js from the gateway and offer the Entra sign-in button;
    without them MSAL is never loaded."""
    gateway = await start_gateway(**ENTRA)
    await page.goto(gateway.url("/"))
    await expect(page.get_by_role("button", name="Sign in with Microsoft Entra ID")).to_be_visible()
    assert await page.evaluate("typeof window.msal.PublicClientApplication") == "function"
    await expect(page.locator("#dev-form")).to_be_hidden()
    plain = await start_gateway()
    await page.goto(plain.url("/"))
    await expect(page.get_by_role("button", name="Sign in with token")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign in with Microsoft Entra ID")).to_be_hidden()
    assert await page.evaluate("typeof window.msal") == "undefined"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GATEWAY_DEV_TOKEN_ENDPOINT": "maybe"}, "GATEWAY_DEV_TOKEN_ENDPOINT"),
        ({"WEB_ENTRA_CLIENT_ID": "abc"}, "WEB_ENTRA_CLIENT_ID"),
        (
            {"WEB_ENTRA_CLIENT_ID": "abc", "WEB_ENTRA_AUTHORITY": "http://login.example/tenant"},
            "WEB_ENTRA_AUTHORITY",
        ),
    ],
)
def test_web_settings_are_checked(env: dict[str, str], variable: str) -> None:
    """Bad web client settings fail at start, naming the variable to fix."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTH_JWT_SECRET": SECRET, **env})
    assert variable in str(caught.value)


def test_dev_token_endpoint_needs_the_local_secret() -> None:
    """The dev endpoint cannot be enabled on a gateway that only trusts Entra ID (no HS256 secret)."""
    with pytest.raises(SettingsError, match="GATEWAY_DEV_TOKEN_ENDPOINT"):
        Settings.from_env(
            {"AUTH_JWKS_URL": "https://login.example/keys", "GATEWAY_DEV_TOKEN_ENDPOINT": "true"}
        )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_dev_token_endpoint_is_allowed_on_a_loopback_host(host: str) -> None:
    """Loopback addresses and `localhost` keep the dev endpoint (the non-loopback ones are refused:
    tests/security/test_web_surface.py)."""
    settings = Settings.from_env(
        {"AUTH_JWT_SECRET": SECRET, "GATEWAY_HOST": host, "GATEWAY_DEV_TOKEN_ENDPOINT": "true"}
    )
    assert settings.dev_token_endpoint
