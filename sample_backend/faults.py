"""Fault injection: rules that make the next matching requests fail, hang or answer slowly."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from aiohttp import web


@dataclass
class FaultRule:
    """Applies to the next `times` requests matching method and path prefix.

    phase "before": fail (status) or stall (delay_s) before the effect happens.
    phase "after": make the effect, then stall (delay_s) and/or answer `status` instead of the result.
    """

    method: str = "*"
    path: str = "/"
    status: int | None = None
    times: int = 1
    delay_s: float = 0.0
    retry_after: int | None = None
    phase: Literal["before", "after"] = "before"
    body: str = "injected fault"

    def matches(self, request: web.Request) -> bool:
        return self.times > 0 and self.method in {"*", request.method} and request.path.startswith(self.path)


class FaultInjector:
    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self.rules: list[FaultRule] = list(rules or [])
        self.injected = 0

    @classmethod
    def from_json(cls, raw: str | None) -> FaultInjector:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            [FaultRule(**rule) for rule in (data.get("rules", []) if isinstance(data, dict) else data)]
        )

    def take(self, request: web.Request, phase: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.phase == phase and rule.matches(request):
                rule.times -= 1
                self.injected += 1
                return rule
        return None

    async def apply(self, rule: FaultRule) -> web.Response | None:
        if rule.delay_s:
            await asyncio.sleep(rule.delay_s)
        if rule.status is None:
            return None
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        return web.json_response({"error": rule.body}, status=rule.status, headers=headers)

    def snapshot(self) -> list[dict[str, Any]]:
        return [asdict(rule) for rule in self.rules if rule.times > 0]
