"""python -m evaluation: offline runs, side-by-side comparison, online metrics, bisect.

    run      --config VERSION_OR_FILE --cases FILE [--threshold 0.9] [--repeat N] [--report out.json]
    compare  --cases FILE --a V1 --b V2 [--repeat N] [--report out.json]
    online   VERSION [VERSION ...]
    bisect   --agent AGENT --from V1 --to V2 --metric NAME [--tolerance 0.1] [--min-samples 20]
    export-feedback --max-rating 2 [--version V ...] [--out FILE]

Judged checks (`judge:` in a case) are graded by --judge-model on --judge-base-url (key
JUDGE_API_KEY, else OPENAI_API_KEY); in-process, the gateway's own upstream by default.

By default `run`/`compare` start the real gateway in this process on a free port, with a
private redis-server and the scripted upstream (`--script` to change its script,
`--model-base-url` for any OpenAI-compatible endpoint with OPENAI_API_KEY). `--gateway-url`
(with `--token` or EVAL_TOKEN, carrying the operator role: runs pin versions that are not the
active one) targets a running gateway instead; its registry is REDIS_URL.
Exit status: 0 passed, 1 below the threshold, 2 bad usage or input, 3 a service unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from agent_contracts.redis_connection import connect_from_env
from agent_registry import AgentRegistry, RegistryError, RegistryUnavailable, read_document
from evaluation.bisect import bisect_versions, render
from evaluation.cases import Case, load_cases
from evaluation.errors import EvaluationError
from evaluation.feedback_cases import export_feedback
from evaluation.harness import Target, in_process_gateway, remote_gateway
from evaluation.judge import Judge, openai_judge
from evaluation.report import compare_table, run_table, write_report
from evaluation.runner import run_cases
from observability.online import METRICS, OnlineMetrics

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Repeats multiply the run time; a hundred runs of a case pin its pass rate to a few points.
MAX_REPEAT = 100


def _redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description="Evaluate agent configurations."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    def gateway_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cases", required=True, help="YAML or JSONL file of cases")
        p.add_argument("--report", help="write the JSON report here")
        p.add_argument("--gateway-url", help="a running gateway (default: one started in this process)")
        p.add_argument("--token", default=os.environ.get("EVAL_TOKEN"), help="bearer token for --gateway-url")
        p.add_argument("--registry-url", default=None, help="Redis of the agent registry (default REDIS_URL)")
        p.add_argument("--model-base-url", help="OpenAI-compatible endpoint for the in-process gateway")
        p.add_argument("--script", help="scripted upstream script (in-process, default: the shipped one)")
        p.add_argument("--turn-timeout", type=float, default=120.0, help="seconds per turn before it fails")
        p.add_argument("--repeat", type=int, default=1, help="runs per case; the report gives each pass rate")
        p.add_argument(
            "--judge-base-url",
            help="OpenAI-compatible endpoint of the judge (default: the gateway's, in-process)",
        )
        p.add_argument(
            "--judge-model",
            default=os.environ.get("JUDGE_MODEL"),
            help="the judge's model (default gpt-4o-mini; the in-process scripted upstream ignores it)",
        )

    run = commands.add_parser("run", help="run cases against one config version or file")
    run.add_argument("--config", required=True, help="a published version (label@hash) or a config file")
    run.add_argument("--threshold", type=float, default=0.9, help="minimum pass rate (0-1), default 0.9")
    gateway_options(run)
    compare = commands.add_parser("compare", help="run cases against two configs and show them side by side")
    compare.add_argument("--a", required=True, help="version or file")
    compare.add_argument("--b", required=True, help="version or file")
    gateway_options(compare)
    online = commands.add_parser("online", help="online metrics of versions")
    online.add_argument("versions", nargs="*", help="versions (default: all with metrics, newest first)")
    online.add_argument("--json", action="store_true")
    bisect = commands.add_parser("bisect", help="walk the versions between two and show where a metric moved")
    bisect.add_argument("--agent", default="default")
    bisect.add_argument("--from", dest="start", required=True)
    bisect.add_argument("--to", dest="end", required=True)
    bisect.add_argument("--metric", required=True, choices=sorted(METRICS))
    bisect.add_argument(
        "--tolerance", type=float, default=0.1, help="relative change that counts (0.1 = 10%%)"
    )
    bisect.add_argument("--min-samples", type=int, default=20)
    bisect.add_argument("--json", action="store_true")
    export = commands.add_parser("export-feedback", help="write low-rated conversations as draft cases")
    export.add_argument("--max-rating", type=int, required=True, help="export ratings up to this (1-5)")
    export.add_argument("--version", dest="versions", action="append", help="only this version (repeatable)")
    export.add_argument("--out", help="write the YAML here (default: standard output)")
    return parser


async def _resolve(spec: str, registry_url: str) -> tuple[dict[str, Any], str]:
    """(document, version) of a config given as a file path or a published version."""
    from agent_registry.versioning import version_of

    if Path(spec).is_file():  # noqa: ASYNC240 (one stat before the run starts)
        document = read_document(spec)
        return document, version_of(document)
    client = await connect_from_env(registry_url, decode_responses=True, socket_connect_timeout=3)
    try:
        record = await AgentRegistry(client).get(spec)
    finally:
        await client.aclose()
    return record.document, record.version


def _target(args: argparse.Namespace, documents: list[dict[str, Any]]) -> AbstractAsyncContextManager[Target]:
    if args.gateway_url:
        if not args.token:
            raise EvaluationError("--gateway-url needs --token (or EVAL_TOKEN)")
        return remote_gateway(args.gateway_url, args.token, args.registry_url or _redis_url())
    return in_process_gateway(documents, model_base_url=args.model_base_url, script=args.script)


async def _publish_for_remote(args: argparse.Namespace, documents: list[dict[str, Any]]) -> None:
    """A config given as a file must be published where the running gateway looks it up."""
    if not args.gateway_url:
        return
    client = await connect_from_env(args.registry_url or _redis_url(), decode_responses=True)
    try:
        registry = AgentRegistry(client)
        for document in documents:
            await registry.publish(document, "evaluation")
    finally:
        await client.aclose()


@asynccontextmanager
async def _judge(args: argparse.Namespace, target: Target, cases: list[Case]) -> AsyncIterator[Judge | None]:
    """The judge for the cases' judged checks (None when no case has one)."""
    if not _has_judged_checks(cases):
        yield None
        return
    base_url = args.judge_base_url or target.llm_base_url
    if base_url is None:
        raise EvaluationError("the cases have judged checks: give --judge-base-url (and --judge-model)")
    if args.judge_base_url:
        api_key = os.environ.get("JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        if not api_key:
            raise EvaluationError("--judge-base-url needs JUDGE_API_KEY (or OPENAI_API_KEY)")
    else:
        api_key = target.llm_api_key or ""
    model = args.judge_model or (
        "gpt-4o-mini" if args.judge_base_url or args.model_base_url else target.model
    )
    judge = openai_judge(base_url, api_key, model)
    try:
        yield judge
    finally:
        await judge.close()


def _has_judged_checks(cases: list[Case]) -> bool:
    return any(turn.expect.judge for case in cases for turn in case.turns)


def _check_options(args: argparse.Namespace, cases: list[Case]) -> None:
    """Refuse what cannot work before anything is published or started."""
    if not 1 <= args.repeat <= MAX_REPEAT:
        raise EvaluationError(f"--repeat must be from 1 to {MAX_REPEAT}")
    if _has_judged_checks(cases) and args.gateway_url and not args.judge_base_url:
        raise EvaluationError("the cases have judged checks: give --judge-base-url (and --judge-model)")


async def command_run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.threshold <= 1.0:
        raise EvaluationError("--threshold must be between 0 and 1")
    cases = load_cases(args.cases)
    _check_options(args, cases)
    document, version = await _resolve(args.config, args.registry_url or _redis_url())
    await _publish_for_remote(args, [document])
    async with _target(args, [document]) as target, _judge(args, target, cases) as judge:
        run = await run_cases(
            target,
            cases,
            version,
            cases_file=args.cases,
            threshold=args.threshold,
            turn_timeout_s=args.turn_timeout,
            repeat=args.repeat,
            judge=judge,
        )
    print(run_table(run))
    if args.report:
        write_report(args.report, run.to_dict())
        print(f"report: {args.report}")
    return 0 if run.gate_passed else 1


async def command_compare(args: argparse.Namespace) -> int:
    cases = load_cases(args.cases)
    _check_options(args, cases)
    registry_url = args.registry_url or _redis_url()
    (doc_a, version_a), (doc_b, version_b) = (
        await _resolve(args.a, registry_url),
        await _resolve(args.b, registry_url),
    )
    await _publish_for_remote(args, [doc_a, doc_b])
    async with _target(args, [doc_a, doc_b]) as target, _judge(args, target, cases) as judge:
        run_a, run_b = [
            await run_cases(
                target,
                cases,
                version,
                cases_file=args.cases,
                turn_timeout_s=args.turn_timeout,
                repeat=args.repeat,
                judge=judge,
            )
            for version in (version_a, version_b)
        ]
    print(compare_table(run_a, run_b))
    if args.report:
        write_report(args.report, {"a": run_a.to_dict(), "b": run_b.to_dict()})
        print(f"report: {args.report}")
    return 0


async def command_online(args: argparse.Namespace) -> int:
    client = await connect_from_env(_redis_url(), decode_responses=True, socket_connect_timeout=3)
    try:
        metrics = OnlineMetrics(client)
        versions = args.versions or await metrics.versions()
        summaries = [m.summary() for m in await metrics.many(versions)]
    finally:
        await client.aclose()
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    print(
        f"{'version':<40} {'streams':>7} {'err%':>6} {'ttft_ms':>8} {'p95_ms':>7} {'actions':>7} {'ok%':>5} "
        f"{'fb_n':>5} {'fb_mean':>7}"
    )
    for s in summaries:

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.0%}"

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}" if value != float("inf") else "inf"

        def num2(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        print(
            f"{s['version']:<40} {s['streams']:>7} {pct(s['error_rate']):>6} {num(s['ttft_mean_ms']):>8} "
            f"{num(s['ttft_p95_ms']):>7} {s['actions']:>7} {pct(s['action_success_rate']):>5} "
            f"{s['feedback_count']:>5} {num2(s['feedback_mean']):>7}"
        )
    return 0


async def command_bisect(args: argparse.Namespace) -> int:
    client = await connect_from_env(_redis_url(), decode_responses=True, socket_connect_timeout=3)
    try:
        result = await bisect_versions(
            AgentRegistry(client),
            OnlineMetrics(client),
            args.agent,
            args.start,
            args.end,
            args.metric,
            tolerance=args.tolerance,
            min_samples=args.min_samples,
        )
    finally:
        await client.aclose()
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    return 0


async def command_export_feedback(args: argparse.Namespace) -> int:
    client = await connect_from_env(_redis_url(), decode_responses=True, socket_connect_timeout=3)
    try:
        export = await export_feedback(client, max_rating=args.max_rating, versions=args.versions)
    finally:
        await client.aclose()
    text = export.to_yaml(args.max_rating)
    if args.out:
        Path(args.out).write_text(text)  # noqa: ASYNC240 (one small write at the end)
    else:
        print(text, end="")
    print(
        f"{len(export.cases)} draft cases from {export.considered} ratings <= {args.max_rating}"
        f" ({export.expired} conversations expired)" + (f": {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": command_run,
    "compare": command_compare,
    "online": command_online,
    "bisect": command_bisect,
    "export-feedback": command_export_feedback,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s evaluation %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except (RegistryUnavailable, RedisError, ConnectionError) as exc:
        print(f"evaluation: a service is unreachable: {exc}", file=sys.stderr)
        return 3
    except (EvaluationError, RegistryError, ValueError) as exc:
        print(f"evaluation: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
