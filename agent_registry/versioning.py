"""Version ids: `<label>@<first 12 hex of sha256 of the canonical JSON document>`.

Canonical JSON is sorted keys, no spaces, UTF-8; the `version` key is never part of it. This is
the same rule the gateway's file loader uses, so a file has one version wherever it is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

HASH_LENGTH = 12
VERSION_RE = re.compile(r"^(?P<label>[A-Za-z0-9_.\-]{1,64})@(?P<hash>[0-9a-f]{12})$")


def canonical_json(document: dict[str, Any]) -> str:
    body = {key: value for key, value in document.items() if key != "version"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()[:HASH_LENGTH]


def version_of(document: dict[str, Any]) -> str:
    return f"{document['label']}@{content_hash(document)}"


def is_version(text: str) -> bool:
    return VERSION_RE.match(text) is not None
