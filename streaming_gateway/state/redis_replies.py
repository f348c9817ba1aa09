"""The gateway's Redis client type, and the one place its replies are narrowed to what they are.

The gateway builds its client with `decode_responses=True` on the default RESP2 protocol
(contexts.redis_ctx): every reply is `str`, never `bytes`. redis-py cannot see that option in its
types, so it declares replies as `bytes | str` (and XREAD as the union of its RESP2 and RESP3
shapes). These functions state the decoded type once, with that reason; no other gateway module
casts a Redis reply.
"""

from __future__ import annotations

from typing import Any, TypeAlias, cast

from agent_contracts.redis_connection import AnyRedis

#: A client built with decode_responses=True (one server, or a cluster): every reply is `str`.
Redis: TypeAlias = AnyRedis

#: XREAD's RESP2 reply, decoded: one [stream key, entries] pair per stream, each entry
#: (entry id, {field: value}). The pair is a list at run time; it unpacks the same.
StreamReply: TypeAlias = list[tuple[str, list[tuple[str, dict[str, str]]]]]


def optional_text(reply: bytes | str | None) -> str | None:
    """A bulk-string reply that may be nil (decoded: str or None)."""
    return cast(str | None, reply)


def text_fields(reply: dict[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply (decoded: str keys and values)."""
    return cast(dict[str, str], reply)


def scored(reply: Any) -> list[tuple[str, float]]:
    """A ZRANGE-family reply WITHSCORES (decoded members, float scores)."""
    return cast(list[tuple[str, float]], reply)


def stream_reply(reply: Any) -> StreamReply:
    """An XREAD reply (RESP2, decoded); nil (nothing arrived while blocking) as an empty list."""
    return cast(StreamReply, reply or [])
