from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_registry import AgentRegistry

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "agent_configs" / "default.json"


@pytest.fixture
async def registry(aredis: aioredis.Redis) -> AsyncIterator[AgentRegistry]:
    yield AgentRegistry(aredis)


@pytest.fixture
def document() -> dict[str, Any]:
    """The shipped default configuration, as a fresh dict."""
    return json.loads(DEFAULT_CONFIG.read_text())
