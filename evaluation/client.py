"""Talks to a gateway over its public HTTP API, as a client app would: SSE turns, cancel.

One turn = `POST /v1/conversations/{id}/messages` with `Accept: text/event-stream`; events are
read until the answer ends. When the model calls tools and the case does not wait for the
actions, reading stops at the tool calls and the turn is cancelled so the next turn can start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from evaluation.checks import TurnResult
from evaluation.errors import GatewayCallFailed

log = logging.getLogger(__name__)

DEFAULT_TURN_TIMEOUT_S = 120.0


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, data) pairs from an SSE response; comments and retry lines are skipped."""
    event_type = "message"
    data_lines: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data_lines:
                yield event_type, json.loads("\n".join(data_lines))
            event_type, data_lines = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event_type = value
            elif name == "data":
                data_lines.append(value)


def _error_of(status: int, body: str) -> dict[str, Any]:
    try:
        error = json.loads(body).get("error") or {}
    except (json.JSONDecodeError, AttributeError):
        error = {}
    return {
        "code": error.get("code") or f"http_{status}",
        "message": error.get("message") or body[:200],
        "status": status,
    }


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        session: aiohttp.ClientSession,
        *,
        turn_timeout_s: float = DEFAULT_TURN_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._turn_timeout_s = turn_timeout_s

    async def create_conversation(self, config_version: str | None, title: str | None = None) -> str:
        body: dict[str, Any] = {}
        if config_version:
            body["agent_config_version"] = config_version
        if title:
            body["title"] = title[:200]
        async with self._session.post(
            f"{self.base_url}/v1/conversations", json=body, headers=self._headers
        ) as resp:
            text = await resp.text()
            if resp.status != 201:
                error = _error_of(resp.status, text)
                raise GatewayCallFailed(
                    f"creating a conversation: {error['code']}: {error['message']}", resp.status
                )
            return str(json.loads(text)["id"])

    async def cancel(self, conversation_id: str) -> None:
        async with self._session.post(
            f"{self.base_url}/v1/conversations/{conversation_id}/cancel", headers=self._headers
        ) as resp:
            if resp.status >= 300:
                raise GatewayCallFailed(f"cancelling {conversation_id}: HTTP {resp.status}", resp.status)

    async def run_turn(
        self, conversation_id: str, text: str, *, wait_for_actions: bool = False
    ) -> TurnResult:
        result = TurnResult(user=text)
        started = time.monotonic()
        stopped_at_tool_calls = False
        try:
            async with asyncio.timeout(self._turn_timeout_s):
                stopped_at_tool_calls = await self._stream_turn(
                    conversation_id, text, wait_for_actions, result, started
                )
        except TimeoutError:
            result.error = {
                "code": "eval_timeout",
                "message": f"no end of answer within {self._turn_timeout_s:g}s",
            }
            stopped_at_tool_calls = True  # the turn may still hold the conversation
        except aiohttp.ClientError as exc:
            result.error = {"code": "eval_connection", "message": str(exc)}
        result.latency_ms = (time.monotonic() - started) * 1000
        if stopped_at_tool_calls:
            await self.cancel(conversation_id)
        return result

    async def _stream_turn(
        self, cid: str, text: str, wait_for_actions: bool, result: TurnResult, started: float
    ) -> bool:
        """Fill result from the stream; True when it stopped at tool calls with the turn still open."""
        headers = {**self._headers, "Accept": "text/event-stream"}
        async with self._session.post(
            f"{self.base_url}/v1/conversations/{cid}/messages", json={"content": text}, headers=headers
        ) as resp:
            if resp.status != 200:
                result.error = _error_of(resp.status, await resp.text())
                return False
            async for event_type, data in sse_events(resp):
                if event_type == "token":
                    if result.ttft_ms is None:
                        result.ttft_ms = (time.monotonic() - started) * 1000
                    result.text += data.get("text", "")
                    result.token_events += 1
                elif event_type == "tool_call":
                    result.tool_calls.append(
                        {
                            "name": data.get("name"),
                            "arguments": data.get("arguments"),
                            "action_id": data.get("action_id"),
                        }
                    )
                elif event_type == "action_status":
                    result.actions.append({k: data.get(k) for k in ("action_id", "name", "status", "error")})
                elif event_type == "error":
                    result.error = {k: data.get(k) for k in ("code", "message", "retryable")}
                elif event_type == "message_end":
                    self._add_usage(result, data.get("usage"))
                    result.finish_reason = data.get("finish_reason")
                    result.config_version = data.get("agent_config_version") or result.config_version
                    result.message_id = data.get("message_id") or result.message_id
                    if result.finish_reason != "tool_calls":
                        return False
                    if not wait_for_actions:
                        return True
        if result.finish_reason is None and result.error is None:
            result.error = {"code": "eval_stream_ended", "message": "the stream ended before message_end"}
        return result.finish_reason == "tool_calls"

    @staticmethod
    def _add_usage(result: TurnResult, usage: dict[str, int] | None) -> None:
        if not usage:
            return
        total = dict(result.usage or {})
        for key, value in usage.items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
        result.usage = total
