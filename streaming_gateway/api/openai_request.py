"""The OpenAI chat completions request: parsed, checked against what the gateway supports.

Every parameter of OpenAI's `CreateChatCompletionRequest` is in one of three groups, listed here
and in docs/openai-compatibility.md (a test keeps the two and OpenAI's published description in
step):

- used by the gateway itself (`model` picks the agent, `messages`, `stream`, `stream_options`,
  `tools`, `temperature`, the token limits);
- passed through to the model unchanged (`PASSED_THROUGH`): they shape this one answer only;
- refused with a 400 naming the parameter (`refusal`) when set to anything but their neutral
  value: several choices (`n`), data the gateway does not relay (`logprobs`, audio), or what the
  operator decides (`store`, `service_tier`, moderation, prompt-cache retention).

Unknown fields are ignored, as many OpenAI-compatible servers do, so clients that add their own
keep working. Errors are 400s in OpenAI's shape: `param` is the parameter's path as the API writes
it (`messages[0].role`), `code` one of the API's (`missing_required_parameter`, `invalid_type`,
`invalid_value`, `unsupported_parameter`, `unsupported_value`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streaming_gateway.api.request_models import loads_body
from streaming_gateway.errors import BadRequest

#: Passed to the model as the client sent them.
PASSED_THROUGH = (
    "frequency_penalty",
    "logit_bias",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "stop",
    "top_p",
    "user",
    "verbosity",
)
#: Passed to the model with the client's own tools only (OpenAI refuses them without tools).
TOOL_OPTIONS = ("parallel_tool_calls", "tool_choice")
#: Accepted and not used: they ask nothing of the answer.
IGNORED = ("metadata", "prompt_cache_options")
#: Refused unless neutral (null, or the value in the second column).
REFUSED: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (),
    "audio": (),
    "modalities": (["text"],),
    "prediction": (),
    "web_search_options": (),
    "functions": (),
    "function_call": (),
    "store": (False,),
    "service_tier": ("auto", "default"),
    "moderation": (),
    "prompt_cache_retention": (),
}
WHY_REFUSED = {
    "n": "the gateway answers with one choice; n must be 1",
    "logprobs": "the gateway does not return log probabilities",
    "top_logprobs": "the gateway does not return log probabilities",
    "audio": "the gateway answers with text only",
    "modalities": "the gateway answers with text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not available through the gateway",
    "functions": "use tools; the deprecated functions parameter is not supported",
    "function_call": "use tool_choice; the deprecated function_call parameter is not supported",
    "store": "the gateway does not ask the model provider to store completions",
    "service_tier": "the service tier is the operator's choice",
    "moderation": "moderated completions are not supported",
    "prompt_cache_retention": "prompt-cache retention is the operator's choice",
}
MAX_STOP = 4


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=128)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class FunctionName(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionIn(BaseModel):
    """The request as far as the gateway checks it; other parameters are read from `extra`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool | None = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, int] | None = Field(default=None, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    reasoning_effort: str | None = Field(default=None, max_length=16)
    verbosity: Literal["low", "medium", "high"] | None = None

    def options(self) -> dict[str, Any]:
        """The parameters passed to the model unchanged (those the client set)."""
        sent = self.model_dump(include=set(PASSED_THROUGH), exclude_none=True, mode="json")
        if self.tools:
            sent.update(self.model_dump(include=set(TOOL_OPTIONS), exclude_none=True, mode="json"))
        return sent

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def param_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as the API writes a parameter: messages[0].content."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


_CODES = {"missing": "missing_required_parameter"}


def parse_request(raw: bytes) -> ChatCompletionIn:
    """The request body, or a 400 naming what is wrong with it."""
    data = loads_body(raw)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_type")
    try:
        body = ChatCompletionIn.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        # A union's failure is reported once per member; its location without the member's name.
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part[:1].isupper()))
        param = param_path(loc)
        kind = error["type"]
        code = _CODES.get(kind) or ("invalid_type" if kind.endswith("_type") else "invalid_value")
        message = (
            f"Missing required parameter: '{param}'."
            if kind == "missing"
            else f"Invalid value for '{param}': {error['msg']}."
        )
        raise BadRequest(message, code=code, field=param) from None
    check_supported(body)
    return body


def check_supported(body: ChatCompletionIn) -> None:
    """Refuse what the gateway cannot do rather than quietly answer something else."""
    extra = body.model_extra or {}
    for name, neutral in REFUSED.items():
        value = extra.get(name)
        if value is not None and value not in neutral:
            raise BadRequest(
                f"Unsupported parameter: '{name}': {WHY_REFUSED[name]}.",
                code="unsupported_parameter",
                field=name,
            )
    if isinstance(body.stop, list) and len(body.stop) > MAX_STOP:
        raise BadRequest(
            f"Invalid value for 'stop': at most {MAX_STOP} sequences.", code="invalid_value", field="stop"
        )
    if not body.tools:
        for name in TOOL_OPTIONS:
            if getattr(body, name) is not None and getattr(body, name) != "none":
                raise BadRequest(
                    f"Invalid value for '{name}': it is only allowed when 'tools' are specified.",
                    code="invalid_value",
                    field=name,
                )
    elif isinstance(body.tool_choice, NamedToolChoice):
        names = {(tool.get("function") or {}).get("name") for tool in body.tools}
        if body.tool_choice.function.name not in names:
            raise BadRequest(
                f"Invalid value for 'tool_choice': no tool named {body.tool_choice.function.name!r}"
                " in 'tools'.",
                code="invalid_value",
                field="tool_choice",
            )
    for index, message in enumerate(body.messages):
        if isinstance(message.content, list):
            for part_index, part in enumerate(message.content):
                if part.get("type") not in {"text", "refusal"}:
                    param = f"messages[{index}].content[{part_index}].type"
                    raise BadRequest(
                        f"Unsupported value for '{param}': {part.get('type')!r};"
                        " the gateway takes text parts only.",
                        code="unsupported_value",
                        field=param,
                    )
