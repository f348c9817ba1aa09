"""Builders shared by the function app tests."""

from __future__ import annotations

from typing import Any

from agent_contracts import ActionRequest


def make_request(**overrides: Any) -> ActionRequest:
    fields: dict[str, Any] = {
        "idempotency_key": "conv-1:call_1",
        "conversation_id": "conv-1",
        "user_id": "alice",
        "name": "create_ticket",
        "arguments": {"title": "Printer on fire", "priority": "high"},
        "agent_config_version": "support@1",
        "trace_context": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    }
    fields.update(overrides)
    return ActionRequest(**fields)
