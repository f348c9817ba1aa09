"""How long a stateless OpenAI-style call's conversation is kept.

A `POST /v1/chat/completions` without `X-Conversation-Id` sends its whole history every time and
starts a conversation each time. Nobody lists such a conversation or continues it by default, so
it is kept only as long as what may still follow the answer needs it: reading or resuming the
answer by its id (X-Conversation-Id on the response), feedback on its message, and a client that
chooses to continue it by naming it. When its answer ends (each step, a tool-call pause included),
its conversation, messages and stream log are cut to GATEWAY_STATELESS_TTL_SECONDS (never
lengthened). A client that names it later makes it an ordinary conversation again: that turn
refreshes the ordinary TTLs.

The conversations to cut are known to the pod that took the call (it runs the answer), so no
Redis read is spent on the ordinary ones; a pod that stops mid-answer leaves that conversation
with the ordinary TTLs. Until it expires it is listed with the user's conversations and counts
towards GATEWAY_MAX_CONVERSATIONS_PER_USER (an expired one frees its place at the next check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from streaming_gateway.state import redis_keys
from streaming_gateway.state.redis_replies import Redis

log = logging.getLogger(__name__)

# KEYS: conversation, messages, log. ARGV: ttl s. Shortens each key's TTL to ttl, never lengthens.
_SHORTEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local left = redis.call('TTL', KEYS[i])
  if left == -1 or left > ttl then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
"""


class StatelessRetention:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s
        self._script = redis.register_script(_SHORTEN)
        #: Stateless conversations with an answer running on this pod.
        self._marked: set[str] = set()
        self._tasks: set[asyncio.Task[bool]] = set()

    def mark(self, conversation_id: str) -> None:
        """A stateless call started this conversation: cut its TTLs when its answer ends."""
        self._marked.add(conversation_id)

    def forget(self, conversation_id: str) -> None:
        """Its answer never started (the turn was refused)."""
        self._marked.discard(conversation_id)

    def answer_ended(self, conversation_id: str) -> None:
        if conversation_id not in self._marked:
            return
        self._marked.discard(conversation_id)
        task = asyncio.create_task(self.shorten(conversation_id), name=f"retention:{conversation_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shorten(self, conversation_id: str) -> bool:
        """Cut the conversation's keys to the stateless TTL; False when it is gone."""
        try:
            done = await self._script(
                keys=[
                    redis_keys.conversation(conversation_id),
                    redis_keys.messages(conversation_id),
                    redis_keys.event_log(conversation_id),
                ],
                args=[self.ttl_s],
            )
        except (RedisError, OSError) as exc:
            log.warning("stateless conversation %s keeps the ordinary TTLs: %s", conversation_id, exc)
            return False
        return bool(done)

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
