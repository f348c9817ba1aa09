"""Rebuild `openai_spec.json`: the schemas of OpenAI's published API description this suite checks.

    python -m tests.openai_compat.vendor_spec PATH/TO/openapi.yaml COMMIT

PATH is `openapi.yaml` of the github repository openai/openai-openapi at COMMIT. The file written
keeps the gateway's operations, the named schemas and every component they reference, unchanged,
with the source (repository, commit, licence) beside them. It is data the tests read, not code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
)
#: The operations the gateway serves (path, method).
OPERATIONS = (("/chat/completions", "post"), ("/models", "get"), ("/models/{model}", "get"))
TARGET = Path(__file__).with_name("openai_spec.json")


def referenced(components: dict[str, Any], roots: list[Any]) -> dict[str, dict[str, Any]]:
    """The roots' components and every component they reference, by kind (schemas, responses...)."""
    kept: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    _, _, kind, name = value.split("/")
                    if name not in kept.setdefault(kind, {}):
                        kept[kind][name] = components[kind][name]
                        walk(components[kind][name])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(roots)
    return {kind: dict(sorted(found.items())) for kind, found in sorted(kept.items())}


def strip_examples(node: Any) -> Any:
    """Drop the long `x-oaiMeta` example blocks: documentation, not schema."""
    if isinstance(node, dict):
        return {key: strip_examples(value) for key, value in node.items() if key != "x-oaiMeta"}
    if isinstance(node, list):
        return [strip_examples(item) for item in node]
    return node


def main(argv: list[str]) -> None:
    source, commit = Path(argv[0]), argv[1]
    spec = yaml.safe_load(source.read_text())
    paths: dict[str, Any] = {}
    for path, method in OPERATIONS:
        paths.setdefault(path, {})[method] = strip_examples(spec["paths"][path][method])
    subset = {
        "source": {
            "repository": "https://github.com/openai/openai-openapi",
            "path": "openapi.yaml",
            "commit": commit,
            "openapi": spec["openapi"],
            "api_version": spec["info"]["version"],
            "licence": "MIT License, Copyright (c) OpenAI (the repository's LICENSE)",
            "note": "Subset: the operations and schemas listed, and every schema they reference, unchanged "
            "except that x-oaiMeta documentation blocks are left out. Rebuilt by vendor_spec.py.",
        },
        "paths": paths,
        "components": strip_examples(
            referenced(
                spec["components"], [*({"$ref": f"#/components/schemas/{name}"} for name in ROOTS), paths]
            )
        ),
    }
    TARGET.write_text(json.dumps(subset, indent=1, sort_keys=False) + "\n")
    counts = ", ".join(f"{len(found)} {kind}" for kind, found in subset["components"].items())
    print(f"wrote {TARGET} ({counts})")


if __name__ == "__main__":
    main(sys.argv[1:])
