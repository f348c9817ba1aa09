"""Where the gateway's added time to first token goes, stage by stage, for one stream at a time.

`python bench/staged_gateway.py serve` runs the real gateway (`streaming_gateway.__main__`) with its
stages timed: before it starts, the functions a streamed `/v1/chat/completions` passes through are
wrapped to note the first time each stage is reached in that request (a context variable follows
the request into its answer task and log writer). When the request ends, the stages (ms after the
request reached the app) are appended as one JSON line to BENCH_STAGES_OUT. It is a file run by
path, importing only the gateway, so a baseline tree's gateway (`python -P`, PYTHONPATH=<tree>)
can be timed the same way.

`bench/stages.py` (`BENCH_ONLY=stages`) starts it, and with BENCH_BASELINE a baseline gateway
timed the same way, sends single streams alternating between them and the direct upstream, and
prints the median of each stage.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

#: A chunk carrying text (not the opening `"content": ""`).
TEXT = re.compile(rb'"content": ?"[^"]')
#: The request's stages: name -> seconds (perf_counter) when first reached.
_STAGES: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("stages", default=None)


def mark(name: str) -> None:
    stages = _STAGES.get()
    if stages is not None and name not in stages:
        stages[name] = time.perf_counter()


def _around(owner: Any, attribute: str, before: str | None, after: str | None) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        if before:
            mark(before)
        result = await original(*args, **kwargs)
        if after:
            mark(after)
        return result

    setattr(owner, attribute, timed)


def _first_yield(owner: Any, attribute: str, name: str) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in original(*args, **kwargs):
            if item is not None:
                mark(name)
            yield item

    setattr(owner, attribute, timed)


def install(out_path: str) -> None:
    """Wrap the stages of a streamed chat completion (names as in bench/README.md)."""
    import httpx2
    from aiohttp import web, web_app

    from streaming_gateway.api import middlewares
    from streaming_gateway.chat.engine import ChatEngine
    from streaming_gateway.llm import openai_adapter
    from streaming_gateway.state.conversation_store import ConversationStore
    from streaming_gateway.state.limits import RateLimiter, StreamSlots
    from streaming_gateway.state.log_follower import Follower
    from streaming_gateway.state.stream_log import StreamLog

    handle: Callable[..., Any] = web_app.Application._handle

    async def timed_handle(self: Any, request: web.BaseRequest) -> Any:
        if request.path != "/v1/chat/completions":
            return await handle(self, request)
        stages = {"arrived": time.perf_counter()}
        token = _STAGES.set(stages)
        try:
            return await handle(self, request)
        finally:
            _STAGES.reset(token)
            start = stages["arrived"]
            line = {k: round((v - start) * 1000, 3) for k, v in stages.items()}
            line["arrived_at"] = start  # perf_counter: comparable with the client's on this machine
            with open(out_path, "a") as out:  # noqa: ASYNC230 (a bench-only line after the response)
                out.write(json.dumps(line) + "\n")

    web_app.Application._handle = timed_handle  # type: ignore[method-assign]
    _around(middlewares, "authenticate", None, "authenticated")
    # Between authentication and the turn's setup: the body read, the agent's lookup (after the
    # body's parsing) and the follower's subscription. `read_raw` as the handler's module imported
    # it; a tree without it has no body_read stage.
    from streaming_gateway.agents.catalog import AgentCatalog
    from streaming_gateway.api import chat_completions

    if hasattr(chat_completions, "read_raw"):
        _around(chat_completions, "read_raw", None, "body_read")
    _around(AgentCatalog, "resolve", None, "agent_resolved")
    _around(Follower, "__aenter__", None, "following")
    _around(RateLimiter, "hit", None, "rate_limited")
    _around(ConversationStore, "create", "create_start", "created")
    _around(StreamSlots, "acquire", None, "slot_taken")
    _around(ConversationStore, "begin_turn", "begin_turn_start", "begin_turn_done")
    try:  # a turn's setup in one round trip (a baseline from before it has neither)
        from streaming_gateway.state.limits import UserGate
        from streaming_gateway.state.turn_setup import TurnSetup
    except ImportError:
        pass
    else:
        _around(TurnSetup, "run", "setup_start", "setup_done")
        _around(UserGate, "admit", None, "user_steps_done")
    _around(ChatEngine, "_step", "answer_task_started", None)
    _around(httpx2.AsyncClient, "send", "upstream_request_sent", "upstream_headers")
    # The decoder's first yield (a list of chunks per read since the adapter's sse.py; before, a chunk).
    decoder = "sse_json" if hasattr(openai_adapter, "sse_json") else "_sse_json"
    _first_yield(openai_adapter, decoder, "upstream_first_chunk")
    if hasattr(StreamLog, "write"):
        # Every log write is one script here; a producer's claim of the ids (no entries) is no append.
        log_write = StreamLog.write

        @functools.wraps(log_write)
        async def timed_log_write(self: Any, conversation_id: str, triples: Any, **options: Any) -> Any:
            if triples:
                mark("first_append_start")
            result = await log_write(self, conversation_id, triples, **options)
            if triples:
                mark("first_append_done")
            return result

        StreamLog.write = timed_log_write  # type: ignore[method-assign]
    else:
        _around(StreamLog, "append", "first_append_start", "first_append_done")
    _first_yield(Follower, "entries", "follower_first_entry")
    write = web.StreamResponse.write

    async def timed_write(self: web.StreamResponse, data: Any) -> None:
        mark("first_client_write")
        await write(self, data)
        if TEXT.search(bytes(data)):
            mark("client_first_token_written")

    web.StreamResponse.write = timed_write  # type: ignore[method-assign]


def serve() -> int:
    install(os.environ["BENCH_STAGES_OUT"])
    from streaming_gateway.__main__ import main

    return main()


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit("usage: python bench/staged_gateway.py serve")
    sys.exit(serve())
