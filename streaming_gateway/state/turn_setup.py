"""A turn's setup in Redis: the user's script and the conversation's script, in one round trip.

Before the model is asked, a turn needs the user's keys (the request's count against the rate
limit, the stream slot, a new conversation's place in the user's index: one script, the user's
hash slot, state/limits.py UserGate) and the conversation's keys (the turn lock, the messages, the
follower's watcher lease, the history, the log's ids for the answer's first step, and a new
conversation's hash: one script, the conversation's hash slot, ConversationStore.begin_turn). On a
Redis Cluster the two live on different nodes, so they are two commands; they are sent together
when that cannot be seen:

- A new conversation: nobody has its id before the setup returns, so both scripts go at once (one
  pipeline on one connection to a single server; on a cluster, to the two nodes concurrently). If
  the user's script refuses (rate limit, conversation limit, stream slot), the conversation's keys
  (its log's owner key among them) are deleted before anyone could read them; if the
  conversation's script refuses (too many messages for one conversation), the user's slot and
  index entry are given back, as a refused turn always gave its stream slot back.
- An existing conversation: the user's other clients may read it (its messages, its lock), so the
  user's script decides first and the turn is taken only once admitted: nothing to take back.

Refusals keep the order the steps had one by one: rate limit, conversation limit, stream slot,
then the conversation's own (busy, full, gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from streaming_gateway.state.conversation_store import ConversationStore, TurnRequest, TurnStart
from streaming_gateway.state.limits import UserGate, UserStep
from streaming_gateway.state.redis_replies import Redis

log = logging.getLogger(__name__)


class TurnSetup:
    def __init__(self, gate: UserGate, store: ConversationStore, *, pipeline: Redis | None = None) -> None:
        """`pipeline`: a client of a single endpoint to send both scripts on one connection (None: a
        cluster client, whose two scripts go to their nodes concurrently)."""
        self._gate = gate
        self._store = store
        self._pipeline = pipeline

    async def run(self, user_id: str, step: UserStep, turn: TurnRequest) -> TurnStart:
        """Take the user's `step` and the conversation's `turn` (creating the conversation when it has
        `create`); raises the first refusal in the steps' order, with the other script's effect undone."""
        if turn.create is None:
            await self._admit(user_id, step)
            try:
                return await self._store.begin(turn)
            except BaseException:
                await self._give_back(user_id, step)
                raise
        admitted, started = await self._together(user_id, step, turn)
        if isinstance(admitted, BaseException):
            if not isinstance(started, BaseException):
                await self._discard(turn.cid)
            raise admitted
        if isinstance(started, BaseException):
            await self._give_back(user_id, step)
            raise started
        return started

    async def _together(
        self, user_id: str, step: UserStep, turn: TurnRequest
    ) -> tuple[BaseException | None, TurnStart | BaseException]:
        """Both scripts at once: the user's outcome (None: admitted) and the turn's."""
        if self._pipeline is None:
            admitted, started = await asyncio.gather(
                self._admit(user_id, step), self._store.begin(turn), return_exceptions=True
            )
            return admitted, started
        user_command = self._gate.command(user_id, step, index_ttl_s=self._store.ttl_s)
        turn_command = self._store.turn_command(turn)
        sent = time.monotonic()
        try:
            async with self._pipeline.pipeline(transaction=False) as pipe:
                for script, keys, args in (user_command, turn_command):
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                user_reply, turn_reply = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError):
            # Either may have run: take both back, as far as Redis lets us.
            await self._discard(turn.cid)
            await self._give_back(user_id, step)
            raise
        try:
            user_reply = await _loaded(user_reply, *user_command)
            if not self._gate.outcome(user_id, user_reply):
                await self._admit_after_prune(user_id, step)
            admitted = None
        except Exception as exc:
            admitted = exc
        try:
            started = self._store.turn_outcome(turn, await _loaded(turn_reply, *turn_command), sent=sent)
        except Exception as exc:
            return admitted, exc
        return admitted, started

    async def _admit(self, user_id: str, step: UserStep) -> None:
        if not await self._gate.admit(user_id, step, index_ttl_s=self._store.ttl_s):
            await self._admit_after_prune(user_id, step)

    async def _admit_after_prune(self, user_id: str, step: UserStep) -> None:
        """The index was full: drop its expired conversations (as `create` does), then try once more."""
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


async def _loaded(reply: Any, script: AsyncScript, keys: list[str], args: list[EncodableT]) -> Any:
    """A pipelined script's reply: sent again through `script` (which loads it) if Redis did not
    know it yet (NOSCRIPT: nothing ran); raises any other error reply."""
    if isinstance(reply, NoScriptError):
        return await script(keys=keys, args=args)
    if isinstance(reply, BaseException):
        raise reply
    return reply
