"""`python -m function_app.worker.events raise <instance id> <event name> [json]`: raise an external
event on a running instance of the local worker (what `client.raise_event` does on the host).

It is queued in the instance's inbox and the instance is made due; the worker that leases it next
moves it into the history, where `wait_for_external_event(<event name>)` receives it. An instance
that is not running takes no events (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agent_contracts.redis_connection import AnyRedis, connect
from agent_contracts.settings import SettingsError
from function_app.settings import Settings
from function_app.worker import history as h
from function_app.worker.engine import now
from function_app.worker.instances import InstanceStore


async def raise_event(redis: AnyRedis, instance_id: str, name: str, data: object) -> bool:
    return await InstanceStore(redis).raise_event(instance_id, h.event_raised(now(), name, json.dumps(data)))


async def run(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="python -m function_app.worker.events", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    raising = sub.add_parser("raise", help="raise an external event on a running instance")
    raising.add_argument("instance_id")
    raising.add_argument("name")
    raising.add_argument("data", nargs="?", default="null", help="the event's data as JSON (default null)")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        parser.error(f"data is not JSON: {exc}")
    redis = await connect(settings.redis_url, settings.redis_mode)
    try:
        if not await raise_event(redis, args.instance_id, args.name, data):
            print(f"error: {args.instance_id} is not a running instance", file=sys.stderr)
            return 1
    finally:
        await redis.aclose()
    print(f"{args.name} raised on {args.instance_id}")
    return 0


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(sys.argv[1:], settings))


if __name__ == "__main__":
    sys.exit(main())
