"""What the gateway sends on its OpenAI API is valid against OpenAI's published schemas.

Responses, stream chunks and model objects are checked with every object closed (no field the
API does not describe); error bodies as published (the gateway adds `details` to validation
errors, which the published schema allows).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.gateway import Gateway
from tests.openai_compat import wire
from tests.openai_compat.openai_schema import assert_valid

MODEL = "default"  # the agent of agent_configs/default.json, as /v1/models lists it
ASK = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
WEATHER_CALL = [{"match": "weather", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}]


def usage_is_consistent(usage: dict[str, Any]) -> None:
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


async def test_completion_is_a_valid_chat_completion(gateway: Gateway, script) -> None:
    """A non-streamed answer validates as CreateChatCompletionResponse, with the fields the API always sends."""
    await script([{"match": "", "reply": "Plain answer here"}])
    answer = await wire.post(gateway, {"model": MODEL, "messages": ASK})
    assert answer.status == 200, answer.body
    assert_valid("CreateChatCompletionResponse", answer.body)
    choice = answer.body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Plain answer here", "refusal": None}
    assert choice["logprobs"] is None and choice["finish_reason"] == "stop"
    assert answer.body["model"] == MODEL
    usage_is_consistent(answer.body["usage"])


async def test_completion_names_its_configuration_in_system_fingerprint(gateway: Gateway, script) -> None:
    """system_fingerprint names the agent configuration that answered, streamed and not."""
    await script([{"match": "", "reply": "fingerprinted"}])
    answer = await wire.post(gateway, {"model": MODEL, "messages": ASK})
    cid = answer.headers["X-Conversation-Id"]
    async with gateway.request("GET", f"/v1/conversations/{cid}") as response:
        version = (await response.json())["agent_config_version"]
    assert answer.body["system_fingerprint"] == "fp_" + version.rsplit("@", 1)[1]
    streamed = await wire.stream(gateway, {"model": MODEL, "messages": ASK})
    assert {chunk["system_fingerprint"] for chunk in streamed.chunks} == {answer.body["system_fingerprint"]}


async def test_completion_counts_usage_the_upstream_did_not_report(gateway: Gateway, script) -> None:
    """An upstream that reports no usage still gives a usage object, counted by the gateway."""
    await script([{"match": "", "reply": "Three words here", "usage": False}])
    answer = await wire.post(gateway, {"model": MODEL, "messages": ASK})
    assert answer.status == 200, answer.body
    assert_valid("CreateChatCompletionResponse", answer.body)
    usage_is_consistent(answer.body["usage"])


async def test_tool_call_completion_is_valid(gateway: Gateway, script) -> None:
    """A client-tool call comes back as a valid completion with finish_reason tool_calls."""
    await script(WEATHER_CALL)
    answer = await wire.post(
        gateway, {"model": MODEL, "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS}
    )
    assert answer.status == 200, answer.body
    assert_valid("CreateChatCompletionResponse", answer.body)
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }


async def test_stream_chunks_are_valid(gateway: Gateway, script) -> None:
    """Every streamed chunk validates as CreateChatCompletionStreamResponse; one id, one finish, then [DONE]."""
    await script([{"match": "", "reply": "Streamed answer comes in pieces"}])
    streamed = await wire.stream(gateway, {"model": MODEL, "messages": ASK})
    assert streamed.status == 200 and streamed.done
    for chunk in streamed.chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert len({(c["id"], c["created"], c["model"]) for c in streamed.chunks}) == 1
    assert streamed.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in streamed.chunks if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"] and streamed.chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert streamed.text() == "Streamed answer comes in pieces"
    assert all(chunk.get("usage") is None for chunk in streamed.chunks)


async def test_stream_tool_call_chunks_are_valid(gateway: Gateway, script) -> None:
    """A streamed client-tool call validates chunk by chunk and ends with finish_reason tool_calls."""
    await script(WEATHER_CALL)
    streamed = await wire.stream(
        gateway, {"model": MODEL, "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS}
    )
    for chunk in streamed.chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    calls = [call for c in streamed.chunks for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather"
    assert streamed.chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_include_usage_ends_with_a_usage_chunk(gateway: Gateway, script) -> None:
    """stream_options.include_usage: a last chunk with empty choices and the usage, before [DONE]."""
    await script([{"match": "", "reply": "Counted answer"}])
    streamed = await wire.stream(
        gateway, {"model": MODEL, "messages": ASK, "stream_options": {"include_usage": True}}
    )
    for chunk in streamed.chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    last = streamed.chunks[-1]
    assert last["choices"] == [] and streamed.done
    usage_is_consistent(last["usage"])
    assert all(chunk.get("usage") is None for chunk in streamed.chunks[:-1])


async def test_include_usage_counts_when_the_upstream_does_not(gateway: Gateway, script) -> None:
    """The usage chunk comes even from an upstream that reports no usage."""
    await script([{"match": "", "reply": "Counted answer", "usage": False}])
    streamed = await wire.stream(
        gateway, {"model": MODEL, "messages": ASK, "stream_options": {"include_usage": True}}
    )
    last = streamed.chunks[-1]
    assert_valid("CreateChatCompletionStreamResponse", last)
    assert last["choices"] == []
    usage_is_consistent(last["usage"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "messages"),
        ({"messages": ASK}, "model"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": "hello"}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": ASK, "temperature": 3}, "temperature"),
        ({"model": MODEL, "messages": ASK, "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ],
)
async def test_invalid_requests_are_400_with_openai_error_bodies(
    gateway: Gateway, body: dict[str, Any], param: str
) -> None:
    """An invalid request is a 400 invalid_request_error naming the parameter, as the API answers."""
    answer = await wire.post(gateway, body)
    assert answer.status == 400, answer.body
    assert_valid("ErrorResponse", answer.body, strict=False)
    error = answer.body["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert isinstance(error["code"], str) and error["message"]


async def test_a_body_that_is_not_json_is_400(gateway: Gateway) -> None:
    """A body that is not JSON is a 400 with an OpenAI error body."""
    async with gateway.request(
        "POST", "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert_valid("ErrorResponse", await response.json(), strict=False)


async def test_other_errors_have_openai_error_bodies(gateway: Gateway, script) -> None:
    """401, 404 and an upstream failure answer with ErrorResponse bodies, streamed or not."""
    unauthenticated = await wire.post(gateway, {"model": MODEL, "messages": ASK}, user=None)
    assert unauthenticated.status == 401
    assert_valid("ErrorResponse", unauthenticated.body, strict=False)
    missing = await wire.post(
        gateway, {"model": MODEL, "messages": ASK}, **{"X-Conversation-Id": "conv_missing"}
    )
    assert missing.status == 404
    assert_valid("ErrorResponse", missing.body, strict=False)
    await script([{"match": "", "error": {"status": 500, "message": "model exploded"}}])
    failed = await wire.post(gateway, {"model": MODEL, "messages": ASK})
    assert failed.status == 502
    assert_valid("ErrorResponse", failed.body, strict=False)


async def test_stream_failure_is_an_error_event_then_the_end(gateway: Gateway, script) -> None:
    """An upstream failure mid-stream is one ErrorResponse event; no chunk with a finish_reason the API lacks."""
    await script([{"match": "", "reply": "one two three four", "drop_after": 2}])
    streamed = await wire.stream(gateway, {"model": MODEL, "messages": ASK})
    errors = [chunk for chunk in streamed.chunks if "error" in chunk]
    assert len(errors) == 1 and streamed.chunks[-1] is errors[0]
    assert_valid("ErrorResponse", errors[0], strict=False)
    for chunk in streamed.chunks[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert streamed.text() == "one two"


async def test_models_list_is_valid(gateway: Gateway) -> None:
    """GET /v1/models is a valid ListModelsResponse naming the agent, and each entry a valid Model."""
    answer = await wire.get(gateway, "/v1/models")
    assert answer.status == 200, answer.body
    assert_valid("ListModelsResponse", answer.body)
    assert MODEL in [model["id"] for model in answer.body["data"]]


async def test_model_retrieve_is_valid(gateway: Gateway) -> None:
    """GET /v1/models/{id} is a valid Model; an unknown id is a 404 ErrorResponse."""
    answer = await wire.get(gateway, f"/v1/models/{MODEL}")
    assert answer.status == 200, answer.body
    assert_valid("Model", answer.body)
    assert answer.body["id"] == MODEL
    missing = await wire.get(gateway, "/v1/models/no-such-agent")
    assert missing.status == 404
    assert_valid("ErrorResponse", missing.body, strict=False)
    assert missing.body["error"]["code"] == "model_not_found" and missing.body["error"]["param"] == "model"
