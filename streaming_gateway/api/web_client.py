"""The web chat client: `GET /` (the page), `/web/*` (its static files), `GET /client-config.json`
(how the page signs in), and `POST /dev/token` (local only: 404 unless GATEWAY_DEV_TOKEN_ENDPOINT, and
404 to any caller that is not on this machine).

None of these paths is under /v1/, so the auth middleware leaves them open; the page then calls
the API with the bearer token it got from the user, the dev endpoint or MSAL.js (Entra ID).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from urllib.parse import urlparse

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from streaming_gateway.api.request_models import read_body
from streaming_gateway.keys import settings_key
from streaming_gateway.settings import Settings
from streaming_gateway.token import make_token

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
DEV_TOKEN_TTL_S = 3600
MAX_DEV_TOKEN_BODY_BYTES = 1024
USER_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"


class DevTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(default="alice", pattern=USER_PATTERN)


def client_config(settings: Settings) -> dict[str, object]:
    """What the page needs to offer sign-in; no secret is in it."""
    entra = None
    if settings.web_entra_client_id and settings.web_entra_authority:
        scopes = (settings.web_entra_scopes or "").split()
        entra = {
            "client_id": settings.web_entra_client_id,
            "authority": settings.web_entra_authority,
            "scopes": scopes,
            "msal_script": "/web/vendor/msal-browser.min.js",
        }
    return {"dev_token": settings.dev_token_endpoint, "entra": entra}


def content_security_policy(settings: Settings) -> str:
    """Scripts and styles from this origin only (no inline script), so injected markup cannot run."""
    connect = ["'self'"]
    frame = ["'none'"]
    if settings.web_entra_authority:
        parsed = urlparse(settings.web_entra_authority)
        origin = f"{parsed.scheme}://{parsed.netloc}"
        connect.append(origin)
        frame = [origin]  # MSAL's silent token renewal uses a hidden iframe on the authority
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {' '.join(connect)}",
            f"frame-src {' '.join(frame)}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def page_headers(settings: Settings) -> dict[str, str]:
    """What every HTML response carries, whichever route served it: no framing by another origin
    (CSP frame-ancestors, and X-Frame-Options for older browsers), no MIME sniffing, no referrer,
    and a browsing context of its own (no opener from another origin)."""
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


async def add_page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the page's headers on every text/html response (`/`, `/web/index.html`
    from the static route, or any HTML added later), so no path serves the page without them."""
    if response.content_type == "text/html":
        response.headers.update(page_headers(request.app[settings_key]))
    else:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@routes.get("/client-config.json")
async def get_client_config(request: web.Request) -> web.Response:
    return web.json_response(client_config(request.app[settings_key]), headers={"Cache-Control": "no-store"})


#: Headers a proxy adds: a request carrying one came from somewhere else, whatever the peer is.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host")


def from_this_machine(request: web.Request) -> bool:
    """The TCP peer is a loopback address and no proxy forwarded the request (a local reverse
    proxy would make every remote caller look local)."""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False  # a Unix socket or a closed connection: nothing proves it is local
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address.is_loopback


@routes.post("/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    """A short-lived local HS256 token for the named user; exists only where explicitly enabled."""
    settings = request.app[settings_key]
    if not settings.dev_token_endpoint or not settings.auth_jwt_secret or not from_this_machine(request):
        raise web.HTTPNotFound()
    body = await read_body(request, DevTokenIn, max_bytes=MAX_DEV_TOKEN_BODY_BYTES, required=False)
    token = make_token(
        settings.auth_jwt_secret, body.user, DEV_TOKEN_TTL_S, settings.auth_issuer, settings.auth_audience
    )
    log.info("dev token issued for %s", body.user)
    return web.json_response(
        {"token": token, "user": body.user, "expires_in": DEV_TOKEN_TTL_S},
        headers={"Cache-Control": "no-store"},
    )


routes.static("/web", WEB_DIR, append_version=False)
