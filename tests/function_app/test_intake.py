"""The Service Bus-triggered function, called as the host calls it: a func.ServiceBusMessage and the
durable client binding's JSON. The Durable extension's HTTP API that the real
DurableOrchestrationClient talks to cannot run here (it lives in the Functions host), so a local
aiohttp server stands in for it: DurableExtensionApiTestDouble."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.durable_functions.models.utils.http_utils import _close_session
from azure.functions.meta import Datum
from azure.functions.servicebus import ServiceBusMessage, ServiceBusMessageInConverter

from action_bus.redis_streams import StreamQueue
from agent_contracts.settings import SettingsError
from function_app import accept
from function_app import runtime as runtime_module
from function_app.app import build_app
from function_app.blueprints import intake
from function_app.errors import OrchestrationStartFailed
from function_app.orchestration import ORCHESTRATOR, instance_id_for
from function_app.runtime import SETTINGS_ALERT, Runtime, use_runtime
from tests.function_app.helpers import make_request
from tests.redis_reads import scored_members


@dataclass
class DurableExtensionApiTestDouble:
    """Test double of the Durable extension's RPC endpoints used by start_new and get_status."""

    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    fail_starts: bool = False
    #: Fail only this many starts, then accept (a task-hub storage blip).
    failing_starts: int = 0
    #: Answer "not found" to this many status lookups although the instance exists: another delivery's
    #: start landed between this delivery's check and its start.
    status_misses: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/durabletask/orchestrators/{name}/{iid}", self.start)
        app.router.add_get("/durabletask/instances/{iid}", self.status)
        return app

    async def start(self, request: web.Request) -> web.Response:
        if self.fail_starts or self.failing_starts > 0:
            self.failing_starts -= 1
            return web.json_response("task hub storage unavailable", status=500)
        iid = request.match_info["iid"]
        existing = self.instances.get(iid)
        if existing is not None and existing["runtimeStatus"] in ("Pending", "Running"):
            # overridableExistingInstanceStates: NonRunningStates refuses the start
            return web.json_response(f"An instance with ID {iid} already exists.", status=409)
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
        if self.status_misses > 0:
            self.status_misses -= 1
            instance = None
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


def servicebus_message(
    body: bytes, message_id: str, delivery_count: int = 1, properties: dict[str, Any] | None = None
) -> func.ServiceBusMessage:
    """Decoded by the library's own converter from the trigger data and metadata the host sends."""
    user_properties = {"action_name": "create_ticket", **(properties or {})}
    metadata = {
        "MessageId": Datum(json.dumps(message_id), "json"),
        "DeliveryCount": Datum(str(delivery_count), "json"),
        "ContentType": Datum(json.dumps("application/json"), "json"),
        "UserProperties": Datum(json.dumps(user_properties), "json"),
        "ApplicationProperties": Datum(json.dumps(user_properties), "json"),
    }
    message = ServiceBusMessageInConverter.decode(Datum(body, "bytes"), trigger_metadata=metadata)
    assert isinstance(message, ServiceBusMessage)  # one message: the trigger is not in batch mode
    return message


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


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-invocation back-off and the settings hold, without the wall-clock waits."""
    monkeypatch.setattr(accept, "START_RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    monkeypatch.setattr(intake, "SETTINGS_ERROR_HOLD_S", 0.0)


async def scheduled_copies(runtime: Runtime) -> list[tuple[dict[str, Any], float]]:
    queue = StreamQueue(runtime.scheduler.queue.redis, runtime.settings.servicebus_actions_queue, "g")  # type: ignore[attr-defined]
    return [
        (json.loads(member), score)
        for member, score in await scored_members(queue.redis, queue.scheduled_key)
    ]


async def test_start_blip_is_retried_inside_the_invocation(runtime: Runtime, extension: Any) -> None:
    """Two failed starts (task-hub storage blip) then a good one: started, nothing re-sent, nothing raised."""
    double, binding = extension
    double.failing_starts = 2
    request = make_request()
    await accept_action()(
        msg=servicebus_message(request.to_json().encode(), request.message_id), client=binding
    )
    assert double.starts == [instance_id_for(request.idempotency_key)]
    assert await scheduled_copies(runtime) == []


async def test_start_outage_reschedules_instead_of_abandoning(runtime: Runtime, extension: Any) -> None:
    """Starts keep failing: the message is re-sent for a minute later under a new id, and this delivery completes."""
    double, binding = extension
    double.fail_starts = True
    request = make_request()
    before = time.time()
    await accept_action()(
        msg=servicebus_message(request.to_json().encode(), request.message_id), client=binding
    )
    [(copy, due)] = await scheduled_copies(runtime)
    assert copy["mid"] == f"{request.message_id}~resend1"
    assert json.loads(copy["body"]) == json.loads(request.to_json())
    assert json.loads(copy["props"])[accept.RESENDS_PROPERTY] == "1"
    assert before + accept.RESEND_FIRST_DELAY_S - 1 <= due <= time.time() + accept.RESEND_FIRST_DELAY_S + 1
    assert await runtime.dead_letters.list() == []


async def test_start_outage_past_every_resend_gives_the_message_back(
    runtime: Runtime, extension: Any
) -> None:
    """The last re-send failing too: the function raises, so the host abandons it (Service Bus DLQ after maxDeliveryCount)."""
    double, binding = extension
    double.fail_starts = True
    request = make_request()
    message = servicebus_message(
        request.to_json().encode(),
        f"{request.message_id}~resend{accept.MAX_START_RESENDS}",
        properties={accept.RESENDS_PROPERTY: accept.MAX_START_RESENDS},
    )
    with pytest.raises(OrchestrationStartFailed) as info:
        await accept_action()(msg=message, client=binding)
    assert info.value.instance_id == instance_id_for(request.idempotency_key)
    assert await scheduled_copies(runtime) == []


def test_resend_delays_double_and_cap() -> None:
    """Re-sends wait 1, 2, 4 ... minutes, at most 30; ids stay traceable to the original."""
    delays = [accept.resend_delay_s(n) for n in range(accept.MAX_START_RESENDS)]
    assert delays[:3] == [60.0, 120.0, 240.0] and max(delays) == accept.RESEND_MAX_DELAY_S
    assert accept.resend_message_id("m~resend3", 4) == "m~resend4"


async def test_concurrent_start_refusal_reads_as_already_started(runtime: Runtime, extension: Any) -> None:
    """Another delivery started the instance between this one's check and its start: the refusal is a duplicate, not a failure."""
    double, binding = extension
    request = make_request()
    function = accept_action()
    await function(msg=servicebus_message(request.to_json().encode(), request.message_id), client=binding)
    double.status_misses = 1  # the next check does not see it yet
    await function(
        msg=servicebus_message(request.to_json().encode(), f"{request.message_id}-copy"), client=binding
    )
    assert double.starts == [instance_id_for(request.idempotency_key)]
    assert await scheduled_copies(runtime) == []


async def test_invalid_settings_alert_once_and_hold_the_message(
    extension: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing setting: every delivery raises (nothing can start), but the CRITICAL alert line is logged once."""
    _, binding = extension
    monkeypatch.delenv("COSMOS_ENDPOINT", raising=False)
    monkeypatch.setattr(runtime_module, "_reported", set())
    use_runtime(None)
    request = make_request()
    function = accept_action()
    for delivery in (1, 2, 3):
        with pytest.raises(SettingsError):
            await function(
                msg=servicebus_message(request.to_json().encode(), request.message_id, delivery),
                client=binding,
            )
    alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(alerts) == 1
    assert alerts[0].getMessage().startswith(f"{SETTINGS_ALERT} variable=COSMOS_ENDPOINT")


def test_instance_ids_are_stable_and_distinct_per_replay() -> None:
    """The instance id depends only on the key (and the replay number) and fits the host's limits."""
    first, again = instance_id_for("conv-1:call_1"), instance_id_for("conv-1:call_1")
    replay = instance_id_for("conv-1:call_1", 1)
    assert first == again and replay != first and len(instance_id_for("k" * 128, 999)) <= 100
