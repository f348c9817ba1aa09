"""docs/openai-compatibility.md lists every parameter of OpenAI's published request, each with the
status the gateway's code gives it."""

from __future__ import annotations

import re
from pathlib import Path

from streaming_gateway.api.openai_request import IGNORED, PASSED_THROUGH, REFUSED, TOOL_OPTIONS
from tests.openai_compat.openai_schema import request_parameters, spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "openai-compatibility.md"
SUPPORTED = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "tools",
    "temperature",
    "max_completion_tokens",
    "max_tokens",
}


def documented() -> dict[str, str]:
    text = DOC.read_text()
    section = text.split("## `POST /v1/chat/completions` parameters", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([a-z ]+?)(?: \(.*?\))? \|", section, flags=re.MULTILINE)
    return dict(rows)


def test_every_published_parameter_is_documented() -> None:
    """The table has one row per parameter of CreateChatCompletionRequest, no more, no fewer."""
    assert set(documented()) == request_parameters()


def test_documented_status_matches_the_code() -> None:
    """Each row's status is the one openai_request gives the parameter."""
    expected = dict.fromkeys(SUPPORTED, "supported")
    expected |= dict.fromkeys((*PASSED_THROUGH, *TOOL_OPTIONS), "passed through")
    expected |= dict.fromkeys(IGNORED, "ignored")
    expected |= dict.fromkeys(REFUSED, "refused")
    assert documented() == expected


def test_doc_names_the_vendored_commit() -> None:
    """The page cites the commit of OpenAI's description the tests check against."""
    assert spec()["source"]["commit"][:7] in DOC.read_text()
