"""The sample tickets backend: create and look up, Idempotency-Key, and fault injection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sample_backend import FaultRule, create_backend_app
from sample_backend.faults import FaultInjector


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_backend_app(), host="127.0.0.1")) as client:
        yield client


async def test_create_then_get_ticket(client: TestClient) -> None:
    """A created ticket can be read back by its id."""
    created = await client.post("/tickets", json={"title": "VPN down", "priority": "urgent"})
    body = await created.json()
    assert created.status == 201 and body["ticketId"].startswith("T-")
    fetched = await client.get(f"/tickets/{body['ticketId']}")
    assert fetched.status == 200 and (await fetched.json())["title"] == "VPN down"


async def test_unknown_ticket_is_404(client: TestClient) -> None:
    """Looking up a ticket that does not exist answers 404."""
    assert (await client.get("/tickets/T-MISSING")).status == 404


async def test_invalid_ticket_is_422(client: TestClient) -> None:
    """A ticket without a title (or with unknown fields) is refused with 422."""
    assert (await client.post("/tickets", json={"priority": "high"})).status == 422
    assert (await client.post("/tickets", json={"title": "x", "colour": "red"})).status == 422
    assert (await client.post("/tickets", data=b"not json")).status == 422


async def test_idempotency_key_repeat_returns_first_ticket(client: TestClient) -> None:
    """The same Idempotency-Key twice (also concurrently) gives one ticket and the same answer."""
    headers = {"Idempotency-Key": "conv-1:call_9"}
    answers = await asyncio.gather(
        *(client.post("/tickets", json={"title": "t"}, headers=headers) for _ in range(5))
    )
    bodies = [await a.json() for a in answers]
    assert len({b["ticketId"] for b in bodies}) == 1
    assert sum(1 for a in answers if a.headers.get("Idempotent-Replayed") == "true") == 4
    assert (await (await client.get("/_control/stats")).json())["tickets"] == 1


async def test_failed_answer_is_not_remembered_for_the_key(client: TestClient) -> None:
    """A 503 injected before the effect is not cached: the retry with the same key creates the ticket."""
    await client.put(
        "/_control/faults", json={"rules": [{"path": "/tickets", "status": 503, "retry_after": 2}]}
    )
    headers = {"Idempotency-Key": "k-1"}
    first = await client.post("/tickets", json={"title": "t"}, headers=headers)
    assert first.status == 503 and first.headers["Retry-After"] == "2"
    second = await client.post("/tickets", json={"title": "t"}, headers=headers)
    assert second.status == 201


async def test_fault_after_effect_keeps_the_effect(client: TestClient) -> None:
    """A 500 injected after the effect: the ticket exists, and the retry with the key gets it back."""
    await client.put(
        "/_control/faults", json={"rules": [{"path": "/tickets", "status": 500, "phase": "after"}]}
    )
    headers = {"Idempotency-Key": "k-2"}
    assert (await client.post("/tickets", json={"title": "t"}, headers=headers)).status == 500
    retry = await client.post("/tickets", json={"title": "t"}, headers=headers)
    assert retry.status == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert (await (await client.get("/_control/stats")).json())["tickets"] == 1


async def test_fault_rules_run_out(client: TestClient) -> None:
    """A rule for 2 requests fails exactly two; reset clears rules and state."""
    await client.put("/_control/faults", json={"rules": [{"path": "/tickets", "status": 500, "times": 2}]})
    statuses = [(await client.post("/tickets", json={"title": "t"})).status for _ in range(3)]
    assert statuses == [500, 500, 201]
    await client.post("/_control/reset")
    assert (await (await client.get("/_control/stats")).json())["tickets"] == 0


async def test_bad_fault_rules_are_refused(client: TestClient) -> None:
    """Rules with unknown fields get 400, not a crash."""
    assert (await client.put("/_control/faults", json={"rules": [{"bogus": 1}]})).status == 400


def test_faults_from_environment_json() -> None:
    """SAMPLE_BACKEND_FAULTS JSON (as the local stack passes it) becomes rules."""
    injector = FaultInjector.from_json('{"rules": [{"path": "/tickets", "status": 503, "times": 3}]}')
    assert injector.rules == [FaultRule(path="/tickets", status=503, times=3)]
