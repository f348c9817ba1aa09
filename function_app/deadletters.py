"""`python -m function_app.deadletters list | show <id> | replay <id> | replay --all | purge-bus`

Everything that did not end succeeded or failed, in one place, with what to do about it:
- actions dead-lettered by the orchestrator (retries exhausted, or `orchestration failed: ...`),
  from the dead-letter store in Cosmos DB: replay publishes the same request with the next
  replay_count, which starts a fresh orchestration (same action id and Idempotency-Key, so a
  backend that did act on an earlier attempt does not act twice);
- invalid messages (listed with their reason; not replayable: fix the producer);
- Failed orchestration instances (`instance:<id>`): the local worker's, or the function app's through
  its Durable Functions HTTP API (DURABLE_TASK_API_URL, DURABLE_TASK_API_KEY); replayed like a
  dead letter, from the instance's input;
- messages in the actions queue's dead-letter subqueue (`bus:<id>`): Service Bus's own subqueue
  when SERVICEBUS_* is set, else the local broker's dead-letter stream; replay sends the message
  back to the queue, `purge-bus` drops them all after confirmation.
`show <id>` prints one of them whole: reason, description, attempt history, request or body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp

from action_bus.factory import create_action_bus, create_bus_dead_letters
from action_bus.ports import ActionBus, ActionBusError, BusDeadLetters, DeadMessage
from agent_contracts import ActionRequest
from agent_contracts.settings import SettingsError
from function_app.deadletters_store import DeadLetter, DeadLetterStore
from function_app.errors import PipelineError
from function_app.runtime import build_runtime, pipeline_redis
from function_app.settings import Settings
from function_app.task_hub import (
    DurableHttpFailedInstances,
    FailedInstance,
    FailedInstances,
    LocalFailedInstances,
)
from function_app.worker.instances import InstanceStore

log = logging.getLogger(__name__)

BUS_PREFIX = "bus:"
INSTANCE_PREFIX = "instance:"


@dataclass
class Row:
    id: str
    kind: str
    name: str | None
    attempts: int
    reason: str
    at: str
    replayable: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "detail"}


def _letter_row(letter: DeadLetter) -> Row:
    return Row(
        id=letter.id,
        kind=letter.kind,
        name=(letter.request or {}).get("name"),
        attempts=len(letter.attempt_history),
        reason=letter.reason,
        at=letter.dead_lettered_at.isoformat(),
        replayable=letter.kind == "action",
        detail={
            "request": letter.request,
            "rawBody": letter.raw_body,
            "attemptHistory": [a.model_dump(mode="json", by_alias=True) for a in letter.attempt_history],
            "replayCount": letter.replay_count,
        },
    )


def _instance_row(instance: FailedInstance) -> Row:
    return Row(
        id=INSTANCE_PREFIX + instance.instance_id,
        kind="failed_instance",
        name=(instance.request or {}).get("name"),
        attempts=0,
        reason=f"orchestration {instance.name} failed: {instance.error}",
        at=instance.last_updated,
        replayable=instance.request is not None,
        detail={"request": instance.request, "error": instance.error},
    )


def _bus_row(message: DeadMessage) -> Row:
    reason = message.reason + (f": {message.description}" if message.description else "")
    return Row(
        id=BUS_PREFIX + message.id,
        kind="bus_message",
        name=message.properties.get("action_name"),
        attempts=message.delivery_count,
        reason=reason,
        at=message.dead_lettered_at.isoformat() if message.dead_lettered_at else "",
        replayable=True,
        detail={"messageId": message.message_id, "body": message.body, "properties": message.properties},
    )


class DeadLetterTool:
    def __init__(
        self,
        store: DeadLetterStore,
        bus: ActionBus,
        bus_dead_letters: BusDeadLetters | None,
        instances: FailedInstances | None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.bus_dead_letters = bus_dead_letters
        self.instances = instances

    async def rows(self) -> list[Row]:
        rows = [_letter_row(letter) for letter in await self.store.list()]
        if self.instances is not None:
            rows.extend(_instance_row(i) for i in await self.instances.list_failed())
        if self.bus_dead_letters is not None:
            rows.extend(_bus_row(m) for m in await self.bus_dead_letters.peek(1000))
        return rows

    async def find(self, row_id: str) -> Row | None:
        return next((row for row in await self.rows() if row.id == row_id), None)

    async def _replay_request(self, request_json: dict[str, Any]) -> ActionRequest:
        original = ActionRequest.model_validate(request_json)
        replay = original.model_copy(update={"replay_count": original.replay_count + 1})
        await self.bus.publish(replay)
        return replay

    async def replay(self, row_id: str) -> str:
        if row_id.startswith(BUS_PREFIX):
            if self.bus_dead_letters is None or not await self.bus_dead_letters.replay(
                row_id[len(BUS_PREFIX) :]
            ):
                raise LookupError(f"no message {row_id} in the dead-letter subqueue")
            return f"{row_id}: back on the actions queue"
        if row_id.startswith(INSTANCE_PREFIX):
            iid = row_id[len(INSTANCE_PREFIX) :]
            failed = (
                next((i for i in await self.instances.list_failed() if i.instance_id == iid), None)
                if self.instances
                else None
            )
            if failed is None:
                raise LookupError(f"no Failed instance {iid}")
            if failed.request is None:
                raise ValueError(f"{row_id} has no request as its input; nothing to replay")
            replay = await self._replay_request(failed.request)
            assert self.instances is not None
            await self.instances.forget(iid)
            return f"{row_id}: replayed as run {replay.replay_count} ({replay.name})"
        letter = await self.store.get(row_id)
        if letter is None or letter.replayed_at is not None:
            raise LookupError(f"no dead letter {row_id} waiting for replay")
        if letter.kind != "action" or letter.request is None:
            raise ValueError(f"{row_id} is an invalid message ({letter.reason}); fix its producer instead")
        replay = await self._replay_request(letter.request)
        await self.store.mark_replayed(letter, replay.replay_count)
        return f"{row_id}: replayed as run {replay.replay_count} ({replay.name})"

    async def replay_all(self) -> list[str]:
        return [await self.replay(row.id) for row in await self.rows() if row.replayable]

    async def purge_bus(self) -> int:
        return await self.bus_dead_letters.purge() if self.bus_dead_letters is not None else 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m function_app.deadletters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(dest="command", required=True)
    listing = sub.add_parser(
        "list", help="show everything waiting: dead letters, Failed instances, the bus subqueue"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="one of them whole: reason, attempt history, request or body")
    show.add_argument("id")
    replay = sub.add_parser("replay", help="replay one, or all that can be replayed")
    replay.add_argument("id", nargs="?")
    replay.add_argument("--all", action="store_true")
    purge = sub.add_parser("purge-bus", help="drop every message in the actions queue's dead-letter subqueue")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return root


async def run(
    argv: list[str], settings: Settings, out: TextIO, *, confirm: Callable[[str], str] = input
) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.command == "replay" and bool(args.id) == bool(args.all):
        cli.error("replay takes an id or --all")

    redis = await pipeline_redis(settings)
    runtime = await build_runtime(settings, redis=redis)
    bus = create_action_bus(redis, settings)
    bus_dead_letters = create_bus_dead_letters(redis, settings)
    http = aiohttp.ClientSession()
    instances: FailedInstances | None
    if settings.durable_task_api_url and settings.durable_task_api_key:
        instances = DurableHttpFailedInstances(
            settings.durable_task_api_url, settings.durable_task_api_key, http
        )
    elif settings.uses_servicebus:
        instances = None  # Failed instances live in the function app's task hub: set DURABLE_TASK_API_URL
    else:
        instances = LocalFailedInstances(InstanceStore(redis))
    tool = DeadLetterTool(runtime.dead_letters, bus, bus_dead_letters, instances)
    try:
        return await _command(tool, args, out, confirm, instances is None)
    except (ActionBusError, PipelineError) as exc:
        out.write(f"error: {exc}\n")
        return 1
    finally:
        await http.close()
        await bus_dead_letters.close()
        await bus.close()
        await runtime.aclose()
        await redis.aclose()


async def _command(
    tool: DeadLetterTool,
    args: argparse.Namespace,
    out: TextIO,
    confirm: Callable[[str], str],
    no_instances: bool,
) -> int:
    if args.command == "list":
        rows = await tool.rows()
        for row in rows:
            if args.json:
                out.write(json.dumps(row.summary(), default=str) + "\n")
            else:
                out.write(f"{row.id}\t{row.kind}\t{row.name or '-'}\t{row.attempts}\t{row.reason}\n")
        if not args.json:
            out.write(f"{len(rows)} dead letter(s)\n")
            if no_instances:
                out.write("Failed instances not listed: set DURABLE_TASK_API_URL and DURABLE_TASK_API_KEY\n")
        return 0
    if args.command == "show":
        found = await tool.find(args.id)
        if found is None:
            out.write(f"error: nothing named {args.id}\n")
            return 1
        out.write(json.dumps({**found.summary(), **found.detail}, indent=2, default=str) + "\n")
        return 0
    if args.command == "purge-bus":
        waiting = len(await tool.bus_dead_letters.peek(1000)) if tool.bus_dead_letters else 0
        if waiting == 0:
            out.write("the dead-letter subqueue is empty\n")
            return 0
        if not args.yes:
            answer = confirm(
                f"drop {waiting}{'+' if waiting >= 1000 else ''} message(s) for good? type 'purge': "
            )
            if answer.strip() != "purge":
                out.write("not purged\n")
                return 1
        out.write(f"purged {await tool.purge_bus()} message(s)\n")
        return 0
    try:
        lines = await tool.replay_all() if args.all else [await tool.replay(args.id)]
    except (LookupError, ValueError) as exc:
        out.write(f"error: {exc}\n")
        return 1
    out.write("".join(line + "\n" for line in lines) or "nothing to replay\n")
    return 0


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
