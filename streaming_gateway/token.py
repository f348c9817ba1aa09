"""Print a local HS256 token: python -m streaming_gateway.token --user alice [--ttl 3600] [--role R].

Signed with AUTH_JWT_SECRET, with AUTH_ISSUER / AUTH_AUDIENCE when set, so the gateway started
with the same environment accepts it. For local use only: production tokens come from Entra ID.
"""

from __future__ import annotations

import argparse
import sys
import time

import jwt

from agent_contracts.settings import Env


def make_token(
    secret: str,
    user: str,
    ttl_s: int,
    issuer: str | None = None,
    audience: str | None = None,
    roles: list[str] | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": user, "iat": now, "nbf": now, "exp": now + ttl_s}
    if roles:
        claims["roles"] = roles
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streaming_gateway.token", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--user", required=True, help="the user id (the token's sub claim)")
    parser.add_argument(
        "--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)"
    )
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        help="an app role for the token's roles claim (repeatable), e.g. Agents.Operator",
    )
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    env = Env()
    secret = env.str("AUTH_JWT_SECRET")
    if secret is None:
        # `make dev` embeds its secret; `make token` beside it should just work. (The container
        # image has no local_stack: there the variable must be set.)
        try:
            from local_stack.dev import DEV_JWT_SECRET
        except ImportError:
            print(
                "streaming_gateway.token: setting AUTH_JWT_SECRET: is required and not set", file=sys.stderr
            )
            return 2
        print(
            "streaming_gateway.token: AUTH_JWT_SECRET not set; using the local dev stack's secret",
            file=sys.stderr,
        )
        secret = DEV_JWT_SECRET
    print(
        make_token(
            secret, args.user, args.ttl, env.str("AUTH_ISSUER"), env.str("AUTH_AUDIENCE"), roles=args.role
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
