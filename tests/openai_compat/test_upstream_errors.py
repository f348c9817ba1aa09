"""An upstream 4xx about a parameter the client passed through is the client's error: a 400 in
OpenAI's shape with the upstream's message, code and param, streamed or not; the model failing
for any other reason stays a 502."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fixtures.gateway import Gateway, make_token
from tests.openai_compat import wire
from tests.openai_compat.openai_schema import assert_valid

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
REFUSES_LOGIT_BIAS: dict[str, Any] = {
    "match": "",
    "error": {
        "status": 400,
        "type": "invalid_request_error",
        "message": "Invalid key in 'logit_bias': 99999999 is not a token id.",
        "param": "logit_bias",
        "code": "invalid_value",
    },
}


async def test_a_refused_pass_through_parameter_is_a_400_naming_it(gateway: Gateway, script) -> None:
    """Non-streamed and streamed, the client gets the upstream's message, code and param with 400."""
    await script([REFUSES_LOGIT_BIAS])
    body = {"model": "default", "messages": ASK, "logit_bias": {"99999999": 5}}
    expected = {
        "message": "Invalid key in 'logit_bias': 99999999 is not a token id.",
        "type": "invalid_request_error",
        "param": "logit_bias",
        "code": "invalid_value",
    }
    answer = await wire.post(gateway, body)
    assert answer.status == 400 and answer.body == {"error": expected}
    assert_valid("ErrorResponse", answer.body)
    assert answer.headers["X-Conversation-Id"]
    streamed = await wire.stream(gateway, body)
    assert streamed.status == 400 and streamed.chunks == [{"error": expected}]
    async with openai.AsyncOpenAI(
        base_url=gateway.url("/v1"), api_key=make_token("alice"), max_retries=0
    ) as client:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as raised:
                await client.chat.completions.create(
                    model="default", messages=ASK, logit_bias={"99999999": 5}, stream=stream
                )
            assert raised.value.param == "logit_bias" and raised.value.code == "invalid_value"


async def test_an_upstream_4xx_about_what_the_gateway_sent_stays_a_502(gateway: Gateway, script) -> None:
    """The same refusal naming a parameter the client did not choose (here: it sent no logit_bias,
    or the upstream blames `messages`) is the gateway's problem: 502 upstream_rejected."""
    blames_messages = {"match": "", "error": {**REFUSES_LOGIT_BIAS["error"], "param": "messages"}}
    for rule, body in (
        (REFUSES_LOGIT_BIAS, {"model": "default", "messages": ASK}),
        (blames_messages, {"model": "default", "messages": ASK, "seed": 1}),
    ):
        await script([rule])
        answer = await wire.post(gateway, body)
        assert answer.status == 502, answer.body
        assert answer.body["error"]["code"] == "upstream_rejected"
        assert answer.body["error"]["type"] == "server_error" and answer.body["error"]["param"] is None
