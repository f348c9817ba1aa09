"""Validators for the schemas of OpenAI's published API description (`openai_spec.json`).

The description says `openapi: 3.1.0`, whose schemas are JSON Schema 2020-12, but some of its
schemas still carry OpenAPI 3.0's `nullable: true` (the stream chunk's `logprobs`,
`finish_reason` and `usage`). JSON Schema ignores that keyword, so read literally a chunk with
`"logprobs": null` would be invalid although the API sends exactly that. Each `nullable: true`
schema becomes `anyOf: [schema, {"type": "null"}]`, which is what it means; `discriminator` and
the `x-` vendor keywords are documentation and are left out.

`strict=True` also closes every object schema that lists its properties (additionalProperties
false): the published schemas allow any extra key, so only the closed form catches a misspelt or
invented field in what the gateway sends.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC_PATH = Path(__file__).with_name("openai_spec.json")

#: Keywords whose value is one schema, a list of schemas, or a map of name -> schema.
_ONE = {
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
}
_MANY = {"anyOf", "oneOf", "allOf", "prefixItems"}
_MAP = {"properties", "patternProperties", "$defs", "dependentSchemas"}


@cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def to_json_schema(schema: Any, *, strict: bool = False) -> Any:
    """One OpenAPI schema object as plain JSON Schema 2020-12 (see the module docstring)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ONE:
            out[key] = to_json_schema(value, strict=strict)
        elif key in _MANY:
            out[key] = [to_json_schema(item, strict=strict) for item in value]
        elif key in _MAP:
            out[key] = {name: to_json_schema(item, strict=strict) for name, item in value.items()}
        elif key in {"nullable", "discriminator"} or key.startswith("x-"):
            continue
        else:
            out[key] = value
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if schema.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def validator(name: str, *, strict: bool = False) -> Draft202012Validator:
    """A validator for `#/components/schemas/<name>`, references resolved within the subset."""
    schemas = spec()["components"]["schemas"]
    root = {
        "$ref": f"#/components/schemas/{name}",
        "components": {
            "schemas": {key: to_json_schema(value, strict=strict) for key, value in schemas.items()}
        },
    }
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(name: str, instance: Any, *, strict: bool = False) -> list[str]:
    """Every way `instance` breaks the schema, as `path: message` lines (empty when it is valid)."""
    found = sorted(validator(name, strict=strict).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}" for error in found
    ]


def assert_valid(name: str, instance: Any, *, strict: bool = True) -> None:
    """Fail with every problem listed when `instance` is not a valid `name`."""
    found = problems(name, instance, strict=strict)
    if found:
        raise AssertionError(
            f"not a valid {name} ({'closed objects' if strict else 'as published'}):\n  "
            + "\n  ".join(found)
            + f"\ninstance: {json.dumps(instance)[:2000]}"
        )


def request_parameters() -> set[str]:
    """Every top-level parameter of CreateChatCompletionRequest, across its allOf parts."""
    schemas = spec()["components"]["schemas"]
    names: set[str] = set()

    def collect(schema: dict[str, Any]) -> None:
        if "$ref" in schema:
            collect(schemas[schema["$ref"].rsplit("/", 1)[-1]])
        names.update(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            collect(part)

    collect(schemas["CreateChatCompletionRequest"])
    return names
