"""The function app's errors: one root, small subclasses that carry data."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of the action pipeline's errors."""


class InvalidActionMessage(PipelineError):
    """A bus message is not a valid ActionRequest; it is dead-lettered, never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownAction(PipelineError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no action named {name!r} is registered")
        self.name = name


class StoreError(PipelineError):
    """The result or dead-letter store failed; the activity raises and is retried."""


class StaleWrite(StoreError):
    """The document changed since it was read (ETag mismatch); read again and re-decide."""


class Throttled(StoreError):
    def __init__(self, retry_after_s: float, detail: str = "") -> None:
        super().__init__(f"throttled (429), retry after {retry_after_s:.2f}s {detail}".strip())
        self.retry_after_s = retry_after_s


class OrchestrationStartFailed(PipelineError):
    """Starting the orchestration failed: the message must be retried, not completed."""

    def __init__(self, instance_id: str, detail: str) -> None:
        super().__init__(f"could not start orchestration {instance_id}: {detail}")
        self.instance_id = instance_id


class LocalHostError(PipelineError):
    """The local worker (function_app/worker), standing in for the Durable Functions host, cannot go
    on with an instance: its lease was lost, or the orchestrator cannot be replayed faithfully."""


class InstanceAlreadyExists(PipelineError):
    """The start was refused: an instance with this id is pending or running (a duplicate delivery)."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"orchestration {instance_id} already exists")
        self.instance_id = instance_id
