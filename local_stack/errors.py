"""The local stack's errors: one root, each naming what to do (`make dev` prints it and stops)."""

from __future__ import annotations


class LocalStackError(RuntimeError):
    """Root of local_stack's errors: a port in use, a service that did not start, state not cleared."""
