"""The Service Bus trigger: each message on the actions queue starts at most one orchestration.

The classic binding is used with autoCompleteMessages: the host completes the message when this
function returns and abandons it (redelivery, then Service Bus's own dead-letter queue after
maxDeliveryCount) when it raises. So an invalid message is written to our dead-letter store with
its reason and the function returns (completed: not retried), and a failed orchestration start
raises (abandoned: retried). See docs/decisions.md for why not the preview SDK-type binding.
"""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from function_app.runtime import current_runtime
from function_app.starter import DurableClientStarter, start_from_message

bp = df.Blueprint()


@bp.function_name("accept_action")
@bp.service_bus_queue_trigger(
    arg_name="msg", queue_name="%SERVICEBUS_ACTIONS_QUEUE%", connection="ServiceBusConnection"
)
@bp.durable_client_input(client_name="client")
async def accept_action(msg: func.ServiceBusMessage, client: df.DurableOrchestrationClient) -> None:
    runtime = await current_runtime()
    await start_from_message(
        msg.get_body(), msg.message_id or "unknown", DurableClientStarter(client), runtime.dead_letters
    )
