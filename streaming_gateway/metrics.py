"""Every Prometheus metric of the gateway, defined here and nowhere else.

One `GatewayMetrics` per app, on its own registry (built in the factory, no I/O), so two apps in
one process (tests) never share counters. Extend this class to add metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Distinct config versions one process labels before it folds the rest into "other": versions are
#: published by operators (a handful live at once), but a label set must stay bounded regardless.
MAX_VERSION_LABELS = 20

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0)
_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_streams = Gauge(
            "gateway_active_streams", "Client streams open now.", ["transport"], registry=r
        )
        self.time_to_first_token = Histogram(
            "gateway_time_to_first_token_seconds",
            "From the model request to its first token.",
            ["config_version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_duration = Histogram(
            "gateway_stream_duration_seconds",
            "How long client streams stay open.",
            ["transport"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.answer_duration = Histogram(
            "gateway_answer_duration_seconds",
            "One assistant step, model call to end.",
            ["finish_reason"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.tokens_streamed = Counter(
            "gateway_tokens_streamed_total",
            "Token events written to stream logs.",
            ["config_version"],
            registry=r,
        )
        self.stream_errors = Counter(
            "gateway_stream_errors_total", "Answers or streams that ended in error.", ["kind"], registry=r
        )
        self.auth_failures = Counter(
            "gateway_auth_failures_total", "Requests refused for authentication.", ["reason"], registry=r
        )
        self.rate_limit_rejections = Counter(
            "gateway_rate_limit_rejections_total", "Requests refused by a limit.", ["limit"], registry=r
        )
        self.actions_queued = Counter(
            "gateway_actions_queued_total", "Actions accepted into the outbox.", ["name"], registry=r
        )
        self.action_updates = Counter(
            "gateway_action_updates_total", "Action status updates received.", ["status"], registry=r
        )
        self.answers = Counter(
            "gateway_answers_total",
            "Assistant steps by how they ended (ok, error, cancelled).",
            ["config_version", "outcome"],
            registry=r,
        )
        self.action_outcomes = Counter(
            "gateway_action_outcomes_total",
            "Actions by final outcome.",
            ["config_version", "outcome"],
            registry=r,
        )
        self.feedback = Counter(
            "gateway_feedback_total", "User feedback ratings (1-5).", ["config_version", "rating"], registry=r
        )
        self.agent_config_active = Gauge(
            "gateway_agent_config_active",
            "1 for the agent config version this pod serves new conversations with.",
            ["config_version"],
            registry=r,
        )
        self._versions: set[str] = set()
        self._active_label: str | None = None
        self.upstream_cancellations = Counter(
            "gateway_upstream_cancellations_total",
            "Model requests stopped before their end.",
            ["reason"],
            registry=r,
        )

    def version(self, version: str | None) -> str:
        """The label value for a config version: itself for the first MAX_VERSION_LABELS, then "other"."""
        if not version:
            return "none"
        if version in self._versions:
            return version
        if len(self._versions) < MAX_VERSION_LABELS:
            self._versions.add(version)
            return version
        return "other"

    def set_active_version(self, version: str) -> None:
        label = self.version(version)
        if self._active_label is not None and self._active_label != label:
            self.agent_config_active.labels(self._active_label).set(0)
        self.agent_config_active.labels(label).set(1)
        self._active_label = label
