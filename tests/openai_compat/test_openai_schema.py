"""The schema checker itself: OpenAI's published schemas read as the API means them."""

from __future__ import annotations

import copy
from typing import Any

from tests.openai_compat.openai_schema import problems, request_parameters, spec

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None}],
}
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_vendored_description_names_its_source() -> None:
    """The vendored subset records the repository and commit it was cut from."""
    source = spec()["source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert len(source["commit"]) == 40 and source["openapi"].startswith("3.")


def test_nullable_fields_accept_null() -> None:
    """OpenAPI 3.0 `nullable` (chunk logprobs, finish_reason, usage) admits null, as the API sends."""
    usage_chunk = {
        **CHUNK,
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    for chunk in (CHUNK, {**CHUNK, "usage": None}, usage_chunk):
        assert problems("CreateChatCompletionStreamResponse", chunk, strict=True) == []
    assert problems("CreateChatCompletionResponse", COMPLETION, strict=True) == []


def test_nullable_does_not_admit_other_types() -> None:
    """A nullable enum still refuses a value outside the enum."""
    chunk = copy.deepcopy(CHUNK)
    chunk["choices"][0]["finish_reason"] = "done"
    assert any("finish_reason" in p for p in problems("CreateChatCompletionStreamResponse", chunk))


def test_required_fields_are_enforced() -> None:
    """Missing message.refusal, choice.logprobs or usage.total_tokens are each reported."""
    completion = copy.deepcopy(COMPLETION)
    del completion["choices"][0]["message"]["refusal"]
    del completion["choices"][0]["logprobs"]
    del completion["usage"]["total_tokens"]
    found = "\n".join(problems("CreateChatCompletionResponse", completion))
    assert "'refusal' is a required property" in found
    assert "'logprobs' is a required property" in found
    assert "'total_tokens' is a required property" in found


def test_usage_null_is_not_a_usage_object() -> None:
    """A non-streamed completion's usage, when present, is an object: null is refused."""
    assert problems("CreateChatCompletionResponse", {**COMPLETION, "usage": None})


def test_strict_mode_catches_unknown_fields() -> None:
    """Published schemas allow extra keys; the closed form reports them."""
    odd = {**COMPLETION, "finish_reasons": "stop"}
    assert problems("CreateChatCompletionResponse", odd) == []
    assert problems("CreateChatCompletionResponse", odd, strict=True)


def test_error_body_shape() -> None:
    """An error body needs message, type, param and code; param and code may be null."""
    good = {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}
    assert problems("ErrorResponse", good, strict=True) == []
    assert problems("ErrorResponse", {"error": {"message": "m", "type": "t"}})


def test_request_parameters_are_read_across_all_of() -> None:
    """The request's parameters include those it takes from its allOf parts."""
    names = request_parameters()
    assert {"messages", "model", "temperature", "user", "stream_options", "n"} <= names
