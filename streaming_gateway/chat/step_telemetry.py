"""What one assistant step reports: its trace spans, Prometheus metrics by config version, its
log context, and the per-version online aggregates in Redis (added up on the pod and written once
a second, observability/online_batches.py).

The engine makes one StepTelemetry per step and calls it at each point of interest; everything
observability-related about a step lives here, so the engine reads as the chat logic it is.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import RedisError

from observability import bind

if TYPE_CHECKING:
    from prometheus_client import Counter

    from observability.online import OnlineMetrics
    from streaming_gateway.llm.port import ChatRequest, Finish
    from streaming_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_tracer = trace.get_tracer("streaming_gateway.chat.engine")


class StepTelemetry:
    def __init__(
        self,
        metrics: GatewayMetrics,
        online: OnlineMetrics | None,
        conversation_id: str,
        message_id: str,
        round_: int,
    ) -> None:
        self._metrics = metrics
        self._online = online
        self._started = time.monotonic()
        self._version: str | None = None
        self._pinned = False
        self._label = "none"
        self._ttft_s: float | None = None
        self._tokens = 0
        #: The tokens counter of this step's version, looked up once (a labels() call per token was
        #: ~1.5 % of the gateway's CPU at 16 concurrent streams).
        self._token_counter: Counter | None = None
        self._error_kind: str | None = None
        self._outcome: str | None = None
        self._llm_span: trace.Span | None = None
        # The step runs in its own task: its span is current for all of the step (publish spans,
        # logs), and the log context is bound for the rest of the task.
        self._span = _tracer.start_span(
            "agent step",
            kind=SpanKind.INTERNAL,
            attributes={
                "agent.conversation_id": conversation_id,
                "agent.message_id": message_id,
                "agent.round": round_,
            },
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        bind(conversation_id=conversation_id, message_id=message_id)

    def config(self, version: str, *, pinned: bool = False) -> None:
        """The step's config version; `pinned` when the client named it (the online counters
        keep such traffic apart from the canary's samples)."""
        self._version, self._label, self._pinned = version, self._metrics.version(version), pinned
        self._token_counter = None
        self._span.set_attribute("agent.config_version", version)
        bind(config_version=version)

    def model_call(self, request: ChatRequest) -> None:
        self._llm_span = _tracer.start_span(
            f"chat {request.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": request.model,
                "gen_ai.request.max_tokens": request.max_tokens or 0,
                "gen_ai.request.temperature": request.temperature
                if request.temperature is not None
                else -1.0,
                "agent.tools": len(request.tools or []),
            },
        )

    def first_token(self) -> None:
        self._ttft_s = time.monotonic() - self._started
        self._metrics.time_to_first_token.labels(self._label).observe(self._ttft_s)
        if self._llm_span is not None:
            self._llm_span.add_event("first token")

    def token(self) -> None:
        self._tokens += 1
        if self._token_counter is None:
            self._token_counter = self._metrics.tokens_streamed.labels(self._label)
        self._token_counter.inc()

    def model_finished(self, finish: Finish) -> None:
        if self._llm_span is not None:
            self._llm_span.set_attribute("gen_ai.response.finish_reasons", [finish.reason])
            for key, name in (
                ("prompt_tokens", "gen_ai.usage.input_tokens"),
                ("completion_tokens", "gen_ai.usage.output_tokens"),
            ):
                if finish.usage and key in finish.usage:
                    self._llm_span.set_attribute(name, finish.usage[key])
            self._llm_span.end()
            self._llm_span = None

    def ok(self) -> None:
        self._outcome = "ok"

    def failed(self, kind: str, exc: BaseException | None = None) -> None:
        self._outcome, self._error_kind = "error", kind
        for span in (self._llm_span, self._span):
            if span is not None:
                if exc is not None:
                    span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, kind))

    def cancelled(self, reason: str) -> None:
        self._outcome = "cancelled" if reason != "shutdown" else "interrupted"

    async def close(self) -> None:
        """End the spans and record the step; a Redis failure here never fails the step."""
        if self._llm_span is not None:
            self._llm_span.end()
        self._span.set_attribute("agent.outcome", self._outcome or "unknown")
        self._span.end()
        otel_context.detach(self._token)
        if self._outcome is not None:
            self._metrics.answers.labels(self._label, self._outcome).inc()
        if self._online is None or self._version is None or self._outcome not in ("ok", "error"):
            return
        if self._error_kind == "state_unavailable":
            return  # Redis just failed: writing there would only hold the step up for its timeouts
        batches = self._online.batches
        if batches is not None:  # the pod's counters, written once a second: no Redis command here
            batches.add_stream(
                self._version,
                ttft_s=self._ttft_s,
                tokens=self._tokens,
                error_kind=self._error_kind,
                pinned=self._pinned,
            )
            return
        try:
            await self._online.record_stream(
                self._version,
                ttft_s=self._ttft_s,
                tokens=self._tokens,
                error_kind=self._error_kind,
                pinned=self._pinned,
            )
        except (RedisError, OSError) as exc:
            log.warning("online metrics for %s not recorded: %s", self._version, exc)
