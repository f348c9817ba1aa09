"""A Redis Cluster primary fails over while answers stream and an action waits in the outbox: the
gateway follows the promoted replica, the client resumes from its last event id and gets every
event exactly once, and the accepted action reaches the bus exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from action_bus.redis_streams import StreamQueue
from agent_contracts import ActionRequest
from agent_contracts.redis_connection import AnyRedis, connect
from local_stack.redis_cluster import LocalRedisCluster
from streaming_gateway.state import redis_keys
from tests.faults.conftest import Scenario
from tests.faults.test_redis_restart import TICKET, stream_outcome
from tests.fixtures.gateway import StartGateway
from tests.gateway.helpers import read_until as read_events_until
from tests.gateway.sse_client import SseEvent, SseParser
from tests.polling import eventually
from tests.redis_reads import node_port, stream_entries


@pytest.fixture
def replicated_cluster(tmp_path: Path, output_dir: Path) -> Iterator[LocalRedisCluster]:
    """Three primaries with a replica each: a failover has somewhere to go."""
    cluster = LocalRedisCluster(primaries=3, replicas=1, data_dir=tmp_path, log_dir=output_dir).start()
    yield cluster
    cluster.stop()


#: Long enough to still be streaming when both failovers are done.
SAGA = {"match": "saga", "tokens": 800, "token_delay_ms": 15}


async def fail_over(cluster: LocalRedisCluster, ports: list[int]) -> list[int]:
    return [await asyncio.to_thread(cluster.fail_over, port) for port in ports]


async def _entries_for(client: AnyRedis, queue: str, action_id: str) -> int:
    key = StreamQueue(client, queue, "check").key
    found = 0
    for _id, fields in await stream_entries(client, key):
        if str(ActionRequest.model_validate_json(fields["body"]).action_id) == action_id:
            found += 1
    return found


@pytest.mark.slow  # six redis-servers and two failovers: `make test-long`
@pytest.mark.scenario(
    "Redis Cluster failover mid-stream",
    "CLUSTER FAILOVER of the primary holding a streaming conversation (and of the outbox's) "
    "while 800 tokens stream, a client resuming from its last id meanwhile",
    "the stream continues or ends resumably; resuming from the last id gives every event once, "
    "ending with message_end; the action is on the bus exactly once",
)
async def test_failover_mid_stream_resumes_exactly_once_and_keeps_the_action(
    replicated_cluster: LocalRedisCluster,  # first: it stops after the gateway
    start_gateway: StartGateway,
    script: Callable[..., Any],
    scenario: Scenario,
) -> None:
    """After a replica is promoted under open streams, resume and the action bus lose and repeat nothing."""
    await script([SAGA, TICKET])
    gateway = await start_gateway(REDIS_URL=replicated_cluster.url, GATEWAY_TURN_TIMEOUT_SECONDS="60")
    check = await connect(replicated_cluster.url, decode_responses=True)
    try:
        await check.ping()  # the cluster client learns the slot map on its first command
        cid = await gateway.create_conversation()
        ticket_cid = await gateway.create_conversation()
        async with gateway.request(
            "POST", f"/v1/conversations/{ticket_cid}/messages", json={"content": "open a ticket"}
        ) as accepted:
            [action] = (await accepted.json())["actions"]
        parser, events = SseParser(), []
        async with gateway.request(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": "tell a saga"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            events += await read_events_until(
                response, parser, lambda _e, got: sum(x.type == "token" for x in got) >= 10
            )
            owners = {
                node_port(check, redis_keys.event_log(cid)),
                node_port(check, StreamQueue(check, "outbox", "check").key),
            }
            failovers = asyncio.create_task(fail_over(replicated_cluster, sorted(owners)))
            # Meanwhile the client reconnects (as after a dropped connection) from the last id it
            # saw and lets the first stream go: the rest must come once, through the failover.
            events += await read_events_until(response, parser, lambda e, _got: e.type == "token")
            last = max(int(e.id) for e in events if e.id)
            resumed: list[SseEvent] = []
            async with gateway.request(
                "GET",
                f"/v1/conversations/{cid}/events?until=end",
                headers={"Accept": "text/event-stream", "Last-Event-ID": str(last)},
            ) as resumed_response:
                assert resumed_response.status == 200
                response.close()
                promoted = await failovers
                outcome = await stream_outcome(resumed_response, SseParser(), resumed, patience_s=60)
        ids = [int(e.id) for e in [*events, *resumed] if e.id]
        ends = [
            json.loads(e.data).get("finish_reason") for e in [*events, *resumed] if e.type == "message_end"
        ]

        async def relayed_once() -> bool:
            return (
                await _entries_for(check, "actions", action["action_id"]) >= 1
                and await check.xlen(StreamQueue(check, "outbox", "check").key) == 0
            )

        await eventually(relayed_once, "the accepted action relayed to the bus")
        on_bus = await _entries_for(check, "actions", action["action_id"])
        scenario.observed = (
            f"failed over {sorted(owners)} -> {promoted}; resumed from {last}: {outcome} "
            f"after {len(resumed)} events; ids 1..{max(ids)} ({len(ids)} delivered); "
            f"finish {ends}; action on the bus {on_bus}x"
        )
        assert ids == list(range(1, max(ids) + 1)), "every event exactly once, in order"
        assert len(ends) == 1
        assert on_bus == 1
    finally:
        await check.aclose()
