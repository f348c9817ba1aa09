"""Every test of this folder runs on asyncio's event loop and on uvloop's, the one
`python -m streaming_gateway` serves on (its TLS, socket errors and timeouts are uvloop's own)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
