"""What the Service Bus trigger (and the local worker's intake) does with one message, so that a
failure to start never turns into a tight redelivery loop.

Service Bus redelivers an abandoned message at once, and after `maxDeliveryCount` deliveries moves
it to the dead-letter subqueue: raising from the trigger on a task-hub storage blip would burn every
delivery in seconds. So a failed start is
1. retried inside the invocation after short waits (`START_RETRY_DELAYS_S`);
2. then re-sent as a scheduled message (a copy under a new message id, enqueued minutes later,
   doubling up to `RESEND_MAX_DELAY_S`) and this delivery completes;
3. and only after `MAX_START_RESENDS` re-sends (hours) raised, so the host abandons it and Service
   Bus dead-letters it after maxDeliveryCount, where `python -m function_app.deadletters` shows it.
A re-sent copy starts nothing twice: the instance id comes from the request's idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from action_bus.ports import ActionBusError, MessageScheduler
from function_app.deadletters_store import DeadLetterStore
from function_app.errors import OrchestrationStartFailed, StoreError
from function_app.starter import OrchestrationStarter, StartOutcome, start_from_message

log = logging.getLogger(__name__)

START_RETRY_DELAYS_S: tuple[float, ...] = (1.0, 4.0, 15.0)
RESEND_FIRST_DELAY_S = 60.0
RESEND_MAX_DELAY_S = 1800.0
MAX_START_RESENDS = 10
#: Application property counting the re-sends of one request's message.
RESENDS_PROPERTY = "start_resends"
RESEND_SUFFIX = "~resend"

AcceptOutcome = StartOutcome | Literal["rescheduled"]


def resend_delay_s(resends_so_far: int) -> float:
    return min(RESEND_MAX_DELAY_S, RESEND_FIRST_DELAY_S * 2.0 ** min(resends_so_far, 20))


def resend_message_id(message_id: str, number: int) -> str:
    """A new id per re-send (duplicate detection would drop the original id), traceable to it."""
    return f"{message_id.split(RESEND_SUFFIX)[0]}{RESEND_SUFFIX}{number}"


def _text(body: bytes | str) -> str:
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body


async def accept_message(
    body: bytes | str,
    message_id: str,
    properties: Mapping[str, Any],
    starter: OrchestrationStarter,
    dead_letters: DeadLetterStore,
    scheduler: MessageScheduler,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AcceptOutcome:
    """Start the message's orchestration, backing off as above. Raises only when every back-off
    is spent (or the re-send itself failed): the caller then abandons the message."""
    delays = START_RETRY_DELAYS_S
    failure: Exception | None = None
    for attempt in range(len(delays) + 1):
        try:
            return await start_from_message(body, message_id, starter, dead_letters)
        except (OrchestrationStartFailed, StoreError) as exc:
            failure = exc
            if attempt < len(delays):
                log.warning(
                    "message %s: start failed (%s); trying again in %.0fs", message_id, exc, delays[attempt]
                )
                await sleep(delays[attempt])
    assert failure is not None
    resends = _int(properties.get(RESENDS_PROPERTY))
    if resends >= MAX_START_RESENDS:
        log.error(
            "message %s: start failed after %d re-sends; giving it back to the bus: %s",
            message_id,
            resends,
            failure,
        )
        raise failure
    delay = resend_delay_s(resends)
    copy_id = resend_message_id(message_id, resends + 1)
    copy_properties = {str(k): str(v) for k, v in properties.items()} | {RESENDS_PROPERTY: str(resends + 1)}
    try:
        await scheduler.schedule(copy_id, _text(body), copy_properties, now() + timedelta(seconds=delay))
    except ActionBusError as exc:
        log.error("message %s: start failed and the re-send failed too (%s)", message_id, exc)
        raise failure from exc
    log.warning(
        "message %s: start failed (%s); re-sent as %s, due in %.0fs (re-send %d of %d)",
        message_id,
        failure,
        copy_id,
        delay,
        resends + 1,
        MAX_START_RESENDS,
    )
    return "rescheduled"


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
