"""Builders shared by the function app tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


def worker_tick(*workers: Any) -> Callable[[], Awaitable[None]]:
    """One step of each local worker, for `eventually(..., tick=...)`: take new messages, then run
    what is due. The real worker runs these as two loops; tests step them by hand."""

    async def tick() -> None:
        await asyncio.gather(*(worker.intake_once(0.05) for worker in workers))
        await asyncio.gather(*(worker.engine.run_due() for worker in workers))

    return tick
