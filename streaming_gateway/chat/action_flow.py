"""The action half of a turn: tool calls to durable action requests, status updates to events,
and the model's continuation once every action of a step is final.

Owned by the `ChatEngine` (engine.py), which hands it a `continue_model` callback: the flow
decides when a step may continue, the engine runs the model. The dependency goes one way only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError
from redis.exceptions import RedisError

from agent_contracts import ActionRequest, ActionResult, ActionStatus
from agent_contracts.events import ActionStatusEvent, MessageEndEvent, ToolCallEvent
from agent_registry import AgentConfig, InvalidToolCall
from agent_registry.tool_arguments import check_arguments, parse_arguments
from observability import producer_span
from observability.online import OnlineMetrics
from streaming_gateway.chat.overrides import Overrides
from streaming_gateway.chat.pending_steps import PendingCall, PendingSteps
from streaming_gateway.chat.running_answers import StepControl
from streaming_gateway.chat.trace_context import child_trace_context
from streaming_gateway.errors import ConversationGone
from streaming_gateway.llm.port import Finish, ToolCall
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.state.conversation_store import Conversation, ConversationStore, new_id, now_iso
from streaming_gateway.state.stream_log import StreamLog

log = logging.getLogger(__name__)


class ActionOutbox(Protocol):
    """What the flow needs of action_bus.outbox.Outbox."""

    async def accept_all(self, requests: list[ActionRequest]) -> list[bool]: ...


#: Starts the model's next round of a turn: (conversation, turn id, round).
ContinueModel = Callable[[Conversation, str, int], None]


class ActionFlow:
    def __init__(
        self,
        *,
        store: ConversationStore,
        log_: StreamLog,
        pending: PendingSteps,
        outbox: ActionOutbox,
        metrics: GatewayMetrics,
        online: OnlineMetrics | None,
        turn_timeout_s: float,
        continue_model: ContinueModel,
    ) -> None:
        self.store = store
        self.log = log_
        self.pending = pending
        self.outbox = outbox
        self.metrics = metrics
        self.online = online
        self.turn_timeout_s = turn_timeout_s
        self.continue_model = continue_model

    async def queue(
        self,
        conversation: Conversation,
        control: StepControl,
        message_id: str,
        text: str,
        finish: Finish,
        config: AgentConfig,
        round_: int,
        overrides: Overrides,
    ) -> None:
        """The model asked for actions: register the step, accept each request, tell the followers."""
        cid = conversation.id
        requests: list[ActionRequest] = []
        pending: list[PendingCall] = []
        refused: dict[str, str] = {}
        for call in finish.tool_calls:
            action_id = uuid.uuid4()
            tool = config.tool(call.name)
            try:
                if tool is None:
                    raise InvalidToolCall(f"unknown tool {call.name!r}")
                arguments = parse_arguments(call.arguments)
                check_arguments(tool.parameters, arguments)
                requests.append(
                    ActionRequest(
                        action_id=action_id,
                        idempotency_key=f"{cid}:{call.id}",
                        conversation_id=cid,
                        user_id=conversation.user_id,
                        name=tool.action,
                        arguments=arguments,
                        agent_config_version=config.version,
                        tool_call_id=call.id,
                        trace_context=child_trace_context(overrides.traceparent),
                    )
                )
            except (InvalidToolCall, ValidationError) as exc:
                refused[call.id] = json.dumps({"status": "failed", "error": str(exc)})
            pending.append(PendingCall(call.id, call.name, str(action_id)))
        await self.pending.register(cid, message_id, control.turn_id, round_, pending, refused)
        await self.store.save_message(
            cid,
            message_id,
            "assistant",
            text,
            version=config.version,
            finish_reason="tool_calls",
            tool_calls=[call.openai_shape() for call in finish.tool_calls],
        )
        await self.store.extend_turn(cid, control.turn_id, self.turn_timeout_s)
        # The step's requests go to the outbox in one write, all or none: a step half accepted ends
        # in an error the client answers by sending again, and the model's new tool calls would
        # repeat the half already taken under new idempotency keys.
        traced: list[ActionRequest] = []
        for request in requests:
            # The queued event below is the client's; the pipeline's own queued update is then a repeat.
            await self.pending.first_sighting(str(request.action_id), f"{ActionStatus.queued.value}:0")
            # The request carries this span's W3C context: the function app continues the same trace.
            with producer_span(
                f"action {request.name} queue",
                {"agent.action_id": str(request.action_id), "agent.action": request.name},
            ) as (_, carrier):
                traced.append(request.model_copy(update={"trace_context": carrier or request.trace_context}))
        accepted = await self.outbox.accept_all(traced) if traced else []
        for request, fresh in zip(traced, accepted, strict=True):
            if fresh:
                self.metrics.actions_queued.labels(request.name).inc()
            else:
                log.info("action %s was already accepted", request.idempotency_key)
        events: list[Any] = []
        for call, entry in zip(finish.tool_calls, pending, strict=False):
            events.append(
                ToolCallEvent(
                    id=1,
                    conversation_id=cid,
                    message_id=message_id,
                    tool_call_id=call.id,
                    name=call.name,
                    arguments=arguments_or_raw(call),
                    action_id=entry.action_id,
                )
            )
            failed = call.id in refused
            events.append(
                ActionStatusEvent(
                    id=1,
                    conversation_id=cid,
                    message_id=message_id,
                    action_id=entry.action_id,
                    name=call.name,
                    status="failed" if failed else "queued",
                    error=json.loads(refused[call.id])["error"] if failed else None,
                )
            )
        events.append(tool_calls_end(cid, message_id, finish, config))
        await self.log.append(cid, *events)
        if len(refused) == len(pending):
            await self._continue(cid, message_id)

    async def on_update(self, update: ActionResult) -> None:
        """One status update from the pipeline: tell the followers; continue once the step is complete."""
        info = await self.pending.action(update.id)
        if info is None:
            log.info("update for unknown or expired action %s (%s) ignored", update.id, update.status.value)
            return
        self.metrics.action_updates.labels(update.status.value).inc()
        await self._record_outcome(update)
        cid = info.conversation_id
        try:
            if await self.pending.first_sighting(update.id, f"{update.status.value}:{update.attempts}"):
                await self.log.append(
                    cid,
                    ActionStatusEvent(
                        id=1,
                        conversation_id=cid,
                        message_id=info.step_id,
                        action_id=update.id,
                        name=info.name,
                        status=update.status.value,
                        attempts=update.attempts,
                        max_attempts=update.max_attempts,
                        result=update.result,
                        error=update.error,
                    ),
                )
            if update.status.is_final:
                content = json.dumps(
                    {"status": update.status.value, "result": update.result, "error": update.error},
                    default=str,
                )
                if await self.pending.record_result(cid, info.step_id, info.tool_call_id, content):
                    await self._continue(cid, info.step_id)
        except ConversationGone:
            log.info("action %s finished after its conversation %s was deleted", update.id, cid)

    async def _record_outcome(self, update: ActionResult) -> None:
        """Count a final outcome once per action, by the config version that asked for it."""
        if not update.status.is_final or not await self.pending.first_sighting(update.id, "outcome"):
            return
        self.metrics.action_outcomes.labels(
            self.metrics.version(update.agent_config_version), update.status.value
        ).inc()
        if self.online is not None:
            try:
                pinned = await self.store.is_pinned(update.conversation_id)
                await self.online.record_action(
                    update.agent_config_version, update.status.value, pinned=pinned
                )
            except (RedisError, OSError) as exc:
                log.warning("online action outcome for %s not recorded: %s", update.agent_config_version, exc)

    async def _continue(self, cid: str, step_id: str) -> None:
        """Append the tool results and continue the model, once per step whatever the deliveries."""
        if not await self.pending.claim_continuation(cid, step_id):
            return
        step = await self.pending.info(cid, step_id)
        conversation = await self.store.get(cid)
        if step is None or conversation is None:
            return
        results = await self.pending.results(cid, step_id)
        stamp = now_iso()
        await self.store.append_messages(
            cid,
            *(
                {
                    "id": new_id("msg"),
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": results.get(call_id, ""),
                    "created_at": stamp,
                    "agent_config_version": conversation.agent_config_version,
                }
                for call_id in step.tool_call_ids
            ),
        )
        if await self.store.turn_holder(cid) != step.turn_id:
            log.info("turn %s in %s was cancelled while its actions ran: not continuing", step.turn_id, cid)
            return
        await self.store.extend_turn(cid, step.turn_id, self.turn_timeout_s)
        self.continue_model(conversation, step.turn_id, step.round + 1)


def arguments_or_raw(call: ToolCall) -> dict[str, Any]:
    try:
        return parse_arguments(call.arguments)
    except InvalidToolCall:
        return {"_raw": call.arguments}


def tool_calls_end(cid: str, message_id: str, finish: Finish, config: AgentConfig) -> MessageEndEvent:
    """The end of a step that asked for tool calls (the agent's actions or the caller's own tools)."""
    return MessageEndEvent(
        id=1,
        conversation_id=cid,
        message_id=message_id,
        finish_reason="tool_calls",
        usage=finish.usage,
        agent_config_version=config.version,
    )
