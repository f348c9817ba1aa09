"""The gateway's errors: one root, small subclasses carrying what the client needs to know.

Every error the gateway raises is a `GatewayError` (the LLM port's and a deleted conversation's
included). `as_gateway_error` is the one place where the failures of dependencies (Redis, the action
bus and its outbox) become gateway errors; the HTTP error middleware, the WebSocket session and the
chat engine's error events all go through it. The agent registry's own errors are caught where the
gateway asks it something: a configuration it cannot serve becomes `Unavailable`/`UnknownAgentConfig`
(agents/), a tool call whose arguments fail the tool's schema a failed action the model is told of
(chat/action_flow.py).

The body shape is OpenAI's (`{"error": {"message", "type", "code", "param"}}`) so the `openai`
SDK pointed at the gateway raises its usual exceptions with our message.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from action_bus.ports import ActionBusError

#: The message of `state_unavailable`: Redis (conversation state, the log) did not answer.
STATE_UNAVAILABLE = "conversation state is unavailable; retry shortly"


class GatewayError(Exception):
    """Root of the gateway's errors; `status` is the HTTP status a view answers with, `retryable`
    what an error event tells the client about sending the same message again."""

    status = 500
    code = "internal_error"
    kind = "server_error"
    retryable = False

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


class BadRequest(GatewayError):
    """An invalid request to the OpenAI-compatible API: 400, as OpenAI answers (its codes, e.g.
    `missing_required_parameter`, `invalid_value`, `unsupported_parameter`); on every route, a body
    that cannot be parsed as JSON (`invalid_json`)."""

    status, code, kind = 400, "invalid_value", "invalid_request_error"


class ModelNotFound(GatewayError):
    """A `model` that names no agent the caller may use (OpenAI's 404 `model_not_found`)."""

    status, code, kind = 404, "model_not_found", "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", field="model"
        )
        self.model = model


class Forbidden(GatewayError):
    """The caller is known but may not do this (403)."""

    status, code, kind = 403, "forbidden", "permission_error"


class AgentNotAllowed(Forbidden):
    """The agent's `access` does not admit the caller (to pin it, or to continue a conversation)."""

    code = "agent_not_allowed"

    def __init__(self, agent: str, *, field: str | None = None) -> None:
        super().__init__(f"you may not use agent {agent!r}", field=field)
        self.agent = agent


class OperatorRoleRequired(Forbidden):
    """Pinning a version other than the one the agent serves new conversations needs the operator role."""

    code = "operator_role_required"

    def __init__(self, version: str, role: str) -> None:
        super().__init__(
            f"agent config version {version!r} is not the agent's active version;"
            f" pinning it needs the {role!r} role",
            field="agent_config_version",
        )


class RateLimited(GatewayError):
    status, code, kind = 429, "rate_limited", "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int, limit: str) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = max(1, retry_after_s)
        self.limit = limit


class Unavailable(GatewayError):
    status, code, kind = 503, "unavailable", "server_error"
    retryable = True

    def __init__(self, message: str, *, code: str = "unavailable", retry_after_s: int = 2) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class UnknownAgentConfig(GatewayError):
    status, code, kind = 422, "unknown_agent_config", "invalid_request_error"


class AgentConfigWithdrawn(GatewayError):
    """The version was withdrawn from the registry: nobody may pin it or continue on it."""

    status, code, kind = 422, "agent_config_withdrawn", "invalid_request_error"

    def __init__(self, version: str) -> None:
        super().__init__(
            f"agent config version {version!r} was withdrawn; start a new conversation",
            field="agent_config_version",
        )


class ActionsUnavailable(Unavailable):
    """The outbox (or the bus behind it) could not take an action request: nothing was queued for it."""

    def __init__(self, message: str, *, retry_after_s: int = 2) -> None:
        super().__init__(message, code="actions_unavailable", retry_after_s=retry_after_s)


class ConversationGone(GatewayError):
    """The conversation was deleted (or expired) while something still wrote to it."""

    status, code, kind = 404, "conversation_not_found", "invalid_request_error"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} no longer exists")
        self.conversation_id = conversation_id


def as_gateway_error(exc: Exception) -> GatewayError:
    """What a failure means to a client: gateway errors as they are, Redis down as
    `state_unavailable`, the action bus or its outbox down as `actions_unavailable`. Anything else
    is a bug, answered as `internal_error` without its details."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ActionBusError):
        return ActionsUnavailable(f"the action could not be queued: {exc}")
    if isinstance(exc, (RedisError, OSError)):
        return Unavailable(STATE_UNAVAILABLE, code="state_unavailable")
    return GatewayError("internal error")
