"""python -m agent_registry: publish, list, activate, roll back and show agent configurations.

    python -m agent_registry publish FILE [--label L] [--activate]
    python -m agent_registry list AGENT
    python -m agent_registry activate AGENT VERSION
    python -m agent_registry rollback AGENT
    python -m agent_registry show VERSION
    python -m agent_registry withdraw VERSION [--reason TEXT]    (unusable by everyone, for good)
    python -m agent_registry rollout AGENT VERSION --percent P   (start a canary, or change its share)
    python -m agent_registry promote AGENT                       (the candidate becomes active)
    python -m agent_registry abort AGENT [--reason TEXT]         (every new conversation on stable)
    python -m agent_registry status AGENT [--json]               (rollout, last analyses, log)
    python -m agent_registry analyze AGENT [--dry-run] [--json]  (compare; abort when worse)

Redis is REDIS_URL (or --redis-url). Exit status: 0 done, 1 refused (unknown version, nothing
to roll back, invalid file, no rollout, a withdrawn or active version), 2 bad usage, 3 Redis
unreachable. `analyze` says its decision in its status too, so a scheduled job can gate on it:
0 healthy, 4 wait (too few samples yet), 5 abort (the candidate is worse; the rollout was aborted,
or would have been without --dry-run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

from redis.exceptions import RedisError

from agent_contracts.redis_connection import AnyRedis, connect_from_env
from agent_contracts.settings import SettingsError
from agent_registry.canary import Policy, analyze, outcome, render
from agent_registry.errors import RegistryError, RegistryUnavailable
from agent_registry.loader import read_document
from agent_registry.registry import Activation, AgentRegistry, Rollout
from observability.online import OnlineMetrics

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: `analyze`'s exit status per decision (1-3 stay the errors every command shares).
ANALYZE_EXIT = {"healthy": 0, "wait": 4, "abort": 5}


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
    withdraw = commands.add_parser(
        "withdraw", help="make a version unusable by everyone (not the active one); cannot be undone"
    )
    withdraw.add_argument("version")
    withdraw.add_argument("--reason", default="", help="why (kept in the activation log)")
    rollout = commands.add_parser("rollout", help="send a share of new conversations to a candidate")
    rollout.add_argument("agent")
    rollout.add_argument("version")
    rollout.add_argument(
        "--percent", type=float, required=True, help="share of new conversations, above 0 up to 100"
    )
    promote = commands.add_parser("promote", help="make the rollout's candidate the active version")
    promote.add_argument("agent")
    abort = commands.add_parser("abort", help="stop the rollout: new conversations get the active version")
    abort.add_argument("agent")
    abort.add_argument("--reason", default="", help="why (kept in the activation log)")
    status = commands.add_parser("status", help="the rollout, its last analyses and the activation log")
    status.add_argument("agent")
    status.add_argument("--json", action="store_true")
    analysis = commands.add_parser(
        "analyze",
        help="compare candidate and stable on the online metrics; abort when it is worse",
        description="Compare the rollout's candidate with stable on the online metrics of unpinned "
        "conversations; abort the rollout when the candidate is worse.",
        epilog="exit status: 0 healthy, 4 wait (too few samples yet), 5 abort (candidate worse; "
        "aborted unless --dry-run), 1 no rollout under way, 2 bad usage, 3 Redis unreachable",
    )
    analysis.add_argument("agent")
    analysis.add_argument("--dry-run", action="store_true", help="decide and show, but abort nothing")
    analysis.add_argument("--json", action="store_true")
    defaults = Policy()
    analysis.add_argument("--alpha", type=float, default=defaults.alpha, help="significance level")
    analysis.add_argument("--min-streams", type=int, default=defaults.min_streams)
    analysis.add_argument("--min-actions", type=int, default=defaults.min_actions)
    analysis.add_argument("--min-feedback", type=int, default=defaults.min_feedback)
    return parser


async def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        client = await connect_from_env(args.redis_url, decode_responses=True, socket_connect_timeout=3)
    except SettingsError as exc:
        print(f"agent_registry: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"agent_registry: Redis at {args.redis_url} is unreachable: {exc}", file=sys.stderr)
        return 3
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
            withdrawn = await registry.withdrawn(args.agent)
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
                                "withdrawn": r.version in withdrawn,
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
                    marker = "*" if record.version == active else "x" if record.version in withdrawn else " "
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
        elif args.command == "withdraw":
            record = await registry.get(args.version)
            changed = await registry.withdraw(record.version, reason=args.reason)
            print(
                f"agent {record.agent}: {record.version} "
                + ("withdrawn" if changed else "was already withdrawn"),
                file=out,
            )
        elif args.command in ("rollout", "promote", "abort", "status", "analyze"):
            return await _canary_command(args, client, registry, out)
        return 0
    except (RegistryUnavailable, RedisError) as exc:
        print(f"agent_registry: Redis at {args.redis_url} is unreachable: {exc}", file=sys.stderr)
        return 3
    except RegistryError as exc:
        print(f"agent_registry: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an analysis threshold out of range
        print(f"agent_registry: {exc}", file=sys.stderr)
        return 2
    finally:
        await client.aclose()


async def _canary_command(
    args: argparse.Namespace, client: AnyRedis, registry: AgentRegistry, out: TextIO
) -> int:
    online = OnlineMetrics(client)
    if args.command == "rollout":
        # Each share gets its own comparison window: under a changed split the two sides would
        # otherwise be compared over different periods (and load).
        baseline: dict[str, dict[str, float]] = {}
        stable = await registry.active_version(args.agent)
        if stable is not None:
            candidate = (await registry.get(args.version)).version
            baseline = {m.version: m.counters for m in await online.many([stable, candidate])}
        started = await registry.start_rollout(args.agent, args.version, args.percent, baseline=baseline)
        print(_rollout_line(started), file=out)
    elif args.command == "promote":
        print(_activation_line(await registry.promote(args.agent)), file=out)
    elif args.command == "abort":
        ended = await registry.abort_rollout(args.agent, reason=args.reason)
        print(
            f"agent {args.agent}: rollout of {ended.candidate} aborted; new conversations get {ended.stable}",
            file=out,
        )
    elif args.command == "status":
        rollout = await registry.rollout(args.agent)
        analyses = await registry.analyses(args.agent, limit=5)
        entries = await registry.activation_log(args.agent, limit=10)
        if args.json:
            status: dict[str, Any] = {
                "agent": args.agent,
                "active": await registry.active_version(args.agent),
                "rollout": rollout.to_dict() if rollout else None,
                "analyses": analyses,
                "log": entries,
            }
            print(json.dumps(status, indent=2), file=out)
            return 0
        print(f"agent {args.agent}: active {await registry.active_version(args.agent) or 'none'}", file=out)
        print(_rollout_line(rollout) if rollout else "no rollout under way", file=out)
        for record in analyses:
            print(
                f"  analysis {record['at']}: {record['decision']}: {record['reason']}{outcome(record)}",
                file=out,
            )
        print("activation log (newest first):", file=out)
        for entry in entries:
            print("  " + _log_line(entry), file=out)
    elif args.command == "analyze":
        policy = Policy(
            alpha=args.alpha,
            min_streams=args.min_streams,
            min_actions=args.min_actions,
            min_feedback=args.min_feedback,
        )
        result = await analyze(registry, online, args.agent, policy, apply=not args.dry_run)
        print(json.dumps(result.to_dict(), indent=2) if args.json else render(result), file=out)
        return ANALYZE_EXIT[result.decision]
    return 0


def _rollout_line(rollout: Rollout) -> str:
    return (
        f"agent {rollout.agent}: rollout of {rollout.candidate} at {rollout.percent:g}% of new conversations "
        f"(stable {rollout.stable}, since {rollout.started_at})"
    )


def _log_line(entry: dict[str, Any]) -> str:
    action = entry.get("action", "?")
    line = f"{entry.get('at', '?')} {action:<8} {entry.get('version', '')}"
    if action == "rollout":
        line += f" at {entry.get('percent'):g}% (stable {entry.get('previous')})"
    elif action in ("abort", "withdraw"):
        line += f" (stable {entry.get('previous')})"
    elif entry.get("previous"):
        line += f" (was {entry['previous']})"
    if entry.get("rollout_ended") and entry["rollout_ended"] != entry.get("version"):
        line += f", ending the rollout of {entry['rollout_ended']}"
    if entry.get("reason"):
        line += f": {entry['reason']}"
    return f"{line} [{entry.get('actor', '?')}, epoch {entry.get('epoch')}]"


def _activation_line(result: Activation) -> str:
    if not result.changed:
        return f"agent {result.agent}: {result.version} is already active"
    return f"agent {result.agent}: active version is now {result.version} (was {result.previous or 'none'})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
