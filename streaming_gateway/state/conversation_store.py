"""Conversation state in Redis, shaped as the seed's data model: a USER has CONVERSATIONs, a
CONVERSATION contains MESSAGEs and uses an AGENT_CONFIG (by version).

Each step is one round trip (a Lua script or a pipeline); every write refreshes the TTLs.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from redis.commands.core import AsyncScript
from redis.typing import EncodableT

from streaming_gateway.errors import Conflict, ConversationGone, NotFound
from streaming_gateway.state import redis_keys
from streaming_gateway.state.leases import KEY_GRACE_S
from streaming_gateway.state.redis_replies import Redis, optional_text, scored
from streaming_gateway.state.stream_log import OWNER_LEASE_S, Claim, TurnEnd

# KEYS: conversation, messages, busy, watchers, log owner, log deferred. ARGV: turn id, busy ttl ms,
# max messages, ttl s, now, title ('' for none), history (how many messages to return; 0 for all),
# watcher ('' for none), watcher lease expiry (unix s), watcher key ttl s, n, the log owner's lease
# in ms (0: the ids are not taken), then n field/value words of a conversation to create (n = 0: an
# existing one), then the messages. Returns {seq, owned, history...} on success, {-1} gone,
# {-2, holder} busy, {-3, count} full. The title is set only with a conversation's first
# messages, and never over one it already has. One round trip takes the turn: the lock, the user's
# messages, the follower's watcher lease and the history the model is sent (and creates a new
# conversation with it: a refused one writes nothing). With a lease it also takes the log's ids for
# the turn's first step, the turn id as the owner token, as stream_log's _WRITE `claim` does (the
# owner key with the lease, the hash field `owner`; owned = 1), but only when no producer owns them
# and no deferred entries wait (owned = 0: the step claims them itself, through _WRITE, which
# appends those entries first).
_BEGIN_TURN = """
local first = 13 + tonumber(ARGV[11])  -- the first message
local adding = #ARGV - first + 1
if first > 13 then
  if adding + 1 > tonumber(ARGV[3]) then return {-3, 0} end
  redis.call('HSET', KEYS[1], unpack(ARGV, 13, first - 1))
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
else
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
  if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {-2, redis.call('GET', KEYS[3]) or ''}
  end
end
local count = redis.call('LLEN', KEYS[2])
if count + adding + 1 > tonumber(ARGV[3]) then  -- room for the reply too
  redis.call('DEL', KEYS[3])
  return {-3, count}
end
if count == 0 and ARGV[6] ~= '' then redis.call('HSETNX', KEYS[1], 'title', ARGV[6]) end
for i = first, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[8] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[8])
  redis.call('EXPIRE', KEYS[4], ARGV[10])
end
local owned = 0
if ARGV[12] ~= '0' and redis.call('EXISTS', KEYS[5], KEYS[6]) == 0 then
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[12])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
  owned = 1
end
local last = tonumber(ARGV[7])
local reply = redis.call('LRANGE', KEYS[2], last > 0 and -last or 0, -1)
table.insert(reply, 1, owned)
table.insert(reply, 1, tonumber(redis.call('HGET', KEYS[1], 'seq') or '0'))
return reply
"""

# KEYS: conversation, messages. ARGV: ttl s, now, messages... Returns 0 when the conversation is gone.
_APPEND_MESSAGES = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS: busy. ARGV: turn id, optional ttl ms. Deletes (or extends) the lock only if this turn holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""


# KEYS: the user's conversation index. ARGV: conversation id, score, limit, ttl s. Adds the
# conversation when the user has fewer than `limit`; returns 1 when added, 0 when full.
_CLAIM_SLOT = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

#: A user at the limit has the index checked for expired conversations at most this often: the
#: check reads every member, so a user hammering at the limit costs one such pass per interval.
PRUNE_INTERVAL_S = 60
#: An index entry younger than this is never taken for an expired conversation: a turn's setup
#: may add a new conversation's entry just before the conversation itself (state/turn_setup.py).
PRUNE_GRACE_S = 10.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: A title made from a first message is cut, at a word, to about this many characters.
TITLE_MAX_CHARS = 80


def title_from(messages: list[dict[str, Any]]) -> str:
    """A conversation's title from its first user message: on one line, cut at a word near
    TITLE_MAX_CHARS with an ellipsis; '' when there is no user text."""
    text = next(
        (m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)), ""
    )
    line = " ".join(text.split())
    if len(line) <= TITLE_MAX_CHARS:
        return line
    cut = line[: TITLE_MAX_CHARS - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > TITLE_MAX_CHARS // 2 else cut).rstrip() + "\u2026"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Watcher:
    """A follower's watcher lease taken with its turn: its member in the conversation's watchers."""

    member: str
    lease_s: float


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What begin_turn returns: the log id the answer follows, the history for the model, and the
    log's ids when it took them for the turn's first step (None: not asked, or not free)."""

    after: int
    history: list[dict[str, Any]]
    ids: Claim | None = None


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What begin_turn is asked: see its parameters (`create`: a new conversation to write first;
    `take_ids`: take the log's ids for the turn's first step, the turn id as the owner token)."""

    cid: str
    turn_id: str
    messages: list[dict[str, Any]]
    max_messages: int
    busy_ttl_s: int
    history: int
    watcher: Watcher | None = None
    create: Conversation | None = None
    take_ids: bool = False


def stamped(message_id: str, role: str, content: str, *, version: str | None, **extra: Any) -> dict[str, Any]:
    """A message to store, stamped now."""
    return {
        "id": message_id,
        "role": role,
        "content": content,
        "created_at": now_iso(),
        "agent_config_version": version,
        **extra,
    }


class Conversation(BaseModel):
    id: str
    user_id: str
    agent_config_version: str
    title: str | None = None
    created_at: str
    updated_at: str
    message_count: int = 0
    last_event_id: int = 0
    #: True when the client named the version (an operator or an evaluation run): the canary
    #: analysis leaves such conversations out; None (not shown) when the gateway chose it.
    pinned: bool | None = None
    #: A producer owns the log's ids (state/stream_log.py LogWriter): it may have shown clients
    #: events past last_event_id that its end writes under those ids, so a resume from one waits.
    ids_ahead: bool = Field(default=False, exclude=True)

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"user_id"}, exclude_none=True)


def _fields(conversation: Conversation) -> dict[EncodableT, EncodableT]:
    """A new conversation's hash (message_count and last_event_id are the list's length and seq)."""
    fields: dict[EncodableT, EncodableT] = {
        "id": conversation.id,
        "user_id": conversation.user_id,
        "agent_config_version": conversation.agent_config_version,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "seq": 0,
    }
    if conversation.title:
        fields["title"] = conversation.title
    if conversation.pinned:
        fields["pinned"] = 1
    return fields


class ConversationStore:
    def __init__(
        self, redis: Redis, *, ttl_s: int, max_per_user: int = 10_000, prune_grace_s: float = PRUNE_GRACE_S
    ) -> None:
        self._redis = redis
        self.redis = redis
        self._ttl_s = ttl_s
        self._max_per_user = max_per_user
        self._prune_grace_s = prune_grace_s
        self._claim = redis.register_script(_CLAIM_SLOT)
        self._begin = redis.register_script(_BEGIN_TURN)
        self._append = redis.register_script(_APPEND_MESSAGES)
        self._release = redis.register_script(_RELEASE)

    async def create(
        self,
        user_id: str,
        agent_config_version: str,
        title: str | None = None,
        *,
        cid: str | None = None,
        pinned: bool = False,
    ) -> Conversation:
        """A new conversation; `cid` when the caller needed the id first (to pick its version).

        Conflict `conversation_limit` when the user already has `max_per_user` conversations;
        deleting one frees its slot at once, one that expired frees it at the next prune. The
        conversation is written before its slot is claimed, so a prune never mistakes a
        conversation being created for an expired one.
        """
        conversation = self.new(user_id, agent_config_version, title, cid=cid, pinned=pinned)
        cid = conversation.id
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(redis_keys.conversation(cid), mapping=_fields(conversation))
            pipe.expire(redis_keys.conversation(cid), self._ttl_s)
            await pipe.execute()
        if not await self._claim_slot(user_id, cid) and not (
            await self.prune(user_id) and await self._claim_slot(user_id, cid)
        ):
            await self._redis.delete(redis_keys.conversation(cid))
            raise self.limit_reached()
        return conversation

    def new(
        self,
        user_id: str,
        agent_config_version: str,
        title: str | None = None,
        *,
        cid: str | None = None,
        pinned: bool = False,
    ) -> Conversation:
        """A conversation not written yet: `create` writes it, or a turn's `begin_turn(create=True)`."""
        stamp = now_iso()
        return Conversation(
            id=cid or new_id("conv"),
            user_id=user_id,
            agent_config_version=agent_config_version,
            title=title,
            created_at=stamp,
            updated_at=stamp,
            pinned=True if pinned else None,
        )

    def limit_reached(self) -> Conflict:
        return Conflict(
            f"you have {self._max_per_user} conversations, the most a user may keep; "
            "delete one to start another",
            code="conversation_limit",
        )

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    @staticmethod
    def turn_keys(cid: str) -> list[str]:
        """begin_turn's keys, all in the conversation's hash slot (and what `discard_new` deletes)."""
        return [
            redis_keys.conversation(cid),
            redis_keys.messages(cid),
            redis_keys.busy(cid),
            redis_keys.watchers(cid),
            redis_keys.log_owner(cid),
            redis_keys.log_deferred(cid),
        ]

    async def discard_new(self, cid: str) -> None:
        """Take back a conversation a refused turn's setup created (nobody has its id yet), the
        log's ids its begin_turn took with it."""
        await self._redis.delete(*self.turn_keys(cid))

    async def _claim_slot(self, user_id: str, cid: str) -> bool:
        args: list[str | int] = [cid, int(time.time() * 1_000_000), self._max_per_user, self._ttl_s]
        return bool(await self._claim(keys=[redis_keys.user_conversations(user_id)], args=args))

    async def prune(self, user_id: str) -> bool:
        """Drop the index's expired conversations (at most once per PRUNE_INTERVAL_S per user; an
        entry younger than PRUNE_GRACE_S stays); True when any slot was freed."""
        index = redis_keys.user_conversations(user_id)
        if not await self._redis.set(
            redis_keys.user_conversations_pruned(user_id), 1, nx=True, ex=PRUNE_INTERVAL_S
        ):
            return False
        older = int((time.time() - self._prune_grace_s) * 1_000_000)
        members = [str(cid) for cid in await self._redis.zrangebyscore(index, "-inf", older)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in members:
                pipe.exists(redis_keys.conversation(cid))
            alive = await pipe.execute()
        gone = [cid for cid, exists in zip(members, alive, strict=True) if not exists]
        if gone:
            await self._redis.zrem(index, *gone)
        return bool(gone)

    async def get(self, cid: str) -> Conversation | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(redis_keys.conversation(cid))
            pipe.llen(redis_keys.messages(cid))
            fields, count = await pipe.execute()
        if not fields:
            return None
        return Conversation(
            id=fields["id"],
            user_id=fields["user_id"],
            agent_config_version=fields["agent_config_version"],
            title=fields.get("title"),
            created_at=fields["created_at"],
            updated_at=fields["updated_at"],
            message_count=int(count),
            last_event_id=int(fields.get("seq", 0)),
            pinned=True if fields.get("pinned") else None,
            ids_ahead="owner" in fields,
        )

    async def is_pinned(self, cid: str) -> bool:
        """Whether the client named the conversation's version (False when it is gone)."""
        return bool(await self._redis.hget(redis_keys.conversation(cid), "pinned"))

    async def owned(self, cid: str, user_id: str) -> Conversation:
        """The conversation if it exists and belongs to user_id; 404 otherwise (never reveals others')."""
        conversation = await self.get(cid) if len(cid) <= 128 else None
        if conversation is None or conversation.user_id != user_id:
            raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
        return conversation

    async def page(
        self, user_id: str, limit: int, before: int | None = None
    ) -> tuple[list[Conversation], int | None]:
        """The user's conversations, newest first; returns the page and the cursor of the next one."""
        index = redis_keys.user_conversations(user_id)
        upper = f"({before}" if before is not None else "+inf"
        found: list[Conversation] = []
        cursor = before
        while len(found) < limit:
            rows = await self._redis.zrevrangebyscore(
                index, upper, "-inf", start=0, num=limit - len(found), withscores=True
            )
            if not rows:
                return found, None
            for cid, score in scored(rows):
                cursor = int(score)
                conversation = await self.get(cid)
                if conversation is None:  # expired: drop it from the index
                    await self._redis.zrem(index, cid)
                else:
                    found.append(conversation)
            upper = f"({cursor}"
        more = await self._redis.zrevrangebyscore(index, upper, "-inf", start=0, num=1)
        return found, cursor if more else None

    async def delete(self, conversation: Conversation) -> None:
        cid = conversation.id
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                redis_keys.conversation(cid),
                redis_keys.messages(cid),
                redis_keys.event_log(cid),
                redis_keys.watchers(cid),
                redis_keys.busy(cid),
                redis_keys.cancel(cid),
                redis_keys.log_owner(cid),
                redis_keys.log_deferred(cid),
            )
            await pipe.execute()
        # The user's index is in another hash slot: a second step. If it never runs, `page` drops
        # the entry when it meets it (the conversation is gone).
        await self._redis.zrem(redis_keys.user_conversations(conversation.user_id), cid)

    async def begin_turn(
        self,
        cid: str,
        turn_id: str,
        messages: list[dict[str, Any]],
        *,
        max_messages: int,
        busy_ttl_s: int,
        history: int,
        watcher: Watcher | None = None,
        create: Conversation | None = None,
    ) -> TurnStart:
        """Take the conversation's answer lock, append the new messages and take the follower's
        watcher lease, in one round trip; returns the log id before the answer (clients read after
        it) and the last `history` messages (0: all), the new ones included. Raises Conflict when
        busy or full, NotFound when gone. With `create` (a conversation from `new`, whose id is
        `cid`) the same script writes the conversation first; a refused turn writes nothing (and
        takes no ids: see TurnRequest.take_ids)."""
        return await self.begin(
            TurnRequest(cid, turn_id, messages, max_messages, busy_ttl_s, history, watcher, create)
        )

    async def begin(self, turn: TurnRequest) -> TurnStart:
        """begin_turn for a request built already."""
        script, keys, args = self.turn_command(turn)
        sent = time.monotonic()
        return self.turn_outcome(turn, await script(keys=keys, args=args), sent=sent)

    def turn_command(self, turn: TurnRequest) -> tuple[AsyncScript, list[str], list[EncodableT]]:
        """begin_turn's script, keys and arguments (to send in a pipeline); `turn_outcome` reads its reply."""
        watcher, create = turn.watcher, turn.create
        fields = [word for pair in _fields(create).items() for word in pair] if create else []
        args: list[EncodableT] = [
            turn.turn_id,
            turn.busy_ttl_s * 1000,
            turn.max_messages,
            self._ttl_s,
            now_iso(),
            title_from(turn.messages),
            turn.history,
            watcher.member if watcher else "",
            time.time() + watcher.lease_s if watcher else 0,
            int(watcher.lease_s) + KEY_GRACE_S if watcher else 0,
            len(fields),
            int(OWNER_LEASE_S * 1000) if turn.take_ids else 0,
            *fields,
            *(json.dumps(m) for m in turn.messages),
        ]
        return self._begin, self.turn_keys(turn.cid), args

    def turn_outcome(self, turn: TurnRequest, answer: Any, *, sent: float) -> TurnStart:
        """begin_turn's reply as the turn's start (`sent`: when the script was sent, monotonic);
        raises its refusals."""
        code = int(answer[0])
        if code == -1:
            raise NotFound(f"conversation {turn.cid!r} not found", code="conversation_not_found")
        if code == -2:
            raise Conflict(
                "the assistant is still answering in this conversation; wait for it or cancel it",
                code="conversation_busy",
            )
        if code == -3:
            raise Conflict(
                f"the conversation has reached its limit of {turn.max_messages} messages; start a new one",
                code="conversation_full",
            )
        ids = Claim(turn.turn_id, code, sent) if int(answer[1]) else None
        return TurnStart(code, [json.loads(item) for item in answer[2:]], ids)

    async def append_messages(self, cid: str, *messages: dict[str, Any]) -> bool:
        """Append assistant/tool messages; False when the conversation is gone."""
        args: list[str | int] = [self._ttl_s, now_iso(), *(json.dumps(m) for m in messages)]
        return bool(
            await self._append(keys=[redis_keys.conversation(cid), redis_keys.messages(cid)], args=args)
        )

    async def save_message(
        self, cid: str, message_id: str, role: str, content: str, *, version: str | None, **extra: Any
    ) -> None:
        """Append one message stamped now; ConversationGone when the conversation was deleted meanwhile."""
        if not await self.append_messages(cid, stamped(message_id, role, content, version=version, **extra)):
            raise ConversationGone(cid)

    def turn_end(self, turn_id: str, message: dict[str, Any] | None = None) -> TurnEnd:
        """For the turn's last append (StreamLog.append): save `message` and free the turn's lock there."""
        return TurnEnd(turn_id, json.dumps(message) if message else "", self._ttl_s, now_iso())

    async def messages(self, cid: str, last: int | None = None) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(redis_keys.messages(cid), -last if last else 0, -1)
        return [json.loads(item) for item in raw]

    async def release_turn(self, cid: str, turn_id: str) -> bool:
        return bool(await self._release(keys=[redis_keys.busy(cid)], args=[turn_id]))

    async def extend_turn(self, cid: str, turn_id: str, ttl_s: float) -> bool:
        return bool(await self._release(keys=[redis_keys.busy(cid)], args=[turn_id, int(ttl_s * 1000)]))

    async def turn_holder(self, cid: str) -> str | None:
        return optional_text(await self._redis.get(redis_keys.busy(cid)))
