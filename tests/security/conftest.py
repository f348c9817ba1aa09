"""The attack corpus runs against the real gateway: the app factory on a free port, the suite's
Redis, the scripted upstream over HTTP, and (for the XSS corpus) Debian's Chromium.

The gateway and browser fixtures come from tests/fixtures (pytest_plugins).
"""

from __future__ import annotations

import socket

import pytest


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, only used to pick an interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def lan_address() -> str:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to act as a remote peer")
    return address
