"""`python -m function_app.deadletters list | replay <id> | replay --all`

Lists what was dead-lettered and replays it after a fix:
- actions that exhausted their retries (the dead-letter store in Cosmos DB): replay publishes the
  same request with the next replay_count, which starts a fresh orchestration (same action id and
  Idempotency-Key, so a backend that did act on an earlier attempt does not act twice);
- messages the local broker gave up on after WORKER_MAX_DELIVERIES (ids `stream:<entry id>`):
  replay puts them back on the actions stream;
- invalid messages are listed with their reason and cannot be replayed (fix the producer).
In Azure the same command works with SERVICEBUS_* set (replays go to the Service Bus queue);
messages in Service Bus's own dead-letter subqueue are handled with Service Bus Explorer (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any, TextIO

import redis.asyncio as aioredis

from action_bus.factory import create_action_bus
from action_bus.local import ACTIONS_GROUP
from action_bus.ports import ActionBus
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest
from agent_contracts.settings import SettingsError
from function_app.deadletters_store import DeadLetterStore
from function_app.runtime import build_runtime
from function_app.settings import Settings

log = logging.getLogger(__name__)

STREAM_PREFIX = "stream:"


class DeadLetterTool:
    def __init__(self, store: DeadLetterStore, bus: ActionBus, broker_queue: StreamQueue | None) -> None:
        self.store = store
        self.bus = bus
        self.broker_queue = broker_queue

    async def rows(self) -> list[dict[str, Any]]:
        rows = [
            {
                "id": letter.id,
                "kind": letter.kind,
                "reason": letter.reason,
                "name": (letter.request or {}).get("name"),
                "attempts": len(letter.attempt_history),
                "at": letter.dead_lettered_at.isoformat(),
                "replayable": letter.kind == "action",
            }
            for letter in await self.store.list()
        ]
        if self.broker_queue is not None:
            for entry in await self.broker_queue.dead_entries():
                rows.append(
                    {
                        "id": STREAM_PREFIX + entry.dead_id,
                        "kind": "broker_message",
                        "reason": entry.reason,
                        "name": None,
                        "attempts": entry.delivery_count,
                        "at": entry.dead_lettered_at,
                        "replayable": True,
                    }
                )
        return rows

    async def replay(self, letter_id: str) -> str:
        if letter_id.startswith(STREAM_PREFIX):
            if self.broker_queue is None or not await self.broker_queue.requeue_dead(
                letter_id[len(STREAM_PREFIX) :]
            ):
                raise LookupError(f"no broker dead letter {letter_id}")
            return f"{letter_id}: back on the actions stream"
        letter = await self.store.get(letter_id)
        if letter is None or letter.replayed_at is not None:
            raise LookupError(f"no dead letter {letter_id} waiting for replay")
        if letter.kind != "action" or letter.request is None:
            raise ValueError(f"{letter_id} is an invalid message ({letter.reason}); fix its producer instead")
        original = ActionRequest.model_validate(letter.request)
        replay = original.model_copy(update={"replay_count": original.replay_count + 1})
        await self.bus.publish(replay)
        await self.store.mark_replayed(letter, replay.replay_count)
        return f"{letter_id}: replayed as run {replay.replay_count} ({replay.name})"

    async def replay_all(self) -> list[str]:
        done = []
        for row in await self.rows():
            if row["replayable"]:
                done.append(await self.replay(row["id"]))
        return done


async def run(argv: list[str], settings: Settings, out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m function_app.deadletters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="show dead letters")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = sub.add_parser("replay", help="replay one dead letter, or all")
    replay.add_argument("id", nargs="?")
    replay.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "replay" and bool(args.id) == bool(args.all):
        parser.error("replay takes an id or --all")

    redis = aioredis.Redis.from_url(settings.redis_url)
    runtime = await build_runtime(settings, redis=redis)
    bus = create_action_bus(redis, settings)
    broker = (
        None
        if settings.uses_servicebus
        else StreamQueue(redis, settings.servicebus_actions_queue, ACTIONS_GROUP)
    )
    tool = DeadLetterTool(runtime.dead_letters, bus, broker)
    try:
        if args.command == "list":
            rows = await tool.rows()
            for row in rows:
                if args.json:
                    out.write(json.dumps(row, default=str) + "\n")
                else:
                    out.write(
                        f"{row['id']}\t{row['kind']}\t{row['name'] or '-'}\t"
                        f"{row['attempts']}\t{row['reason']}\n"
                    )
            if not args.json:
                out.write(f"{len(rows)} dead letter(s)\n")
            return 0
        try:
            lines = await tool.replay_all() if args.all else [await tool.replay(args.id)]
        except (LookupError, ValueError) as exc:
            out.write(f"error: {exc}\n")
            return 1
        out.write("".join(line + "\n" for line in lines) or "nothing to replay\n")
        return 0
    finally:
        await bus.close()
        await runtime.aclose()
        await redis.aclose()


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(sys.argv[1:], settings, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
