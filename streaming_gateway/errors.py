"""The gateway's errors: one root, small subclasses carrying what the client needs to know.

The body shape is OpenAI's (`{"error": {"message", "type", "code", "param"}}`) so the `openai`
SDK pointed at the gateway raises its usual exceptions with our message.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Root of the gateway's errors; `status` is the HTTP status a view answers with."""

    status = 500
    code = "internal_error"
    kind = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": self.field,
        }
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class Unauthorized(GatewayError):
    status, code, kind = 401, "invalid_token", "authentication_error"

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        self.reason = reason


class NotFound(GatewayError):
    status, code, kind = 404, "not_found", "invalid_request_error"


class Conflict(GatewayError):
    status, code, kind = 409, "conflict", "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status, code, kind = 413, "payload_too_large", "invalid_request_error"


class InvalidInput(GatewayError):
    status, code, kind = 422, "invalid_input", "invalid_request_error"


class RateLimited(GatewayError):
    status, code, kind = 429, "rate_limited", "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int, limit: str) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = max(1, retry_after_s)
        self.limit = limit


class Unavailable(GatewayError):
    status, code, kind = 503, "unavailable", "server_error"

    def __init__(self, message: str, *, code: str = "unavailable", retry_after_s: int = 2) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class UnknownAgentConfig(GatewayError):
    status, code, kind = 422, "unknown_agent_config", "invalid_request_error"


class ActionsUnavailable(GatewayError):
    """The action bus is not wired (or refused the request): tool calls cannot be carried out."""

    status, code, kind = 503, "actions_unavailable", "server_error"
