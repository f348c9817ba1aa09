"""The observability package's one root exception."""

from __future__ import annotations


class ObservabilityError(Exception):
    """Root of this package's errors."""


class TelemetryConfigError(ObservabilityError):
    """A telemetry setting is malformed; the message names the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name}: {problem}")
        self.name = name
        self.problem = problem


class InvalidFeedback(ObservabilityError):
    """A feedback rating or comment outside its limits."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
