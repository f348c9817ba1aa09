"""The `stacks` fixture shared by the `make dev` tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.local_stack.dev_stack import DevStack


@pytest.fixture
def stacks() -> Iterator[list[DevStack]]:
    """Stacks a test starts; whatever a failed test left is killed afterwards."""
    started: list[DevStack] = []
    yield started
    for stack in started:
        if stack.process is not None and stack.process.poll() is None:
            stack.process.kill()
        stack.kill_leftovers()
