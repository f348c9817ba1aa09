"""Builders and probes shared by the function app tests (and the suites that drive the pipeline)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from agent_contracts import ActionRequest, ActionResult
from function_app.results import ResultStore
from function_app.runtime import Runtime
from function_app.worker.instances import Instance, InstanceStore


def make_request(**overrides: Any) -> ActionRequest:
    fields: dict[str, Any] = {
        "idempotency_key": "conv-1:call_1",
        "conversation_id": "conv-1",
        "user_id": "alice",
        "name": "create_ticket",
        "arguments": {"title": "Printer on fire", "priority": "high"},
        "agent_config_version": "support@1",
        "trace_context": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    }
    fields.update(overrides)
    return ActionRequest(**fields)


def worker_tick(*workers: Any) -> Callable[[], Awaitable[None]]:
    """One step of each local worker, for `eventually(..., tick=...)`: take new messages, then run
    what is due. The real worker runs these as two loops; tests step them by hand."""

    async def tick() -> None:
        await asyncio.gather(*(worker.intake_once(0.05) for worker in workers))
        await asyncio.gather(*(worker.engine.run_due() for worker in workers))

    return tick


async def control(backend: TestServer, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, backend.make_url(path), json=body) as response:
            return await response.json()


async def read_if_present_emulator_has_no_404(
    runtime: Runtime, request: ActionRequest
) -> ActionResult | None:
    """A query, not a point read: the local Cosmos server answers a read of a missing item with 500 (real
    Cosmos DB: 404), and these tests look before the document exists."""
    container = runtime.results.container  # type: ignore[attr-defined]
    items = [
        item
        async for item in container.query_items(
            "SELECT * FROM c WHERE c.conversationId = @cid AND c.id = @id",
            parameters=[
                {"name": "@cid", "value": request.conversation_id},
                {"name": "@id", "value": str(request.action_id)},
            ],
            partition_key=request.conversation_id,
        )
    ]
    return ActionResult.model_validate(items[0]) if items else None


def final_result(
    runtime: Runtime, request: ActionRequest, replay_count: int = 0
) -> Callable[[], Awaitable[Any]]:
    async def check() -> ActionResult | None:
        found = await read_if_present_emulator_has_no_404(runtime, request)
        if found and found.status.is_final and found.replay_count == replay_count:
            return found
        return None

    return check


async def stored(store: InstanceStore, iid: str) -> Instance:
    """The instance the test started (so it exists)."""
    instance = await store.load(iid)
    assert instance is not None, f"{iid} was never started"
    return instance


def output_of(instance: Instance) -> Any:
    """The finished instance's output, decoded."""
    assert instance.output is not None, f"{instance.instance_id} has no output"
    return json.loads(instance.output)


async def read_stored(results: ResultStore, conversation_id: str, action_id: str) -> tuple[ActionResult, str]:
    """The result document (and its etag) the test wrote, so it exists."""
    found = await results.read(conversation_id, action_id)
    assert found is not None, f"no result document for {action_id}"
    return found
