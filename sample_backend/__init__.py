"""A small tickets service the action pipeline dispatches to: create_ticket and get_ticket.

It honours the Idempotency-Key header (a repeat returns the first result and makes no second
ticket) and takes fault-injection rules, so tests and the local stack can make it fail on purpose.
"""

from sample_backend.app import create_backend_app
from sample_backend.faults import FaultRule

__all__ = ["FaultRule", "create_backend_app"]
