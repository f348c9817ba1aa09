"""The Service Bus-triggered function, called as the host calls it: a func.ServiceBusMessage and the
durable client binding's JSON. The Durable extension's HTTP API that the real
DurableOrchestrationClient talks to cannot run here (it lives in the Functions host), so a local
aiohttp server stands in for it: DurableExtensionApiTestDouble."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.durable_functions.models.utils.http_utils import _close_session
from azure.functions.meta import Datum
from azure.functions.servicebus import ServiceBusMessageInConverter

from function_app.app import build_app
from function_app.errors import OrchestrationStartFailed
from function_app.orchestration import ORCHESTRATOR, instance_id_for
from function_app.runtime import Runtime
from tests.function_app.helpers import make_request


@dataclass
class DurableExtensionApiTestDouble:
    """Test double of the Durable extension's RPC endpoints used by start_new and get_status."""

    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    fail_starts: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/durabletask/orchestrators/{name}/{iid}", self.start)
        app.router.add_get("/durabletask/instances/{iid}", self.status)
        return app

    async def start(self, request: web.Request) -> web.Response:
        if self.fail_starts:
            return web.json_response("task hub storage unavailable", status=500)
        iid = request.match_info["iid"]
        self.starts.append(iid)
        body = await request.json()  # the SDK sends the input JSON-encoded once more, as a string
        self.instances[iid] = {
            "name": request.match_info["name"],
            "instanceId": iid,
            "runtimeStatus": "Pending",
            "input": json.loads(body) if isinstance(body, str) else body,
        }
        return web.json_response({"id": iid}, status=202)

    async def status(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["iid"])
        if instance is None:
            return web.json_response("instance not found", status=404)
        return web.json_response(instance, status=202)


@pytest.fixture
async def extension() -> AsyncIterator[tuple[DurableExtensionApiTestDouble, str]]:
    double = DurableExtensionApiTestDouble()
    server = TestServer(double.app(), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/")).rstrip("/")
    binding = json.dumps(
        {
            "taskHubName": "actions",
            "creationUrls": {},
            "managementUrls": {},
            "rpcBaseUrl": f"{base}/durabletask/",
            "baseUrl": f"{base}/runtime/webhooks/durabletask",
            "requiredQueryStringParameters": "",
        }
    )
    yield double, binding
    await _close_session()  # the SDK keeps one module-level HTTP session; each test has its own loop
    await server.close()


def servicebus_message(body: bytes, message_id: str, delivery_count: int = 1) -> func.ServiceBusMessage:
    """Decoded by the library's own converter from the trigger data and metadata the host sends."""
    metadata = {
        "MessageId": Datum(json.dumps(message_id), "json"),
        "DeliveryCount": Datum(str(delivery_count), "json"),
        "ContentType": Datum(json.dumps("application/json"), "json"),
        "UserProperties": Datum(json.dumps({"action_name": "create_ticket"}), "json"),
    }
    return ServiceBusMessageInConverter.decode(Datum(body, "bytes"), trigger_metadata=metadata)


def accept_action() -> Any:
    return {f.get_function_name(): f for f in build_app().get_functions()}[
        "accept_action"
    ].get_user_function()


async def test_valid_message_starts_one_orchestration(runtime: Runtime, extension: Any) -> None:
    """A valid request starts the action orchestrator under the id derived from its idempotency key."""
    double, binding = extension
    request = make_request()
    await accept_action()(
        msg=servicebus_message(request.to_json().encode(), request.message_id), client=binding
    )
    iid = instance_id_for(request.idempotency_key)
    assert double.starts == [iid]
    assert double.instances[iid]["name"] == ORCHESTRATOR
    assert double.instances[iid]["input"]["actionId"] == str(request.action_id)


async def test_redelivered_message_does_not_start_another(runtime: Runtime, extension: Any) -> None:
    """The same message delivered again (and a copy with a new action id but the same key) starts nothing new."""
    double, binding = extension
    request = make_request()
    function = accept_action()
    await function(msg=servicebus_message(request.to_json().encode(), request.message_id), client=binding)
    await function(msg=servicebus_message(request.to_json().encode(), request.message_id, 2), client=binding)
    copy = make_request()  # new action id, same idempotency key
    await function(msg=servicebus_message(copy.to_json().encode(), copy.message_id), client=binding)
    assert len(double.starts) == 1


async def test_invalid_message_is_dead_lettered_with_reason(runtime: Runtime, extension: Any) -> None:
    """A body that is not an ActionRequest is stored as a dead letter with its reason and completes normally."""
    double, binding = extension
    await accept_action()(msg=servicebus_message(b'{"name": "create_ticket"}', "m-1"), client=binding)
    letters = await runtime.dead_letters.list()
    assert double.starts == []
    assert [(letter.id, letter.kind) for letter in letters] == [("message-m-1", "invalid_message")]
    assert (
        "not a valid ActionRequest" in letters[0].reason
        and letters[0].raw_body == '{"name": "create_ticket"}'
    )


async def test_non_json_message_is_dead_lettered(runtime: Runtime, extension: Any) -> None:
    """Bytes that are not JSON at all are dead-lettered too, not retried."""
    _, binding = extension
    await accept_action()(msg=servicebus_message(b"\xff\xfe not json", "m-2"), client=binding)
    assert [letter.id for letter in await runtime.dead_letters.list()] == ["message-m-2"]


async def test_start_failure_raises_so_the_host_retries(runtime: Runtime, extension: Any) -> None:
    """When the orchestration cannot be started the function raises: the host abandons the message."""
    double, binding = extension
    double.fail_starts = True
    request = make_request()
    with pytest.raises(OrchestrationStartFailed) as info:
        await accept_action()(
            msg=servicebus_message(request.to_json().encode(), request.message_id), client=binding
        )
    assert info.value.instance_id == instance_id_for(request.idempotency_key)
    assert await runtime.dead_letters.list() == []


def test_instance_ids_are_stable_and_distinct_per_replay() -> None:
    """The instance id depends only on the key (and the replay number) and fits the host's limits."""
    first, again = instance_id_for("conv-1:call_1"), instance_id_for("conv-1:call_1")
    replay = instance_id_for("conv-1:call_1", 1)
    assert first == again and replay != first and len(instance_id_for("k" * 128, 999)) <= 100
