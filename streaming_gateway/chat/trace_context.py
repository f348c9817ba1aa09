"""W3C trace context for action requests, so one trace spans the gateway and the function app.

The current OpenTelemetry span's context when one is active (observability/); otherwise the
caller's trace id from its `traceparent` header with a new span id, or a new trace.
"""

from __future__ import annotations

import re
import secrets

from observability import inject_trace_context

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def child_trace_context(incoming: str | None) -> dict[str, str]:
    current = inject_trace_context()
    if current.get("traceparent"):
        return current
    match = _TRACEPARENT.match(incoming or "")
    trace_id = match.group(1) if match and match.group(1) != "0" * 32 else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"}
