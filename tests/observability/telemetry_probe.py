"""Run in a child process by the tests: set up telemetry from the environment, emit, flush.

A child process because OpenTelemetry's providers are process-wide and set once; each test gets
a fresh process with exactly the environment it describes. Prints one JSON line of what it did.
"""

from __future__ import annotations

import json
import logging
import sys

from opentelemetry import trace

from observability import log_context, setup_observability


def main() -> int:
    telemetry = setup_observability("probe-service", stream=sys.stderr)
    log = logging.getLogger("probe")
    with trace.get_tracer("probe").start_as_current_span("probe-span") as span:
        with log_context(conversation_id="c-probe", config_version="default@0123456789ab"):
            log.warning("probe log with Authorization: Bearer sekrit-token-value and AccountKey=abc123==")
        trace_id = format(span.get_span_context().trace_id, "032x")
    telemetry.shutdown()
    logging.shutdown()
    print(json.dumps({"exporters": list(telemetry.exporters), "trace_id": trace_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
