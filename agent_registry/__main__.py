"""python -m agent_registry: publish, list, activate, roll back and show agent configurations.

    python -m agent_registry publish FILE [--label L] [--activate]
    python -m agent_registry list AGENT
    python -m agent_registry activate AGENT VERSION
    python -m agent_registry rollback AGENT
    python -m agent_registry show VERSION

Redis is REDIS_URL (or --redis-url). Exit status: 0 done, 1 refused (unknown version, nothing
to roll back, invalid file), 2 bad usage, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import redis.asyncio as aioredis

from agent_registry.errors import RegistryError, RegistryUnavailable
from agent_registry.loader import read_document
from agent_registry.registry import AgentRegistry

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent_registry", description="Versioned agent configurations."
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("publish", help="publish a config file (YAML or JSON)")
    publish.add_argument("file")
    publish.add_argument("--label", help="human label (replaces the file's label)")
    publish.add_argument("--activate", action="store_true", help="make it the agent's active version")
    listing = commands.add_parser("list", help="an agent's versions, oldest first")
    listing.add_argument("agent")
    listing.add_argument("--json", action="store_true")
    activate = commands.add_parser("activate", help="make a version the agent's active one")
    activate.add_argument("agent")
    activate.add_argument("version")
    rollback = commands.add_parser("rollback", help="return to the previously active version")
    rollback.add_argument("agent")
    show = commands.add_parser("show", help="print one version's configuration")
    show.add_argument("version")
    return parser


async def run(args: argparse.Namespace, out=sys.stdout) -> int:
    client = aioredis.Redis.from_url(args.redis_url, decode_responses=True, socket_connect_timeout=3)
    registry = AgentRegistry(client)
    try:
        if args.command == "publish":
            record, created = await registry.publish(read_document(args.file, args.label), args.file)
            print(
                f"{'published' if created else 'already published'} {record.version} (agent {record.agent})",
                file=out,
            )
            if args.activate:
                result = await registry.activate(record.agent, record.version)
                print(_activation_line(result), file=out)
        elif args.command == "list":
            active = await registry.active_version(args.agent)
            records = await registry.versions(args.agent)
            if args.json:
                print(
                    json.dumps(
                        [
                            {
                                "version": r.version,
                                "label": r.label,
                                "published_at": r.published_at,
                                "active": r.version == active,
                            }
                            for r in records
                        ],
                        indent=2,
                    ),
                    file=out,
                )
            elif not records:
                print(f"agent {args.agent} has no published versions", file=out)
            else:
                for record in records:
                    marker = "*" if record.version == active else " "
                    print(
                        f"{marker} {record.version:<40} {record.published_at}"
                        f"  model={record.document.get('model')}",
                        file=out,
                    )
        elif args.command == "activate":
            print(_activation_line(await registry.activate(args.agent, args.version)), file=out)
        elif args.command == "rollback":
            print(_activation_line(await registry.rollback(args.agent)), file=out)
        elif args.command == "show":
            record = await registry.get(args.version)
            print(
                json.dumps(
                    {
                        "version": record.version,
                        "agent": record.agent,
                        "published_at": record.published_at,
                        **record.document,
                    },
                    indent=2,
                ),
                file=out,
            )
        return 0
    except RegistryUnavailable as exc:
        print(f"agent_registry: Redis at {args.redis_url} is unreachable: {exc}", file=sys.stderr)
        return 3
    except RegistryError as exc:
        print(f"agent_registry: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()


def _activation_line(result) -> str:
    if not result.changed:
        return f"agent {result.agent}: {result.version} is already active"
    return f"agent {result.agent}: active version is now {result.version} (was {result.previous or 'none'})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
