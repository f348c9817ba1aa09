"""The evaluation package's errors: one root, small subclasses carrying data."""

from __future__ import annotations


class EvaluationError(Exception):
    """Root of the evaluation package's errors."""


class InvalidCases(EvaluationError):
    """A cases file does not satisfy the case schema."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"cases {source}: {problem}")
        self.source = source
        self.problem = problem


class GatewayCallFailed(EvaluationError):
    """The gateway refused or broke a turn in a way that is not the case's outcome to score."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnknownMetric(EvaluationError):
    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown metric {name!r}; one of: {', '.join(known)}")
        self.name = name
