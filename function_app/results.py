"""The result store: one Cosmos DB document per action (id = action id, partition /conversationId).

Writes are idempotent and never move a status backwards: each transition reads the document,
decides with `is_forward_transition`, and replaces it only if its ETag is unchanged (a concurrent
writer makes us read again). Throttling (429) waits for the server's retry-after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import exceptions as cosmos_errors

from agent_contracts import ActionResult, ActionStatus, is_forward_transition
from function_app.errors import StaleWrite, StoreError, Throttled

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_THROTTLE_RETRIES = 8
MAX_THROTTLE_WAIT_S = 30.0
MAX_CONFLICT_RETRIES = 10


def retry_after_s(exc: cosmos_errors.CosmosHttpResponseError) -> float:
    headers = getattr(exc, "headers", None) or {}
    raw = headers.get("x-ms-retry-after-ms") or headers.get("x-ms-retry-after-milliseconds")
    if raw is None and exc.response is not None:
        raw = getattr(exc.response, "headers", {}).get("x-ms-retry-after-ms")
    try:
        return max(0.0, float(raw) / 1000.0) if raw is not None else 1.0
    except ValueError:
        return 1.0


async def honour_throttling(
    operation: Callable[[], Awaitable[T]], *, retries: int = MAX_THROTTLE_RETRIES
) -> T:
    """Run a Cosmos call; on 429 wait the retry-after the server asked for, then try again."""
    waited = 0.0
    for attempt in range(retries + 1):
        try:
            return await operation()
        except cosmos_errors.CosmosHttpResponseError as exc:
            if exc.status_code != 429:
                raise
            delay = retry_after_s(exc)
            if attempt == retries or waited + delay > MAX_THROTTLE_WAIT_S:
                raise Throttled(delay) from exc
            log.info("cosmos throttled; retrying after %.2fs", delay)
            await asyncio.sleep(delay)
            waited += delay
    raise AssertionError("unreachable")


def document_for(result: ActionResult) -> dict[str, Any]:
    return result.to_wire()


class ResultStore(Protocol):
    async def read(self, conversation_id: str, action_id: str) -> tuple[ActionResult, str] | None: ...
    async def create(self, result: ActionResult) -> bool: ...
    async def replace(self, result: ActionResult, etag: str) -> None: ...


class CosmosResultStore:
    def __init__(self, container: Any) -> None:
        self.container = container

    async def read(self, conversation_id: str, action_id: str) -> tuple[ActionResult, str] | None:
        try:
            doc = await honour_throttling(
                lambda: self.container.read_item(action_id, partition_key=conversation_id)
            )
        except cosmos_errors.CosmosResourceNotFoundError:
            return None
        except cosmos_errors.CosmosHttpResponseError as exc:
            raise StoreError(f"read {action_id}: {exc.status_code} {exc.message}") from exc
        except AzureError as exc:  # no answer at all (connection refused, DNS, timeout)
            raise StoreError(f"read {action_id}: {exc}") from exc
        return ActionResult.model_validate(doc), doc["_etag"]

    async def create(self, result: ActionResult) -> bool:
        """False when a document with this id already exists."""
        try:
            await honour_throttling(lambda: self.container.create_item(document_for(result)))
        except cosmos_errors.CosmosResourceExistsError:
            return False
        except cosmos_errors.CosmosHttpResponseError as exc:
            raise StoreError(f"create {result.id}: {exc.status_code} {exc.message}") from exc
        except AzureError as exc:
            raise StoreError(f"create {result.id}: {exc}") from exc
        return True

    async def replace(self, result: ActionResult, etag: str) -> None:
        try:
            await honour_throttling(
                lambda: self.container.replace_item(
                    result.id, document_for(result), etag=etag, match_condition=MatchConditions.IfNotModified
                )
            )
        except cosmos_errors.CosmosAccessConditionFailedError as exc:
            raise StaleWrite(f"{result.id} changed since read") from exc
        except cosmos_errors.CosmosHttpResponseError as exc:
            if exc.status_code == 412:
                raise StaleWrite(f"{result.id} changed since read") from exc
            raise StoreError(f"replace {result.id}: {exc.status_code} {exc.message}") from exc
        except AzureError as exc:
            raise StoreError(f"replace {result.id}: {exc}") from exc


def may_replace(current: ActionResult, new: ActionResult) -> bool:
    """A newer run (replay) replaces anything; within one run only forward transitions."""
    if new.replay_count != current.replay_count:
        return new.replay_count > current.replay_count
    return is_forward_transition(current.status, current.attempts, new.status, new.attempts)


@dataclass(frozen=True)
class WriteOutcome:
    applied: bool
    stored: ActionResult


async def write_transition(store: ResultStore, new: ActionResult) -> WriteOutcome:
    """Apply one status transition idempotently; a repeated or older one leaves the document as is."""
    for _ in range(MAX_CONFLICT_RETRIES):
        # A new action's first write: create, and only read when it already exists. (Real Cosmos
        # answers 404 to a read of a missing item; the local server answers 500, so reading first
        # would break locally for no gain.)
        first_write = new.status is ActionStatus.queued and new.replay_count == 0
        if first_write and await store.create(new):
            return WriteOutcome(True, new)
        current = await store.read(new.conversation_id, new.id)
        if current is None:
            if await store.create(new):
                return WriteOutcome(True, new)
            continue
        stored, etag = current
        if not may_replace(stored, new):
            log.info(
                "action %s: %s/%d after %s/%d is not forward; kept",
                new.id,
                new.status.value,
                new.attempts,
                stored.status.value,
                stored.attempts,
            )
            return WriteOutcome(False, stored)
        try:
            await store.replace(new, etag)
            return WriteOutcome(True, new)
        except StaleWrite:
            continue
    raise StoreError(f"action {new.id}: gave up after {MAX_CONFLICT_RETRIES} concurrent-write conflicts")
