"""Keys that one Lua script or MULTI touches together share a hash slot, as a Redis Cluster demands.

Each group below is what one kind of script or transaction is given (see the modules named); the
ids are arbitrary, including ones that look like hash tags themselves. The suite's cluster runs
(`redis` mark, tests/fixtures/services.py) then show Redis accepting them; this catches a key
renamed without its tag before any test touches a cluster.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.crc import key_slot

from action_bus.redis_streams import StreamQueue
from agent_registry import keys as registry_keys
from function_app.worker.instances import InstanceStore
from observability import online
from streaming_gateway.state import redis_keys
from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.limits import UserGate

IDS = ["conv_0123456789abcdef", "a", "x:y", "user@example.com", "42", "a}b", "{tag}"]


def _groups() -> dict[str, Callable[[str], list[str]]]:
    store = InstanceStore(None, "durable")  # type: ignore[arg-type]  # only its key names are used
    return {
        "conversation (state/conversation_store.py, stream_log.py, log_compaction.py, retention.py, chat/pending_steps.py)": lambda cid: [
            redis_keys.conversation(cid),
            redis_keys.messages(cid),
            redis_keys.event_log(cid),
            redis_keys.watchers(cid),
            redis_keys.busy(cid),
            redis_keys.cancel(cid),
            redis_keys.producing(cid),
            redis_keys.log_owner(cid),
            redis_keys.log_deferred(cid),
            redis_keys.step(cid, "s1"),
            redis_keys.step_results(cid, "s1"),
            redis_keys.step_continued(cid, "s1"),
        ],
        "user (state/limits.py, conversation_store.py)": lambda user: [
            redis_keys.user_conversations(user),
            redis_keys.user_conversations_pruned(user),
            redis_keys.user_streams(user),
            redis_keys.user_rate(user, 29_000_000),
        ],
        "a turn's user script (state/limits.py UserGate, state/turn_setup.py)": lambda user: UserGate.keys(
            user, 29_000_000
        ),
        "a turn's conversation script (begin_turn, discard_new)": ConversationStore.turn_keys,
        "agent (agent_registry/registry.py scripts)": lambda agent: [
            registry_keys.history(agent),
            registry_keys.active(agent),
            registry_keys.previous(agent),
            registry_keys.log(agent),
            registry_keys.epoch(agent),
            registry_keys.rollout(agent),
            registry_keys.withdrawn(agent),
            registry_keys.analyses(agent),
            registry_keys.analysis_lock(agent),
        ],
        "queue (action_bus/redis_streams.py scripts and transactions)": lambda name: [
            (queue := StreamQueue(None, name, "g")).key,  # type: ignore[arg-type]
            queue.dead_key,
            queue.scheduled_key,
            queue._dedup_key("m1"),
        ],
        "worker instance (function_app/worker/instances.py scripts)": lambda iid: [
            store._meta(iid),
            store._history(iid),
            store._lease(iid),
            store._inbox(iid),
            store._notified(iid),
        ],
        "online metrics (observability/online.py scripts)": lambda version: [
            online.version_key(version),
            online.versions_key(),
            online.feedback_key(version),
            online.feedback_seen_key("conv_1", version),
        ],
    }


@pytest.mark.parametrize("group", list(_groups()))
def test_keys_used_together_share_one_slot(group: str) -> None:
    """For any id, every key of the group hashes to the same cluster slot."""
    build = _groups()[group]
    for some_id in IDS:
        slots = {key: key_slot(key.encode()) for key in build(some_id)}
        assert len(set(slots.values())) == 1, f"{group}, id {some_id!r}: {slots}"


def test_conversations_spread_over_slots() -> None:
    """Different conversations land in different slots: the log traffic spreads over the nodes."""
    slots = {key_slot(redis_keys.event_log(f"conv_{n:032x}").encode()) for n in range(200)}
    assert len(slots) > 150


def test_a_turns_two_scripts_are_in_different_slots() -> None:
    """A turn's setup is two scripts because a user's keys and a conversation's are in different
    slots (so on a cluster they go to two nodes at once, state/turn_setup.py)."""
    user = {key_slot(key.encode()) for key in UserGate.keys("alice", 29_000_000)}
    conversation = {key_slot(key.encode()) for key in ConversationStore.turn_keys("conv_0123456789abcdef")}
    assert len(user) == len(conversation) == 1 and user != conversation
