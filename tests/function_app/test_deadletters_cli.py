"""The dead-letter command against the real local pieces: Failed instances in the worker's Redis
instance store and the local broker's dead-letter stream (peek, show, replay, purge with
confirmation); and the Durable HTTP API adapter's JSON mapping against a test double of that API
(the Functions host cannot run here)."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from action_bus.local import ACTIONS_GROUP
from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest
from function_app import deadletters
from function_app.orchestration import ORCHESTRATOR, instance_id_for
from function_app.runtime import Runtime
from function_app.task_hub import DurableHttpFailedInstances, failed_from_status
from function_app.worker.engine import RedisStarter
from function_app.worker.instances import InstanceStore
from tests.function_app.helpers import make_request


async def cli(runtime: Runtime, *argv: str, answer: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = await deadletters.run(list(argv), runtime.settings, out, confirm=lambda _prompt: answer)
    return code, out.getvalue()


async def failed_instance(aredis: aioredis.Redis, request: ActionRequest) -> str:
    store = InstanceStore(aredis)
    iid = instance_id_for(request.idempotency_key)
    await RedisStarter(store).start(ORCHESTRATOR, iid, request.to_wire())
    assert await store.acquire(iid, "t", 5000)
    await store.append(iid, "t", [], final_status="Failed", output=json.dumps({"error": "Non-deterministic"}))
    return iid


async def test_failed_instance_is_listed_shown_and_replayed(runtime: Runtime, aredis: aioredis.Redis) -> None:
    """A Failed instance appears as instance:<id> with its error; replay publishes run 1 and it is listed no more."""
    request = make_request()
    iid = await failed_instance(aredis, request)
    code, listing = await cli(runtime, "list")
    assert code == 0 and f"instance:{iid}\tfailed_instance\tcreate_ticket" in listing
    assert "Non-deterministic" in listing
    code, shown = await cli(runtime, "show", f"instance:{iid}")
    assert code == 0 and json.loads(shown)["request"]["actionId"] == str(request.action_id)

    code, replayed = await cli(runtime, "replay", f"instance:{iid}")
    assert code == 0 and "replayed as run 1" in replayed
    queue = StreamQueue(aredis, runtime.settings.servicebus_actions_queue, ACTIONS_GROUP)
    [delivery] = await queue.receive(5, wait_s=0.1)
    assert ActionRequest.model_validate_json(delivery.body).replay_count == 1
    code, listing = await cli(runtime, "list")
    assert listing.strip().endswith("0 dead letter(s)")


async def poison(aredis: aioredis.Redis, runtime: Runtime) -> StreamQueue:
    """One message delivered and abandoned until the broker dead-letters it (MaxDeliveryCount 2)."""
    queue = StreamQueue(aredis, runtime.settings.servicebus_actions_queue, ACTIONS_GROUP, max_deliveries=2)
    await queue.send("m-poison", '{"name": "create_ticket"}', {"action_name": "create_ticket"})
    for _ in range(2):
        [delivery] = await queue.receive(1, wait_s=0.1)
        await queue.abandon(delivery.delivery_id)
    assert await queue.receive(1, wait_s=0.05) == []
    return queue


async def test_bus_dead_letter_is_peeked_explained_and_replayed(
    runtime: Runtime, aredis: aioredis.Redis
) -> None:
    """A message past MaxDeliveryCount shows as bus:<id> with the reason; replay puts it back on the queue."""
    queue = await poison(aredis, runtime)
    code, listing = await cli(runtime, "list", "--json")
    [row] = [json.loads(line) for line in listing.splitlines()]
    assert row["kind"] == "bus_message" and row["reason"].startswith("MaxDeliveryCountExceeded")
    assert row["attempts"] == 2 and row["replayable"] is True
    code, shown = await cli(runtime, "show", row["id"])
    assert json.loads(shown)["body"] == '{"name": "create_ticket"}'
    code, replayed = await cli(runtime, "replay", row["id"])
    assert code == 0 and "back on the actions queue" in replayed
    assert await queue.depth() == 1 and await queue.dead_entries() == []


async def test_purge_asks_and_respects_no(runtime: Runtime, aredis: aioredis.Redis) -> None:
    """purge-bus drops nothing unless the operator types 'purge' (or passes --yes)."""
    queue = await poison(aredis, runtime)
    code, said = await cli(runtime, "purge-bus", answer="y")
    assert code == 1 and "not purged" in said and len(await queue.dead_entries()) == 1
    code, said = await cli(runtime, "purge-bus", answer="purge")
    assert code == 0 and "purged 1 message(s)" in said and await queue.dead_entries() == []
    code, said = await cli(runtime, "purge-bus", "--yes")
    assert code == 0 and "empty" in said


def test_durable_api_status_maps_to_a_failed_instance() -> None:
    """The HTTP API's instance JSON (input as an object or a JSON string, output an error) maps field by field."""
    request = make_request().to_wire()
    for given in (request, json.dumps(request)):
        failed = failed_from_status(
            {
                "name": "action_orchestrator",
                "instanceId": "action-abc",
                "runtimeStatus": "Failed",
                "input": given,
                "output": "Orchestrator function 'action_orchestrator' failed: boom",
                "lastUpdatedTime": "2026-11-30T07:00:00Z",
            }
        )
        assert failed.instance_id == "action-abc" and failed.request == request
        assert failed.error.endswith("failed: boom") and failed.last_updated == "2026-11-30T07:00:00Z"
    assert failed_from_status({"instanceId": "x", "input": "not json"}).request is None


async def test_durable_api_adapter_pages_and_purges() -> None:
    """Against a test double of the Durable HTTP API: Failed instances over two pages, then a purge."""
    seen: list[tuple[str, dict[str, str]]] = []

    async def instances(request: web.Request) -> web.Response:
        seen.append(("GET", dict(request.query)))
        page = request.headers.get("x-ms-continuation-token")
        items: list[dict[str, Any]] = [
            {"instanceId": "b" if page else "a", "name": "action_orchestrator", "input": {}, "output": "x"}
        ]
        return web.json_response(items, headers={} if page else {"x-ms-continuation-token": "p2"})

    async def purge(request: web.Request) -> web.Response:
        seen.append(("DELETE", {"id": request.match_info["iid"], **request.query}))
        return web.json_response({"instancesDeleted": 1})

    app = web.Application()
    app.router.add_get("/runtime/webhooks/durabletask/instances", instances)
    app.router.add_delete("/runtime/webhooks/durabletask/instances/{iid}", purge)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            adapter = DurableHttpFailedInstances(
                str(server.make_url("/runtime/webhooks/durabletask")), "sys-key", http
            )
            assert [i.instance_id for i in await adapter.list_failed()] == ["a", "b"]
            await adapter.forget("a")
    finally:
        await server.close()
    assert seen[0] == ("GET", {"runtimeStatus": "Failed", "showInput": "true", "code": "sys-key"})
    assert seen[-1] == ("DELETE", {"id": "a", "code": "sys-key"})
