"""A restart of `make dev` in the middle of an action leaves a consistent stack: the Redis it keeps
holds no orchestration instance whose documents the fresh Cosmos DB stand-in lacks, the interrupted
action is reported failed with the reason (to the card and to the model, which says so), nothing
waits for it, and the same request then succeeds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.fixtures.services import ON_BOTH
from tests.local_stack.dev_stack import DevStack, free_ports
from tests.polling import eventually
from tests.redis_reads import scored_members

#: The first ticket request fails, and its retry waits a minute: the restart lands mid-action.
FAULTS = [{"path": "/tickets", "method": "POST", "status": 503, "times": 1}]


async def conversation(session: aiohttp.ClientSession, base: str, cid: str) -> dict[str, Any]:
    async with session.get(f"{base}/v1/conversations/{cid}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


def tool_results(stored: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in stored["messages"] if m["role"] == "tool"]


def last_answer(stored: dict[str, Any]) -> str:
    answers = [m for m in stored["messages"] if m["role"] == "assistant" and m.get("content")]
    return answers[-1]["content"] if answers else ""


@ON_BOTH  # the whole pipeline (gateway, outbox, broker, worker, state clearing) on a cluster too
async def test_restart_mid_action_leaves_a_consistent_stack(
    tmp_path: Path, redis_url: str, aredis: aioredis.Redis, stacks: list[DevStack]
) -> None:
    """Stopped while an action waits for its retry and started again on the same Redis: the stack logs
    that it cleared the pipeline's state, the action ends failed with the restart as its reason, the
    model answers that it failed, no instance is left to resume, and asking again opens the ticket."""
    ports = free_ports()
    base = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    env = {**ports, "REDIS_URL": redis_url, "ACTION_RETRY_POLICIES": "create_ticket=60:3"}
    first = DevStack(tmp_path, {**env, "SAMPLE_BACKEND_FAULTS": json.dumps(FAULTS)}, name="first")
    stacks.append(first.start())
    await first.ready()
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(f"{base}/dev/token", json={"user": "alice"}) as got,
    ):
        token = (await got.json())["token"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async with session.post(f"{base}/v1/conversations", json={}) as created:
            cid = (await created.json())["id"]
        async with session.post(
            f"{base}/v1/conversations/{cid}/messages",
            json={"content": "please open a ticket: printer on fire"},
        ) as sent:
            assert sent.status == 200, await sent.text()

        async def waiting_for_retry() -> bool:
            due = await scored_members(aredis, "durable:due")
            return len(due) == 1 and due[0][1] > time.time() + 5

        await eventually(waiting_for_retry, "the action to wait for its retry", timeout=60)
        assert first.stop() == 0
        assert first.leftovers() == []

        second = DevStack(tmp_path, env, name="second")
        stacks.append(second.start())
        await second.ready()
        assert (
            "the action pipeline's local state in Redis was cleared: 1 orchestration instances deleted, "
            "1 of them unfinished, 1 reported to their conversations as failed" in second.output
        ), second.output

        async def answered() -> bool:
            return "failed" in last_answer(await conversation(session, base, cid))

        await eventually(answered, "the model's answer about the failed action", timeout=60)
        stored = await conversation(session, base, cid)
        [result] = tool_results(stored)
        assert result["status"] == "failed" and "the local stack restarted" in result["error"]
        assert last_answer(stored).startswith(
            "Sorry, that did not work: the action failed (the local stack restarted"
        )
        assert [key async for key in aredis.scan_iter("durable:*")] == []

        async with session.post(
            f"{base}/v1/conversations/{cid}/messages",
            json={"content": "please open a ticket: printer on fire"},
        ) as again:
            assert again.status == 200, await again.text()

        async def opened() -> bool:
            return last_answer(await conversation(session, base, cid)).startswith("I opened ticket T-")

        await eventually(opened, "the ticket opened after the restart", timeout=60)
        assert [r["status"] for r in tool_results(await conversation(session, base, cid))] == [
            "failed",
            "succeeded",
        ]
    assert second.stop() == 0
    assert second.leftovers() == []
