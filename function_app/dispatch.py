"""One dispatch attempt: call the action's backend over HTTP and classify what happened.

Never raises for a backend's answer: the outcome says succeeded, transient_error (5xx, 408, 429,
timeout, connection failure; Retry-After kept) or permanent_error (other 4xx, invalid arguments),
so the orchestrator decides about retries with the whole picture.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from agent_contracts import ActionRequest
from agent_contracts.actions import utcnow
from function_app.errors import UnknownAction
from function_app.registry import ActionRegistry
from observability.propagation import consumer_span, inject_trace_context, mark_error

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_RESPONSE_BYTES = 256 * 1024
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def outcome(
    attempt: int,
    started: datetime,
    kind: str,
    *,
    status_code: int | None = None,
    error: str | None = None,
    result: Any = None,
    retry_after_s: float | None = None,
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "startedAt": started.isoformat(),
        "finishedAt": utcnow().isoformat(),
        "outcome": kind,
        "statusCode": status_code,
        "error": error,
        "result": result,
        "retryAfterS": retry_after_s,
    }


def validate_arguments(registry: ActionRegistry, request: ActionRequest) -> str | None:
    """None when the action exists and its arguments fit its schema, else the reason."""
    try:
        registry.get(request.name).url_and_body(request.arguments)
    except UnknownAction as exc:
        return str(exc)
    except ValidationError as exc:
        return f"invalid arguments for {request.name}: {exc.error_count()} errors: {exc.errors()[0]['msg']}"
    return None


async def dispatch_once(
    session: aiohttp.ClientSession,
    registry: ActionRegistry,
    request: ActionRequest,
    attempt: int,
    timeout_s: float,
) -> dict[str, Any]:
    started = utcnow()
    problem = validate_arguments(registry, request)
    if problem is not None:
        return outcome(attempt, started, "permanent_error", error=problem)
    spec = registry.get(request.name)
    url, body = spec.url_and_body(request.arguments)
    attributes = {
        "action.name": request.name,
        "action.id": str(request.action_id),
        "action.attempt": attempt,
        "http.request.method": spec.method,
        "url.full": url,
    }
    # A client span in the trace the gateway started for this turn; the backend gets it as parent.
    with consumer_span(
        f"dispatch {request.name}", request.trace_context, attributes, kind=SpanKind.CLIENT
    ) as span:
        result = await _call(session, spec.method, url, body, request, attempt, started, timeout_s)
        span.set_attribute("action.outcome", result["outcome"])
        if result["statusCode"] is not None:
            span.set_attribute("http.response.status_code", result["statusCode"])
        if result["outcome"] != "succeeded":
            mark_error(span, description=result["error"])
        return result


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    request: ActionRequest,
    attempt: int,
    started: datetime,
    timeout_s: float,
) -> dict[str, Any]:
    headers = {
        IDEMPOTENCY_HEADER: request.idempotency_key,
        "X-Action-Id": str(request.action_id),
        **inject_trace_context(),
    }
    try:
        async with session.request(
            method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except TimeoutError:
        return outcome(attempt, started, "transient_error", error=f"no answer within {timeout_s:.1f}s")
    except aiohttp.ClientError as exc:
        return outcome(attempt, started, "transient_error", error=f"{type(exc).__name__}: {exc}")
    if len(raw) > MAX_RESPONSE_BYTES:
        return outcome(
            attempt,
            started,
            "permanent_error",
            status_code=status,
            error=f"response larger than {MAX_RESPONSE_BYTES} bytes",
        )
    text = raw.decode("utf-8", errors="replace")
    try:
        payload: Any = json.loads(text) if text else None
    except ValueError:
        payload = text
    if 200 <= status < 300:
        return outcome(attempt, started, "succeeded", status_code=status, result=payload)
    detail = payload.get("error") if isinstance(payload, dict) else text[:300]
    kind = "transient_error" if status in TRANSIENT_STATUSES else "permanent_error"
    log.info("action %s attempt %d: %s %d", request.action_id, attempt, kind, status)
    return outcome(
        attempt,
        started,
        kind,
        status_code=status,
        error=f"HTTP {status}: {detail}",
        retry_after_s=retry_after if kind == "transient_error" else None,
    )
