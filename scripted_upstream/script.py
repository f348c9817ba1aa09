"""What the scripted upstream answers: an ordered list of rules, the first match wins."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SCRIPT_PATH = Path(__file__).with_name("default_script.json")


class ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ErrorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: int = 500
    message: str = "scripted upstream error"
    retry_after: float | None = None


class Rule(BaseModel):
    """One scripted answer. `match` is a regex searched in the last user message."""

    model_config = ConfigDict(extra="forbid")

    match: str = ""
    #: Answer when the last message is a tool result (role "tool") instead of a user message.
    on_tool_result: bool = False
    reply: str | None = None
    #: Filler words to stream instead of (or after) `reply`: lets benchmarks size answers.
    tokens: int = 0
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    error: ErrorSpec | None = None
    #: Close the connection after this many content chunks (simulates a dropped upstream).
    drop_after: int | None = None
    token_delay_ms: float = 0.0
    first_token_delay_ms: float = 0.0

    def matches(self, messages: list[dict[str, Any]]) -> bool:
        if not messages:
            return False
        last = messages[-1]
        if self.on_tool_result:
            return last.get("role") == "tool" and re.search(self.match, _text(last)) is not None
        if last.get("role") != "user":
            return False
        return re.search(self.match, _text(last), re.IGNORECASE) is not None

    def render_reply(self, messages: list[dict[str, Any]]) -> str:
        last = _text(messages[-1]) if messages else ""
        text = (self.reply or "").replace("{input}", last)
        if self.tokens:
            filler = " ".join(f"word{i}" for i in range(self.tokens))
            text = f"{text} {filler}".strip()
        return text


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)
    #: Applied when a rule leaves its delay at zero.
    default_token_delay_ms: float = 0.0

    def pick(self, messages: list[dict[str, Any]]) -> Rule:
        for rule in self.rules:
            if rule.matches(messages):
                return rule
        if messages and messages[-1].get("role") == "tool":
            return Rule(on_tool_result=True, reply="The action finished: {input}")
        return Rule(reply="You said: {input}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> Script:
        return cls.model_validate(json.loads(Path(path or DEFAULT_SCRIPT_PATH).read_text()))


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def split_tokens(text: str) -> list[str]:
    """Split into word-sized chunks that keep their leading space, as real token streams do."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])
