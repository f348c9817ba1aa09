"""Turn one bus message into at most one orchestration, for the Functions trigger and the local
worker alike: validate, derive the instance id from the idempotency key, start unless an instance
already exists (whatever its status), and dead-letter a message that is not a valid action.

The existence check is only the fast path: two deliveries of one request can both pass it. The
start itself is refused for an instance id that is Pending or Running (host.json
`overridableExistingInstanceStates: NonRunningStates` on Azure, an atomic create in the local
worker), and that refusal is read as "already started", never as a failure.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from agent_contracts import ActionRequest
from function_app.deadletters_store import DeadLetter, DeadLetterStore
from function_app.errors import InstanceAlreadyExists, OrchestrationStartFailed
from function_app.orchestration import ORCHESTRATOR, instance_id_for
from observability import consumer_span, log_context, mark_error

log = logging.getLogger(__name__)

MAX_RAW_BODY_KEPT = 64 * 1024

StartOutcome = Literal["started", "duplicate", "dead_lettered"]


class OrchestrationStarter(Protocol):
    async def exists(self, instance_id: str) -> bool: ...

    async def start(self, orchestrator: str, instance_id: str, input_: dict[str, Any]) -> None:
        """Raises InstanceAlreadyExists when an instance with this id is pending or running."""
        ...


class DurableClientStarter:
    """The Functions host's durable client (an HTTP API of the Durable extension)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def exists(self, instance_id: str) -> bool:
        status = await self.client.get_status(instance_id)
        return status is not None and status.runtime_status is not None

    async def start(self, orchestrator: str, instance_id: str, input_: dict[str, Any]) -> None:
        try:
            await self.client.start_new(orchestrator, instance_id, input_)
        except Exception as exc:  # the client raises a bare Exception carrying the extension's answer
            # With NonRunningStates the extension refuses a start over a pending or running instance
            # (OrchestrationAlreadyExistsException); the client does not say which error it was, so
            # the instance's existence decides. Anything else is a real failure to start.
            if await self.exists(instance_id):
                raise InstanceAlreadyExists(instance_id) from exc
            raise


def parse_request(body: bytes | str) -> ActionRequest:
    return ActionRequest.model_validate_json(body)


async def start_from_message(
    body: bytes | str, message_id: str, starter: OrchestrationStarter, dead_letters: DeadLetterStore
) -> StartOutcome:
    """Raises OrchestrationStartFailed when the start itself failed: the message must not be completed."""
    try:
        request = parse_request(body)
    except ValidationError as exc:
        reason = f"not a valid ActionRequest: {exc.error_count()} errors: {exc.errors()[0]['msg']}"
        raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        await dead_letters.put(
            DeadLetter(
                id=f"message-{message_id}",
                kind="invalid_message",
                reason=reason,
                raw_body=raw[:MAX_RAW_BODY_KEPT],
            )
        )
        log.warning("message %s dead-lettered: %s", message_id, reason)
        return "dead_lettered"
    instance_id = instance_id_for(request.idempotency_key, request.replay_count)
    # The message continues the trace the gateway started for the user's turn.
    with (
        consumer_span(
            f"actions receive {request.name}",
            request.trace_context,
            {"agent.action_id": str(request.action_id), "messaging.message.id": message_id},
            kind=SpanKind.CONSUMER,
            tracer_name="function_app",
        ) as span,
        log_context(
            conversation_id=request.conversation_id,
            config_version=request.agent_config_version,
            action_id=str(request.action_id),
        ),
    ):
        try:
            if await starter.exists(instance_id):
                log.info(
                    "action %s: orchestration %s exists; redelivery ignored", request.action_id, instance_id
                )
                span.set_attribute("agent.start_outcome", "duplicate")
                return "duplicate"
            await starter.start(ORCHESTRATOR, instance_id, request.to_wire())
        except InstanceAlreadyExists:
            log.info("action %s: a concurrent delivery started %s first", request.action_id, instance_id)
            span.set_attribute("agent.start_outcome", "duplicate")
            return "duplicate"
        except Exception as exc:  # any failure to start: re-raised so the message is retried, never lost
            mark_error(span, exc)
            raise OrchestrationStartFailed(instance_id, f"{type(exc).__name__}: {exc}") from exc
        span.set_attribute("agent.start_outcome", "started")
        log.info("action %s (%s): started orchestration %s", request.action_id, request.name, instance_id)
    return "started"
