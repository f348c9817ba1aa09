"""Status transitions in Cosmos DB (the npm Cosmos DB server through the real azure-cosmos SDK):
idempotent, ETag-guarded, never backwards; 429 waits for the server's retry-after."""

from __future__ import annotations

import asyncio

import pytest
from azure.cosmos import exceptions as cosmos_errors

from agent_contracts import ActionResult, ActionStatus
from function_app.errors import StaleWrite, Throttled
from function_app.results import honour_throttling, write_transition
from function_app.runtime import Runtime
from tests.function_app.helpers import make_request, read_stored


def status(base: ActionResult, value: str, attempts: int = 0, **extra: object) -> ActionResult:
    return base.model_copy(update={"status": ActionStatus(value), "attempts": attempts, **extra})


async def test_first_write_creates_the_document(runtime: Runtime) -> None:
    """A queued write creates the document with id = action id in the conversation's partition."""
    # Also the reason for create-first: the local server answers 500 (real Cosmos DB: 404) to a read of a
    # missing item, see test_missing_item_read_answers_500_on_local_server_404_on_cosmos.
    queued = ActionResult.queued_for(make_request())
    outcome = await write_transition(runtime.results, queued)
    stored, etag = await read_stored(runtime.results, queued.conversation_id, queued.id)
    assert outcome.applied and stored.status is ActionStatus.queued and etag


async def test_missing_item_read_answers_500_on_local_server_404_on_cosmos(runtime: Runtime) -> None:
    """Where the local server differs: reading a missing item fails (500) instead of returning None (404 on real
    Cosmos DB, which the store maps to None). Production code never reads before the first write."""
    from function_app.errors import StoreError

    with pytest.raises(StoreError, match="500"):
        await runtime.results.read("conv-1", "no-such-action")


async def test_repeated_transition_is_not_applied_twice(runtime: Runtime) -> None:
    """Writing the same transition again (a re-run activity) leaves the document unchanged."""
    queued = ActionResult.queued_for(make_request())
    await write_transition(runtime.results, queued)
    running = status(queued, "running", 1)
    assert (await write_transition(runtime.results, running)).applied
    _, etag = await read_stored(runtime.results, queued.conversation_id, queued.id)
    again = await write_transition(runtime.results, running)
    _, etag_after = await read_stored(runtime.results, queued.conversation_id, queued.id)
    assert not again.applied and etag_after == etag


async def test_status_never_moves_backwards(runtime: Runtime) -> None:
    """After succeeded, a late running(1) or a repeated queued is ignored."""
    queued = ActionResult.queued_for(make_request())
    await write_transition(runtime.results, queued)
    await write_transition(runtime.results, status(queued, "succeeded", 1, result={"ticketId": "T-1"}))
    late = await write_transition(runtime.results, status(queued, "running", 1))
    repeated = await write_transition(runtime.results, queued)
    stored, _ = await read_stored(runtime.results, queued.conversation_id, queued.id)
    assert not late.applied and not repeated.applied
    assert stored.status is ActionStatus.succeeded and stored.result == {"ticketId": "T-1"}


async def test_stale_etag_is_refused(runtime: Runtime) -> None:
    """A replace with an ETag from before a concurrent write fails with StaleWrite (412)."""
    queued = ActionResult.queued_for(make_request())
    await write_transition(runtime.results, queued)
    _, old_etag = await read_stored(runtime.results, queued.conversation_id, queued.id)
    await write_transition(runtime.results, status(queued, "running", 1))
    with pytest.raises(StaleWrite):
        await runtime.results.replace(status(queued, "running", 2), old_etag)


async def test_concurrent_transitions_end_at_the_most_forward(runtime: Runtime) -> None:
    """Racing writers (running 1..4, succeeded) converge on succeeded: conflicts are re-read, not lost."""
    queued = ActionResult.queued_for(make_request())
    await write_transition(runtime.results, queued)
    writes = [status(queued, "running", n) for n in range(1, 5)] + [status(queued, "succeeded", 4)]
    await asyncio.gather(*(write_transition(runtime.results, w) for w in writes))
    stored, _ = await read_stored(runtime.results, queued.conversation_id, queued.id)
    assert stored.status is ActionStatus.succeeded and stored.attempts == 4


async def test_replay_run_replaces_a_final_document(runtime: Runtime) -> None:
    """A replayed action (replay_count 1) may replace its earlier dead_lettered document; the old run may not."""
    queued = ActionResult.queued_for(make_request())
    await write_transition(runtime.results, queued)
    await write_transition(runtime.results, status(queued, "dead_lettered", 3))
    replay = ActionResult.queued_for(make_request(replay_count=1)).model_copy(update={"id": queued.id})
    assert (await write_transition(runtime.results, replay)).applied
    assert not (await write_transition(runtime.results, status(queued, "running", 2))).applied
    stored, _ = await read_stored(runtime.results, queued.conversation_id, queued.id)
    assert stored.status is ActionStatus.queued and stored.replay_count == 1


def throttled(retry_after_ms: str) -> cosmos_errors.CosmosHttpResponseError:
    error = cosmos_errors.CosmosHttpResponseError(status_code=429, message="Request rate is large")
    error.headers = {"x-ms-retry-after-ms": retry_after_ms}
    return error


async def test_throttling_waits_for_retry_after_then_succeeds() -> None:
    """Two 429s then success: the call is repeated and the result returned."""
    calls = []

    async def operation() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise throttled("5")
        return "ok"

    assert await honour_throttling(operation) == "ok"
    assert len(calls) == 3


async def test_throttling_gives_up_with_throttled_error() -> None:
    """Still throttled after the retries: Throttled carries the last retry-after (the activity then fails and is retried)."""

    async def operation() -> None:
        raise throttled("7")

    with pytest.raises(Throttled) as info:
        await honour_throttling(operation, retries=2)
    assert info.value.retry_after_s == pytest.approx(0.007)
