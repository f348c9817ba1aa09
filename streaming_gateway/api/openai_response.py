"""OpenAI's chat.completion and chat.completion.chunk objects, built from the conversation's log.

Shaped to OpenAI's published schemas (tests/openai_compat checks them with closed objects):
a message always carries `refusal` (null), a choice `logprobs` (null), a completion `usage`
(the upstream's, or the adapter's estimate when it reported none) and a `system_fingerprint`.
The fingerprint is `fp_` and the content hash of the agent configuration that answered: the
API's "backend configuration the model runs with", so a client that logs it can tell which
configuration served an answer (the same hash `agent-registry` and evaluation reports show).
Finish reasons outside the API's set (the gateway's `cancelled`) are reported as `stop`; an
error is an error object, never a finish reason.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from streaming_gateway.state.stream_log import LogEntry

#: The finish reasons OpenAI's schema allows; the gateway's others are reported as `stop`.
FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}


def fingerprint(agent_config_version: str) -> str:
    """`fp_` + the version's content hash (`label@<hash>`)."""
    return "fp_" + agent_config_version.rsplit("@", 1)[-1]


class Completion:
    """One answer as OpenAI objects: fed log entries, it gives chunk deltas and the final object."""

    def __init__(
        self, conversation_id: str, agent_config_version: str, model: str, *, include_usage: bool = False
    ) -> None:
        self.id = f"chatcmpl-{conversation_id}-{int(time.time() * 1000)}"
        self.created = int(time.time())
        self.model = model
        self.system_fingerprint = fingerprint(agent_config_version)
        self.include_usage = include_usage
        self.text: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.finish_reason = "stop"
        self.usage: dict[str, int] | None = None
        self.error: dict[str, Any] | None = None
        self.ended = False
        # Every chunk is this envelope around its choice: serialized once, not once per token.
        envelope = _json(self._envelope())
        self._chunk_head = b"data: " + envelope[:-1] + b',"choices":[{"index":0,"delta":'
        usage = ',"usage":null' if include_usage else ""  # as the API does: null on all but the last
        self._chunk_tail = f',"logprobs":null,"finish_reason":null}}]{usage}}}\n\n'.encode()

    def add(self, entry: LogEntry) -> dict[str, Any] | None:
        """Record the entry; returns the chunk delta to stream for it, if any."""
        event = json.loads(entry.data)
        if entry.type == "token":
            self.text.append(event["text"])
            return {"content": event["text"]}
        if entry.type == "tool_call":
            arguments = event["arguments"]
            raw = arguments["_raw"] if set(arguments) == {"_raw"} else json.dumps(arguments)
            call = {
                "id": event["tool_call_id"],
                "type": "function",
                "function": {"name": event["name"], "arguments": raw},
            }
            self.tool_calls.append(call)
            return {"tool_calls": [{"index": len(self.tool_calls) - 1, **call}]}
        if entry.type == "error":
            param = event.get("param")
            self.error = {
                "message": event["message"],
                "type": "invalid_request_error" if param else "server_error",
                "code": event["code"],
                "param": param,
            }
        elif entry.type == "message_end":
            self.ended = True
            reason = event["finish_reason"]
            self.finish_reason = reason if reason in FINISH_REASONS else "stop"
            self.usage = event.get("usage")
        return None

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
        }

    def token_chunk(self, entry: LogEntry) -> bytes | None:
        """The chunk of a token entry, recorded as `add` does; None for any other entry (give it
        to `add`). The per-token path: the entry's JSON parsed once and only the text serialized."""
        if entry.type != "token":
            return None
        text = orjson.loads(entry.data)["text"]
        self.text.append(text)
        return b"".join((self._chunk_head, b'{"content":', _json(text), b"}", self._chunk_tail))

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        if finish_reason is None:
            return self._chunk_head + _json(delta) + self._chunk_tail
        payload = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            payload["usage"] = None  # as the API does: null on every chunk but the last
        return _data(payload)

    def finish_chunk(self) -> bytes:
        return self.chunk({}, self.finish_reason)

    def usage_chunk(self) -> bytes:
        return _data({**self._envelope(), "choices": [], "usage": self.usage_or_zero()})

    @property
    def error_status(self) -> int:
        """The HTTP status of the error: 400 when it names the client's parameter, else 502."""
        return 400 if self.error is not None and self.error.get("param") else 502

    def error_event(self) -> bytes:
        return _data({"error": self.error})

    def usage_or_zero(self) -> dict[str, int]:
        return self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) or None,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            ],
            "usage": self.usage_or_zero(),
        }


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + _json(payload) + b"\n\n"


def _json(value: Any) -> bytes:
    """Compact JSON, UTF-8. orjson (several times json's speed: this runs per token) refuses a
    lone surrogate, which json.loads can produce from an escape; json writes it escaped."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()
