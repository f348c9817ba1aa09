"""From user feedback to draft cases: the conversations users rated low, as a cases file to review.

Each rated answer in the per-version feedback samples (observability/online.py) is traced back to
its conversation in the gateway's Redis; the user turns up to that answer become the case's turns,
and the last turn gets a draft `judge` expectation whose rubric tells the reviewer what to write.
Text passes through the same redaction as the logs (tokens, keys, passwords never land in a file
that gets committed). Conversations that expired are counted and skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from agent_contracts.redis_connection import AnyRedis
from evaluation.cases import MAX_TURNS, Case
from observability.online import FEEDBACK_SAMPLES, OnlineMetrics
from observability.redaction import redact_text
from streaming_gateway.state import redis_keys

#: Context for the reviewer in the case description; the whole answer stays in the conversation.
MAX_QUOTED_CHARS = 500
DRAFT_THRESHOLD = 0.7


@dataclass
class Export:
    cases: list[dict[str, Any]] = field(default_factory=list)
    expired: int = 0  # rated answers whose conversation is gone
    considered: int = 0  # rated answers at or below the rating limit

    def to_yaml(self, max_rating: int) -> str:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        header = (
            f"# Draft cases from user feedback (rating <= {max_rating}), exported {stamp}.\n"
            "# Review each before use: replace the DRAFT rubric with what a good answer must do (or with\n"
            "# exact checks such as contains/tool_calls), then move the case into a cases file.\n"
        )
        return header + yaml.safe_dump({"cases": self.cases}, sort_keys=False, allow_unicode=True, width=100)


def _quote(text: str) -> str:
    text = " ".join(redact_text(text).split())
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 1] + "…"


def _answer_text(message: dict[str, Any]) -> str:
    parts = [str(message.get("content") or "")]
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        parts.append(f"[tool call {function.get('name')}({function.get('arguments', '')})]")
    return " ".join(part for part in parts if part) or "(empty answer)"


def draft_case(entry: dict[str, Any], version: str, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The draft case for one rated answer, or None when the answer is not in the messages."""
    index = next(
        (
            i
            for i, m in enumerate(messages)
            if m.get("id") == entry["message_id"] and m.get("role") == "assistant"
        ),
        None,
    )
    if index is None:
        return None
    users = [redact_text(str(m.get("content") or "")) for m in messages[:index] if m.get("role") == "user"]
    users = [text for text in users if text.strip()][-MAX_TURNS:]
    if not users:
        return None
    rating, comment = entry["rating"], entry.get("comment")
    said = f' and said "{_quote(comment)}"' if comment else ""
    case = {
        "id": "fb-" + re.sub(r"[^A-Za-z0-9_.\-]", "", str(entry["message_id"]))[-40:],
        "description": f"rated {rating}/5 on {version}{said}. "
        f"The disliked answer: {_quote(_answer_text(messages[index]))}",
        "tags": ["feedback", "draft", f"rating-{rating}"],
        "turns": users,
        "expect": {
            "judge": {
                "rubric": (
                    f"DRAFT, to be written by the reviewer: what a good answer to the last message does. "
                    f"The user rated the earlier answer {rating}/5{said}."
                ),
                "threshold": DRAFT_THRESHOLD,
            }
        },
    }
    Case.model_validate(case)  # the export only ever writes cases the loader accepts
    return case


async def export_feedback(client: AnyRedis, *, max_rating: int, versions: list[str] | None = None) -> Export:
    """Draft cases for every sampled rating at or below max_rating, newest first, one per answer."""
    if not 1 <= max_rating <= 5:
        raise ValueError("--max-rating must be from 1 to 5")
    metrics = OnlineMetrics(client)
    export = Export()
    seen: set[tuple[str, str]] = set()
    for version in versions or await metrics.versions():
        for entry in await metrics.recent_feedback(version, limit=FEEDBACK_SAMPLES):
            key = (entry["conversation_id"], entry["message_id"])
            if key in seen:
                continue  # an older rating of the same answer: the newest one counts
            seen.add(key)
            if entry["rating"] > max_rating:
                continue
            export.considered += 1
            raw = await client.lrange(redis_keys.messages(entry["conversation_id"]), 0, -1)
            case = draft_case(entry, version, [json.loads(item) for item in raw])
            if case is None:
                export.expired += 1
                continue
            export.cases.append(case)
    return export
