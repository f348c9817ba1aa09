"""A model's tool-call arguments checked against the tool's JSON schema, before anything is queued.

The full JSON Schema (draft 2020-12) through `jsonschema`, with one validator per schema kept in
a small cache (a configuration's schemas never change). The backend action validates again with
its own model (agent_contracts/tools.py); this refuses early, with a readable reason, what
cannot succeed. Messages name the place in the arguments and never quote a long value:
`arguments.title is required`, `arguments.priority must be one of ['low', 'normal', 'high',
'urgent']`, `arguments.title must be at most 200 characters long`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from agent_registry.errors import InvalidToolCall

#: Past this the arguments are refused before they are parsed (a tool call is small).
MAX_ARGUMENTS_CHARS = 64 * 1024
MAX_REASON_CHARS = 200


def parse_arguments(raw: str) -> dict[str, Any]:
    """The arguments object of a tool call (an empty string is an empty object)."""
    if len(raw) > MAX_ARGUMENTS_CHARS:
        raise InvalidToolCall(f"arguments are {len(raw)} characters; the limit is {MAX_ARGUMENTS_CHARS}")
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidToolCall(f"arguments are not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise InvalidToolCall("arguments must be a JSON object")
    return value


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def _where(path: Iterable[str | int]) -> str:
    return "arguments" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _describe(error: ValidationError) -> str:
    where = _where(error.absolute_path)
    value: Any = error.validator_value
    if error.validator == "required" and isinstance(value, list) and isinstance(error.instance, dict):
        missing = [name for name in value if name not in error.instance]
        if missing:
            return f"{where}.{missing[0]} is required"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema.get("properties") or {}) if isinstance(error.schema, dict) else {})
        extra = sorted(name for name in error.instance if name not in allowed)
        if extra:
            return f"{where}.{extra[0]} is not an allowed property"
    if error.validator == "type":
        return f"{where} must be of type {value if isinstance(value, str) else ' or '.join(map(str, value))}"
    if error.validator == "enum":
        return f"{where} must be one of {value}"
    if error.validator == "maxLength":
        return f"{where} must be at most {value} characters long"
    if error.validator == "minLength":
        return f"{where} must be at least {value} characters long"
    if error.validator == "pattern":
        return f"{where} does not match the pattern {value}"
    # The rest quote the offending value: keep a model's long output out of the reason.
    message = error.message
    return (
        f"{where}: {message if len(message) <= MAX_REASON_CHARS else message[: MAX_REASON_CHARS - 1] + '…'}"
    )


def check_arguments(schema: dict[str, Any], arguments: Any) -> None:
    """Raise InvalidToolCall naming the most relevant problem when arguments break the schema."""
    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(arguments))
    if error is not None:
        raise InvalidToolCall(_describe(error))
