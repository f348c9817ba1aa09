"""A turn's setup in Redis: the user's script and the conversation's script, in one round trip.

Before the model is asked, a turn needs the user's keys (the request's count against the rate
limit, the stream slot, a new conversation's place in the user's index: one script, the user's
hash slot, state/limits.py UserGate) and the conversation's keys (the turn lock, the messages, the
follower's watcher lease, the history, and a new conversation's hash: one script, the
conversation's hash slot, ConversationStore.begin_turn). On a Redis Cluster the two live on
different nodes, so they are two commands; they are sent together when that cannot be seen:

- A new conversation: nobody has its id before the setup returns, so both scripts go at once. If
  the user's script refuses (rate limit, conversation limit, stream slot), the conversation's keys
  are deleted before anyone could read them; if the conversation's script refuses (too many
  messages for one conversation), the user's slot and index entry are given back, as a refused
  turn always gave its stream slot back.
- An existing conversation: the user's other clients may read it (its messages, its lock), so the
  user's script decides first and the turn is taken only once admitted: nothing to take back.

Refusals keep the order the steps had one by one: rate limit, conversation limit, stream slot,
then the conversation's own (busy, full, gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from streaming_gateway.state.conversation_store import ConversationStore, TurnStart
from streaming_gateway.state.limits import UserGate, UserStep

log = logging.getLogger(__name__)


class TurnSetup:
    def __init__(self, gate: UserGate, store: ConversationStore) -> None:
        self._gate = gate
        self._store = store

    async def run(
        self,
        user_id: str,
        step: UserStep,
        begin: Callable[[], Awaitable[TurnStart]],
        *,
        new_conversation: str | None,
    ) -> TurnStart:
        """Take the user's `step` and the conversation's turn (`begin`, which creates the conversation
        `new_conversation` when given); raises the first refusal in the steps' order, with the other
        script's effect undone."""
        if new_conversation is None:
            await self._admit(user_id, step)
            try:
                return await begin()
            except BaseException:
                await self._give_back(user_id, step)
                raise
        admitted, started = await asyncio.gather(self._admit(user_id, step), begin(), return_exceptions=True)
        if isinstance(admitted, BaseException):
            if not isinstance(started, BaseException):
                await self._discard(new_conversation)
            raise admitted
        if isinstance(started, BaseException):
            await self._give_back(user_id, step)
            raise started
        return started

    async def _admit(self, user_id: str, step: UserStep) -> None:
        if await self._gate.admit(user_id, step, index_ttl_s=self._store.ttl_s):
            return
        # The index is full: drop its expired conversations (as `create` does), then try once more.
        again = UserStep(stream_id=step.stream_id, new_conversation=step.new_conversation)
        if not (
            await self._store.prune(user_id)
            and await self._gate.admit(user_id, again, index_ttl_s=self._store.ttl_s)
        ):
            raise self._store.limit_reached()

    async def _give_back(self, user_id: str, step: UserStep) -> None:
        if step.stream_id is None and step.new_conversation is None:
            return
        try:
            await self._gate.undo(user_id, step)
        except (RedisError, OSError) as exc:
            # The stream slot's lease runs out by itself; the index entry goes at the next prune.
            log.warning("a refused turn's user steps were not given back: %s", exc)

    async def _discard(self, cid: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._store.discard_new(cid)
            return
        log.warning("a refused turn's new conversation %s was not deleted (nobody has its id)", cid)
