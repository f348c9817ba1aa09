"""Read an agent configuration file (YAML or JSON) into a validated document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from agent_registry.errors import InvalidConfig
from agent_registry.schema import validate_document

#: Configs are small; a bigger file is a mistake (or an attack on the parser).
MAX_FILE_BYTES = 1024 * 1024


def read_document(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """The file's document (label replaced when given), checked against the schema."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidConfig(str(path), f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidConfig(str(path), f"is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        document = yaml.safe_load(raw) if path.suffix.lower() in (".yaml", ".yml") else json.loads(raw)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidConfig(str(path), f"cannot parse: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidConfig(str(path), "must be a mapping (a JSON object / YAML mapping)")
    try:
        json.dumps(document)
    except (TypeError, ValueError) as exc:  # YAML dates, sets, ...: not JSON, so no stable hash
        raise InvalidConfig(str(path), f"holds a value JSON cannot represent: {exc}") from None
    document.pop("version", None)
    if label is not None:
        document["label"] = label
    validate_document(document, str(path))
    return document
