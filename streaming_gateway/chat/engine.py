"""The chat core: runs one assistant step at a time into the conversation's stream log.

A step calls the model, appends token events as they come, and ends with `message_end`. When
the model asks for backend actions, the engine's `ActionFlow` (action_flow.py) turns each into an
ActionRequest accepted by the outbox (durable) before the client hears of it; the step ends with
finish_reason `tool_calls`, and when every action is final (reported by `on_action_update`, on
whichever pod) the model continues in the same log. Clients never talk to this module: they
follow the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from action_bus.ports import ActionBusError
from agent_contracts import ActionResult
from agent_contracts.events import ErrorEvent, MessageEndEvent, TokenEvent, ToolCallEvent
from agent_registry import AgentConfig
from observability.online import OnlineMetrics
from streaming_gateway.agents.registry_store import AgentConfigStore
from streaming_gateway.chat.action_flow import ActionFlow, ActionOutbox, arguments_or_raw, tool_calls_end
from streaming_gateway.chat.history import to_model_messages
from streaming_gateway.chat.overrides import Overrides
from streaming_gateway.chat.pending_steps import PendingSteps
from streaming_gateway.chat.running_answers import RunningAnswers, StepControl
from streaming_gateway.chat.step_telemetry import StepTelemetry
from streaming_gateway.errors import ConversationGone, GatewayError, RateLimited, as_gateway_error
from streaming_gateway.llm.port import ChatModel, ChatRequest, Finish, TextDelta
from streaming_gateway.metrics import GatewayMetrics
from streaming_gateway.settings import Settings
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import (
    Conversation,
    ConversationStore,
    TurnRequest,
    Watcher,
    new_id,
    now_iso,
    stamped,
)
from streaming_gateway.state.limits import UserStep
from streaming_gateway.state.stream_log import Claim, LogWriter, StreamLog, owned_by_turn, step_token
from streaming_gateway.state.turn_setup import TurnSetup

log = logging.getLogger(__name__)

#: What the error event says when a dependency fails mid-answer (by error code).
MID_ANSWER_FAILURES = {
    "state_unavailable": "conversation state was unavailable mid-answer; send the message again",
    "actions_unavailable": "the action could not be queued; send the message again",
}


class ChatEngine:
    def __init__(
        self,
        *,
        settings: Settings,
        store: ConversationStore,
        log_: StreamLog,
        pending: PendingSteps,
        llm: ChatModel,
        configs: AgentConfigStore,
        outbox: ActionOutbox,
        answers: RunningAnswers,
        metrics: GatewayMetrics,
        online: OnlineMetrics | None,
        setup: TurnSetup,
    ) -> None:
        self.settings = settings
        self.store = store
        #: A turn's user-keyed steps beside its begin_turn.
        self.setup = setup
        self.log = log_
        self.llm = llm
        self.configs = configs
        self.answers = answers
        self.metrics = metrics
        #: Per-version online aggregates in Redis (None: not recorded).
        self.online = online
        self.actions = ActionFlow(
            store=store,
            log_=log_,
            pending=pending,
            outbox=outbox,
            metrics=metrics,
            online=online,
            turn_timeout_s=settings.turn_timeout_s,
            continue_model=self._continue_model,
        )

    async def start_turn(
        self,
        conversation: Conversation,
        new_messages: list[dict[str, Any]],
        overrides: Overrides | None = None,
        *,
        watcher: Watcher | None = None,
        user: UserStep | None = None,
        create: bool = False,
    ) -> int:
        """Store the caller's messages and start answering; returns the log id clients read after.

        One Redis round trip takes the turn (state/conversation_store.py begin_turn): the lock, the
        messages, the `watcher` lease of the follower opened for it, the model's history and the
        log's ids for the first step (the turn id its owner token); with `create` it also writes
        `conversation` (from `store.new`). With `user`, the user's script
        (state/limits.py: the request's count, the stream slot, a new conversation's index entry)
        goes with it: at once for a new conversation, else just before (state/turn_setup.py).
        Nothing is taken when either refuses."""
        config = await self._config(conversation)
        turn_id = new_id("turn")
        new = [
            {
                "id": new_id("msg"),
                "created_at": now_iso(),
                "turn_id": turn_id,
                "agent_config_version": conversation.agent_config_version,
                **m,
            }
            for m in new_messages
        ]

        turn = TurnRequest(
            conversation.id,
            turn_id,
            new,
            max_messages=self.settings.max_messages_per_conversation,
            busy_ttl_s=self.settings.turn_timeout_s,
            history=config.limits.max_history_messages,
            watcher=watcher,
            create=conversation if create else None,
            take_ids=True,  # the first step's log ids: no claim script of its own
        )
        if user is None:
            start = await self.store.begin(turn)
        else:
            try:
                start = await self.setup.run(conversation.user_id, user, turn)
            except RateLimited as exc:
                self.metrics.rate_limit_rejections.labels(exc.limit).inc()
                raise
        overrides = overrides or Overrides()
        self.answers.start(
            conversation.id,
            turn_id,
            lambda control: self._step(conversation, control, 0, overrides, start.history, start.ids),
            watched=True,
        )
        return start.after

    async def cancel(self, conversation: Conversation) -> bool:
        """Stop the answer in progress (on any pod); False when nothing was being answered."""
        cid = conversation.id
        turn_id = await self.store.turn_holder(cid)
        if turn_id is None:
            return False
        if self.answers.cancel(cid, "cancelled"):
            return True
        redis = self.store.redis
        # The model runs somewhere while its pod's watchdog renews `producing` (from its first
        # check, a tick into the answer) or while one of the turn's steps owns the log's ids (from
        # the turn's begin_turn, or a continuation's claim): that pod's watchdog stops it.
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(redis_keys.producing(cid))
            pipe.get(redis_keys.log_owner(cid))
            producing, owner = await pipe.execute()
        if producing == turn_id or owned_by_turn(owner, turn_id):
            await redis.set(redis_keys.cancel(cid), turn_id, ex=60)
            return True
        # Waiting for actions: end the turn here; the continuation sees the lock gone and stays quiet.
        if await self.store.release_turn(cid, turn_id):
            config = await self._config(conversation)
            await self.log.append(
                cid,
                MessageEndEvent(
                    id=1, conversation_id=cid, finish_reason="cancelled", agent_config_version=config.version
                ),
            )
        return True

    async def on_action_update(self, update: ActionResult) -> None:
        """One status update from the pipeline (see ActionFlow.on_update)."""
        await self.actions.on_update(update)

    def _continue_model(self, conversation: Conversation, turn_id: str, round_: int) -> None:
        """Every action of a step is final: the model continues the same turn, watched or not."""
        self.answers.start(
            conversation.id,
            turn_id,
            lambda control: self._step(conversation, control, round_, Overrides()),
            watched=False,
        )

    async def _config(self, conversation: Conversation) -> AgentConfig:
        return await self.configs.get(conversation.agent_config_version)

    async def _step(
        self,
        conversation: Conversation,
        control: StepControl,
        round_: int,
        overrides: Overrides,
        history: list[dict[str, Any]] | None = None,
        ids: Claim | None = None,
    ) -> None:
        """One model call into the log; `history` is the stored messages for the model when the
        caller has them already (a turn's first step: begin_turn returned them), else read here;
        `ids`, the log's ids when begin_turn took them for this step."""
        cid, turn_id = conversation.id, control.turn_id
        message_id = new_id("msg")
        text: list[str] = []
        started = time.monotonic()
        telemetry = StepTelemetry(self.metrics, self.online, cid, message_id, round_)
        # Tokens go through a coalescing writer: one append in flight, the ones arriving meanwhile
        # ride on the next. It owns the log's ids for the step (a turn's first step: its begin_turn
        # took them; a continuation's claim goes out now, beside the model request) and hands each
        # token to this pod's followers before it is persisted. Every end below is the writer's
        # `end`: it lands after the tokens and lets the ids go.
        writer = self.log.writer(
            cid,
            max_batch=self.settings.token_batch_max,
            own=True,
            claimed=ids,
            token=step_token(turn_id, message_id),
        )
        try:
            config = await self._config(conversation)
            telemetry.config(config.version, pinned=bool(conversation.pinned))
            if history is None:
                history = await self.store.messages(cid, last=config.limits.max_history_messages)
            tools = overrides.client_tools
            if tools is None and round_ < config.limits.max_tool_rounds:
                tools = config.openai_tools() or None
            request = ChatRequest(
                model=config.model,
                messages=to_model_messages(overrides.system_prompt(config.system_prompt), history),
                tools=tools,
                temperature=overrides.temperature
                if overrides.temperature is not None
                else config.temperature,
                max_tokens=min(
                    overrides.max_tokens or config.limits.max_output_tokens, config.limits.max_output_tokens
                ),
                max_tokens_field=overrides.max_tokens_field,
                options=overrides.options,
                client_params=overrides.client_params(),
            )
            finish: Finish | None = None
            telemetry.model_call(request)
            # aclosing: however the loop is left (a cancel may land during a Redis write), the model's
            # stream is closed at once, and with it the upstream request.
            async with contextlib.aclosing(self.llm.stream(request)) as deltas:
                async for delta in deltas:
                    if isinstance(delta, TextDelta):
                        if not text:
                            telemetry.first_token()
                        text.append(delta.text)
                        await writer.write(
                            TokenEvent(id=1, conversation_id=cid, message_id=message_id, text=delta.text)
                        )
                        telemetry.token()
                    else:
                        finish = delta
            await writer.flush()
            assert finish is not None
            telemetry.model_finished(finish)
            self.metrics.answer_duration.labels(finish.reason).observe(time.monotonic() - started)
            if finish.tool_calls and overrides.client_tools is not None:
                await self._end_with_client_tools(
                    conversation, control, message_id, "".join(text), finish, config, writer
                )
            elif finish.tool_calls:
                await writer.end()  # the ids let go: the action flow appends as any writer
                await self.actions.queue(
                    conversation, control, message_id, "".join(text), finish, config, round_, overrides
                )
            else:
                # One round trip: the message saved, message_end appended, the conversation freed.
                message = stamped(
                    message_id,
                    "assistant",
                    "".join(text),
                    version=config.version,
                    finish_reason=finish.reason,
                )
                control.end_written = True  # the watchdog has nothing left to stop
                await writer.end(
                    MessageEndEvent(
                        id=1,
                        conversation_id=cid,
                        message_id=message_id,
                        finish_reason=finish.reason,
                        usage=finish.usage,
                        agent_config_version=config.version,
                    ),
                    end=self.store.turn_end(turn_id, message),
                )
            telemetry.ok()
        except ConversationGone:
            log.info("conversation %s was deleted mid-answer", cid)
        except GatewayError as exc:
            self.metrics.stream_errors.labels(exc.code).inc()
            telemetry.failed(exc.code, exc)
            log.warning("answer in %s failed: %s", cid, exc)
            if isinstance(await writer.settle(), (RedisError, OSError)):  # a token write failed as well
                await self._end_when_state_returns(cid, control, message_id, "state_unavailable", writer)
            else:
                await self._end(
                    writer,
                    conversation,
                    turn_id,
                    message_id,
                    text,
                    "error",
                    ErrorEvent(
                        id=1,
                        conversation_id=cid,
                        message_id=message_id,
                        code=exc.code,
                        message=str(exc),
                        retryable=exc.retryable,
                        param=exc.field,
                    ),
                )
        except (RedisError, OSError, ActionBusError) as exc:
            # Redis failed, or the outbox (on Redis too) could not take an action: the end is
            # written once the state answers again, and the conversation is freed then.
            code = as_gateway_error(exc).code
            self.metrics.stream_errors.labels(code).inc()
            telemetry.failed(code, exc)
            log.error("answer in %s stopped: %s: %s", cid, code, exc)
            await writer.settle()
            await self._end_when_state_returns(cid, control, message_id, code, writer)
        except asyncio.CancelledError:
            reason = control.reason or "cancelled"
            self.metrics.upstream_cancellations.labels(reason).inc()
            telemetry.cancelled(reason)
            error = None
            if reason == "shutdown":
                error = ErrorEvent(
                    id=1,
                    conversation_id=cid,
                    message_id=message_id,
                    code="interrupted",
                    message="the gateway restarted mid-answer; send the message again",
                    retryable=True,
                )
            await writer.settle()  # the tokens given before the cancel land, then the end
            await self._end(
                writer,
                conversation,
                turn_id,
                message_id,
                text,
                "interrupted" if reason == "shutdown" else "cancelled",
                error,
            )
            raise
        finally:
            writer.discard()  # no-op once an end above let the ids go
            await telemetry.close()

    async def _end_when_state_returns(
        self, cid: str, control: StepControl, message_id: str, code: str, writer: LogWriter
    ) -> None:
        """The followers and the lock are in Redis: once it answers again, end the answer there
        (a retryable error and message_end) and free the conversation, so a resuming client sees an
        end and the next message is taken. The writer's end first writes the tokens it showed whose
        append failed, under the ids shown: a client resuming from any id it was shown gets the rest
        once. Gives up after the turn timeout (the lock expires then)."""
        control.watched = False  # no orphan stop while recovering: nobody may be connected now
        delay = 0.2
        deadline = time.monotonic() + self.settings.turn_timeout_s
        while time.monotonic() < deadline:
            try:
                await writer.end(
                    ErrorEvent(
                        id=1,
                        conversation_id=cid,
                        message_id=message_id,
                        code=code,
                        retryable=True,
                        message=MID_ANSWER_FAILURES[code],
                    ),
                    MessageEndEvent(id=1, conversation_id=cid, message_id=message_id, finish_reason="error"),
                    end=self.store.turn_end(control.turn_id),
                )
                log.info("answer in %s ended after Redis came back", cid)
                return
            except ConversationGone:
                return
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        log.error(
            "Redis did not come back within the turn timeout: %s stays locked until its lock expires", cid
        )

    async def _end(
        self,
        writer: LogWriter,
        conversation: Conversation,
        turn_id: str,
        message_id: str,
        text: list[str],
        finish_reason: str,
        error: ErrorEvent | None,
    ) -> None:
        """End a step early: keep what was said, tell the followers, free the conversation."""
        cid = conversation.id
        message = (
            stamped(
                message_id,
                "assistant",
                "".join(text),
                version=conversation.agent_config_version,
                finish_reason=finish_reason,
            )
            if text
            else None
        )
        events: list[Any] = [error] if error is not None else []
        events.append(
            MessageEndEvent(
                id=1,
                conversation_id=cid,
                message_id=message_id,
                finish_reason=finish_reason,
                agent_config_version=conversation.agent_config_version,
            )
        )
        try:
            # What was said, the end and the lock's release in one script (the lock freed even
            # when the conversation is gone).
            await writer.end(*events, end=self.store.turn_end(turn_id, message))
        except ConversationGone:
            pass
        except (RedisError, OSError) as exc:
            log.error("could not record the end of an answer in %s: %s", cid, exc)
            try:
                await self.store.release_turn(cid, turn_id)
            except (RedisError, OSError) as again:
                log.error("could not release %s (its lock expires by itself): %s", cid, again)

    async def _end_with_client_tools(
        self,
        conversation: Conversation,
        control: StepControl,
        message_id: str,
        text: str,
        finish: Finish,
        config: AgentConfig,
        writer: LogWriter,
    ) -> None:
        """OpenAI-compatible API with caller-defined tools: the caller runs them and sends the results."""
        cid = conversation.id
        message = stamped(
            message_id,
            "assistant",
            text,
            version=config.version,
            finish_reason="tool_calls",
            tool_calls=[call.openai_shape() for call in finish.tool_calls],
            # Only these calls may be answered by a client's tool message (api/chat_completions.py).
            client_tools=True,
        )
        events: list[Any] = [
            ToolCallEvent(
                id=1,
                conversation_id=cid,
                message_id=message_id,
                tool_call_id=call.id,
                name=call.name,
                arguments=arguments_or_raw(call),
            )
            for call in finish.tool_calls
        ]
        events.append(tool_calls_end(cid, message_id, finish, config))
        await writer.end(*events, end=self.store.turn_end(control.turn_id, message))
