"""One error root for the gateway, and the one translation of dependency failures into it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

import streaming_gateway
from action_bus.outbox import OutboxUnavailable
from action_bus.ports import ActionBusError
from streaming_gateway.errors import (
    ActionsUnavailable,
    ConversationGone,
    GatewayError,
    NotFound,
    Unavailable,
    as_gateway_error,
)


def gateway_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a gateway module."""
    found: list[type[BaseException]] = []
    for module in pkgutil.walk_packages(streaming_gateway.__path__, "streaming_gateway."):
        if module.name.endswith("__main__"):
            continue
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found.append(value)
    return found


def test_every_gateway_exception_is_a_gateway_error() -> None:
    """No second root: the LLM port's and the stream log's errors included. (Agent configs and tool
    arguments are agent_registry's, under its RegistryError, and handled where they are caught.)"""
    found = gateway_exceptions()
    names = {cls.__name__ for cls in found}
    assert {"LLMError", "ConversationGone"} <= names
    assert [cls.__name__ for cls in found if not issubclass(cls, GatewayError)] == []


def test_gateway_errors_pass_through_unchanged() -> None:
    """A gateway error is already what the client gets."""
    error = NotFound("no such thing")
    assert as_gateway_error(error) is error
    gone = ConversationGone("conv_1")
    assert as_gateway_error(gone) is gone and gone.conversation_id == "conv_1" and gone.status == 404


@pytest.mark.parametrize("failure", [RedisConnectionError("refused"), ConnectionRefusedError(111, "refused")])
def test_redis_down_is_state_unavailable(failure: Exception) -> None:
    """Redis (or the socket under it) failing answers 503 state_unavailable, retryable, with Retry-After."""
    error = as_gateway_error(failure)
    assert isinstance(error, Unavailable)
    assert (error.status, error.code, error.retryable) == (503, "state_unavailable", True)
    assert error.headers["Retry-After"]


@pytest.mark.parametrize("failure", [OutboxUnavailable("redis down"), ActionBusError("refused")])
def test_action_bus_failures_are_actions_unavailable(failure: Exception) -> None:
    """The outbox or the bus refusing a request answers 503 actions_unavailable, retryable."""
    error = as_gateway_error(failure)
    assert isinstance(error, ActionsUnavailable)
    assert (error.status, error.code, error.retryable) == (503, "actions_unavailable", True)
    assert error.body()["error"]["code"] == "actions_unavailable"


def test_anything_else_is_an_internal_error_without_details() -> None:
    """A bug is answered as internal_error, and its message is not shown."""
    error = as_gateway_error(KeyError("secret detail"))
    assert (error.status, error.code) == (500, "internal_error")
    assert "secret" not in error.message
