"""The Service Bus trigger: each message on the actions queue starts at most one orchestration.

The classic binding is used with autoCompleteMessages: the host completes the message when this
function returns and abandons it (immediate redelivery, then Service Bus's own dead-letter subqueue
after maxDeliveryCount) when it raises. So it raises only as a last resort: an invalid message is
written to our dead-letter store and completed, a failed start backs off inside the invocation and
then by a scheduled re-send (function_app.accept), and invalid settings hold the message for a while
before giving it back, so the deliveries run out in many minutes, not seconds, while the one
CRITICAL line the alert rule matches is out. See docs/decisions.md for why not the SDK-type binding.
"""

from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func

from agent_contracts.settings import SettingsError
from function_app.accept import accept_message
from function_app.runtime import current_runtime
from function_app.starter import DurableClientStarter

bp = df.Blueprint()

#: How long a message is held when the settings are invalid, before it is given back to the bus.
SETTINGS_ERROR_HOLD_S = 60.0


@bp.function_name("accept_action")
@bp.service_bus_queue_trigger(
    arg_name="msg", queue_name="%SERVICEBUS_ACTIONS_QUEUE%", connection="ServiceBusConnection"
)
@bp.durable_client_input(client_name="client")
async def accept_action(msg: func.ServiceBusMessage, client: df.DurableOrchestrationClient) -> None:
    try:
        runtime = await current_runtime()
    except SettingsError:  # reported once by current_runtime; retrying now cannot help
        await asyncio.sleep(SETTINGS_ERROR_HOLD_S)
        raise
    await accept_message(
        msg.get_body(),
        msg.message_id or "unknown",
        msg.application_properties or msg.user_properties or {},
        DurableClientStarter(client),
        runtime.dead_letters,
        runtime.scheduler,
    )
