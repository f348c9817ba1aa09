"""Request parameters: the ones passed through reach the model as sent; the ones refused are a 400
naming the parameter before anything is stored or sent upstream."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.fixtures.gateway import Gateway, upstream_stats
from tests.openai_compat import wire
from tests.openai_compat.openai_schema import assert_valid

MODEL = "default"
ASK = [{"role": "user", "content": "hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
    },
}


def passed(name: str, value: Any, *, sent: dict[str, Any] | None = None) -> Any:
    """A case: `name: value` in the request arrives at the model as `sent` (default: unchanged)."""
    return pytest.param({name: value}, sent or {name: value}, id=f"{name}={value!r}"[:60])


PASSED_THROUGH = [
    passed("temperature", 0.7),
    passed("max_completion_tokens", 5),
    passed("max_tokens", 7),
    passed("response_format", {"type": "json_object"}),
    passed("response_format", JSON_SCHEMA_FORMAT),
    passed("response_format", {"type": "text"}),
    passed("seed", 42),
    passed("stop", "END"),
    passed("stop", ["END", "STOP"]),
    passed("user", "user-1234"),
    passed("safety_identifier", "hashed-1234"),
    passed("prompt_cache_key", "cache-1"),
    passed("top_p", 0.5),
    passed("frequency_penalty", 0.5),
    passed("presence_penalty", -0.5),
    passed("logit_bias", {"50256": -100}),
    passed("reasoning_effort", "low"),
    passed("verbosity", "low"),
    pytest.param(
        {"tools": TOOLS, "parallel_tool_calls": False},
        {"parallel_tool_calls": False},
        id="parallel_tool_calls=False",
    ),
    pytest.param(
        {"tools": TOOLS, "tool_choice": "required"}, {"tool_choice": "required"}, id="tool_choice=required"
    ),
    pytest.param({"tools": TOOLS, "tool_choice": "none"}, {"tool_choice": "none"}, id="tool_choice=none"),
    pytest.param(
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        id="tool_choice=named",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), PASSED_THROUGH)
async def test_parameter_reaches_the_model(
    gateway: Gateway, upstream: TestServer, extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A passed-through parameter arrives in the upstream request as the client sent it."""
    answer = await wire.post(gateway, {"model": MODEL, "messages": ASK, **extra})
    assert answer.status == 200, answer.body
    sent = (await upstream_stats(upstream))["requests"][-1]
    assert {name: sent.get(name) for name in expected} == expected


async def test_max_completion_tokens_stays_within_the_agents_limit(
    gateway: Gateway, upstream: TestServer
) -> None:
    """A client's token limit above the agent's is lowered to the agent's, not refused."""
    answer = await wire.post(gateway, {"model": MODEL, "messages": ASK, "max_completion_tokens": 1_000_000})
    assert answer.status == 200, answer.body
    sent = (await upstream_stats(upstream))["requests"][-1]
    assert sent["max_completion_tokens"] == 1024 and "max_tokens" not in sent


async def test_neutral_values_of_unsupported_parameters_are_accepted(
    gateway: Gateway, upstream: TestServer
) -> None:
    """n 1, logprobs false, text-only modalities and nulls are what a client sends by default: accepted."""
    body = {
        "model": MODEL,
        "messages": ASK,
        "n": 1,
        "logprobs": False,
        "top_logprobs": None,
        "modalities": ["text"],
        "audio": None,
        "functions": None,
        "store": False,
        "stream_options": None,
        "seed": None,
    }
    answer = await wire.post(gateway, body)
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"store": True}, "store"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
        ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1].type",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_unsupported_parameter_is_a_400_naming_it(
    gateway: Gateway, upstream: TestServer, extra: dict[str, Any], param: str
) -> None:
    """An unsupported parameter (or value) is refused with a 400 naming it; nothing reaches the model."""
    answer = await wire.post(gateway, {"model": MODEL, "messages": ASK, **extra})
    assert answer.status == 400, answer.body
    assert_valid("ErrorResponse", answer.body, strict=False)
    error = answer.body["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] in {"unsupported_parameter", "unsupported_value", "invalid_value"}
    assert param.split("[")[0] in error["message"]
    assert (await upstream_stats(upstream))["requests"] == []
    assert "X-Conversation-Id" not in answer.headers


async def test_stateless_history_is_kept_for_a_new_conversation(
    gateway: Gateway, upstream: TestServer
) -> None:
    """Without X-Conversation-Id the whole history the client sends reaches the model, tool calls included."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
    ]
    answer = await wire.post(gateway, {"model": MODEL, "messages": messages, "tools": TOOLS})
    assert answer.status == 200, answer.body
    sent = (await upstream_stats(upstream))["requests"][-1]["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant", "tool"]
    assert sent[-2]["tool_calls"] == [call]


async def test_history_cannot_claim_calls_to_tools_the_request_lacks(
    gateway: Gateway, upstream: TestServer
) -> None:
    """An assistant tool call in the client's history must name one of the request's tools (not the agent's)."""
    call = {"id": "call_1", "type": "function", "function": {"name": "create_ticket", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "open a ticket"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ticket_id": "T-1"}'},
    ]
    answer = await wire.post(gateway, {"model": MODEL, "messages": messages})
    assert answer.status == 400
    assert answer.body["error"]["param"] == "messages[1].tool_calls[0].function.name"
    assert (await upstream_stats(upstream))["requests"] == []
