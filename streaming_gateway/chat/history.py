"""Stored messages to the model's message list, always in a shape the chat API accepts.

An assistant message's tool calls go to the model only together with a result for each of them
(a turn cut short or a history window can leave them apart); tool results without their call
are dropped for the same reason.
"""

from __future__ import annotations

from typing import Any


def to_model_messages(system_prompt: str, stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    index = 0
    while index < len(stored):
        message = stored[index]
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            results: list[dict[str, Any]] = []
            following = index + 1
            while following < len(stored) and stored[following].get("role") == "tool":
                results.append(stored[following])
                following += 1
            call_ids = {call["id"] for call in message["tool_calls"]}
            answered = {result.get("tool_call_id") for result in results}
            if call_ids <= answered:
                messages.append(
                    {
                        "role": "assistant",
                        "content": message.get("content") or None,
                        "tool_calls": message["tool_calls"],
                    }
                )
                messages += [
                    {"role": "tool", "tool_call_id": r["tool_call_id"], "content": r.get("content") or ""}
                    for r in results
                    if r.get("tool_call_id") in call_ids
                ]
            elif message.get("content"):
                messages.append({"role": "assistant", "content": message["content"]})
            index = following
            continue
        if role in {"user", "assistant"}:
            messages.append({"role": role, "content": message.get("content") or ""})
        # a tool message here has lost its call: skip it
        index += 1
    return messages
