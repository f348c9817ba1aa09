"""Scrub secrets from text and structures before anything is logged.

Covers what this system handles: bearer tokens and JWTs, Authorization/api-key headers, OpenAI
style keys, Azure connection-string keys (AccountKey, SharedAccessKey, ...), passwords in URLs,
and any mapping entry whose key names a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "[REDACTED]"

#: Mapping keys whose values are never logged, whatever they look like.
SECRET_KEY_RE = re.compile(
    r"^(?:.*[-_])?(?:authorization|api[-_]?key|subscription[-_]?key|password|passwd|pwd|secret|token|"
    r"access[-_]?token|refresh[-_]?token|id[-_]?token|jwt|credentials?|connection[-_]?string|sas|"
    r"signature|cookie|set-cookie|private[-_]?key|account[-_]?key|client[-_]?secret)$",
    re.IGNORECASE,
)

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer x / Basic x, in headers or text.
    (
        re.compile(
            r"(?i)\b(authorization\s*[:=]\s*[\"']?)(?:bearer|basic|sharedaccesssignature)?\s*[^\s\"',;}]+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1" + MASK),
    # JWTs anywhere (three base64url parts, header starting with {" -> eyJ).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # OpenAI-style keys.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
    # key=value secrets in connection strings, query strings and headers.
    (
        re.compile(
            r"(?i)\b((?:account|shared[-_]?access)[-_]?key|sig|password|pwd|api[-_]?key|"
            r"x-api-key|client[-_]?secret|secret|token|access[-_]?token|refresh[-_]?token)"
            r"(\"?\s*[:=]\s*\"?)[^\s;&\"',}]+"
        ),
        r"\1\2" + MASK,
    ),
    # user:password@ in URLs (redis://:pw@host, amqps://user:pw@host). Every repeat is bounded:
    # unbounded, a long word without "://" took time quadratic in its length (20 000 characters:
    # 12 s), and user text (a chat message, a comment) goes through here.
    (
        re.compile(r"([a-z][a-z0-9+.-]{0,31}://[^\s:/@]{0,256}:)[^\s@/]{1,512}@", re.IGNORECASE),
        r"\1" + MASK + "@",
    ),
]


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of value with secrets masked (strings scanned, secret-named keys masked)."""
    if depth > 8:
        return "[...]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            key: (MASK if isinstance(key, str) and SECRET_KEY_RE.search(key) else redact(item, depth + 1))
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(item, depth + 1) for item in value]
    return value
