"""Checks a model's tool-call arguments against the tool's JSON schema before anything is queued.

A deliberately small subset of JSON Schema (type, properties, required, additionalProperties,
enum, string lengths): enough to refuse malformed calls early with a readable reason. The backend
action validates again; this is about not queueing what cannot succeed.
"""

from __future__ import annotations

import json
from typing import Any

from streaming_gateway.errors import GatewayError

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class ToolArgumentsError(GatewayError):
    """The arguments do not fit the tool's schema; the message says where."""

    status, code, kind = 422, "invalid_tool_arguments", "invalid_request_error"


def parse_arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ToolArgumentsError(f"arguments are not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ToolArgumentsError("arguments must be a JSON object")
    return value


def check_arguments(schema: dict[str, Any], value: Any, path: str = "arguments") -> None:
    expected = schema.get("type")
    if isinstance(expected, str) and expected in _TYPES:
        ok = isinstance(value, _TYPES[expected])
        if ok and expected in {"integer", "number"} and isinstance(value, bool):
            ok = False
        if not ok:
            raise ToolArgumentsError(f"{path} must be of type {expected}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolArgumentsError(f"{path} must be one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise ToolArgumentsError(f"{path} is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ToolArgumentsError(f"{path} is longer than {schema['maxLength']}")
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise ToolArgumentsError(f"{path}.{name} is required")
        for name, item in value.items():
            if name in properties:
                check_arguments(properties[name], item, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                raise ToolArgumentsError(f"{path}.{name} is not an allowed property")
