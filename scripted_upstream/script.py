"""What the scripted upstream answers: an ordered list of rules, the first match wins.

Replies and tool arguments are templates, so a script can behave like a small assistant and stay
deterministic. `{name}` is replaced by:
- for a rule that answers the user: `input` (the user's last message) or a named group of the
  rule's `match` regex, trimmed of spaces, of joining punctuation in front and end punctuation;
- for a rule that answers a tool result: `input` (the tool message), `tool` (the name of the tool
  called) and, when the tool message is a JSON object, its fields by dotted path (`status`,
  `error`, `result.ticketId`).
`{a|b|'text'}` takes the first of them that has a value, a quoted alternative being literal text. A
placeholder with no value stays as written, so a script's mistake shows in the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SCRIPT_PATH = Path(__file__).with_name("default_script.json")

PLACEHOLDER = re.compile(r"\{((?:[A-Za-z_][\w.]*|'[^'{}|]*')(?:\|(?:[A-Za-z_][\w.]*|'[^'{}|]*'))*)\}")
#: A tool argument filled from the user's words is cut to this many characters (the default tools'
#: longest string argument, a ticket title, allows 200).
MAX_FILLED_ARGUMENT = 200


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`result.ticketId`), or None."""
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def fill(template: str, values: Mapping[str, Any]) -> str:
    """Replace each placeholder by its first alternative that has a value (see the module's doc)."""

    def one(found: re.Match[str]) -> str:
        for alternative in found.group(1).split("|"):
            if alternative.startswith("'"):
                return alternative[1:-1]
            value = lookup(values, alternative)
            if value is None or value == "":
                continue
            return value if isinstance(value, str) else json.dumps(value)
        return found.group(0)

    return PLACEHOLDER.sub(one, template)


def _fill_arguments(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        filled = fill(value, values)
        return filled if filled == value else filled[:MAX_FILLED_ARGUMENT].rstrip()
    if isinstance(value, list):
        return [_fill_arguments(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill_arguments(item, values) for key, item in value.items()}
    return value


class ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    #: String values are templates (see the module's doc).
    arguments: dict[str, Any] = Field(default_factory=dict)

    def render(self, values: Mapping[str, Any]) -> dict[str, Any]:
        filled: dict[str, Any] = _fill_arguments(self.arguments, values)
        return filled


class ErrorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: int = 500
    message: str = "scripted upstream error"
    retry_after: float | None = None
    #: OpenAI's error fields, as a provider fills them for a request it refuses (e.g. a 400 naming
    #: the parameter at fault).
    type: str = "server_error"
    param: str | None = None
    code: str | None = None


class Rule(BaseModel):
    """One scripted answer. `match` is a regex searched in the last user message."""

    model_config = ConfigDict(extra="forbid")

    match: str = ""
    #: Answer when the last message is a tool result (role "tool") instead of a user message.
    on_tool_result: bool = False
    #: With on_tool_result: only the result of this tool (by the name the assistant called it)...
    tool: str | None = None
    #: ...and only a result whose JSON `status` is this one (succeeded, failed, dead_lettered).
    status: str | None = None
    reply: str | None = None
    #: Filler words to stream instead of (or after) `reply`: lets benchmarks size answers.
    tokens: int = 0
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    error: ErrorSpec | None = None
    #: Close the connection after this many content chunks (simulates a dropped upstream).
    drop_after: int | None = None
    token_delay_ms: float = 0.0
    first_token_delay_ms: float = 0.0
    #: False imitates an OpenAI-compatible server that never reports token usage, even when
    #: `stream_options.include_usage` asks for it (several local model servers behave so).
    usage: bool = True

    def matches(self, messages: list[dict[str, Any]]) -> bool:
        return self.values(messages) is not None

    def values(self, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        """What the templates may use when this rule answers `messages`; None when it does not match."""
        if not messages:
            return None
        last = messages[-1]
        text = _text(last)
        if self.on_tool_result:
            if last.get("role") != "tool" or re.search(self.match, text) is None:
                return None
            values = _tool_values(messages)
            if self.tool is not None and values.get("tool") != self.tool:
                return None
            if self.status is not None and values.get("status") != self.status:
                return None
            return values
        if last.get("role") != "user":
            return None
        found = re.search(self.match, text, re.IGNORECASE)
        if found is None:
            return None
        groups = {name: _trim(value) for name, value in found.groupdict().items() if value}
        return {**groups, "input": text}

    def render_reply(self, messages: list[dict[str, Any]]) -> str:
        text = fill(
            self.reply or "", self.values(messages) or {"input": _text(messages[-1]) if messages else ""}
        )
        if self.tokens:
            filler = " ".join(f"word{i}" for i in range(self.tokens))
            text = f"{text} {filler}".strip()
        return text

    def render_tool_calls(self, messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        values = self.values(messages) or {}
        return [(spec.name, spec.render(values)) for spec in self.tool_calls]


def _trim(words: str) -> str:
    """A named group's words without the punctuation that joined them to the rest of the message
    ("open a ticket, my screen is broken" is about "my screen is broken")."""
    return words.strip().lstrip(",;:-").strip().rstrip(".!?;,").strip()


def _tool_values(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A tool message's template values: its text, the tool's name, and its JSON fields if any."""
    last = messages[-1]
    values: dict[str, Any] = {}
    try:
        parsed = json.loads(_text(last))
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        values.update(parsed)
    call_id = last.get("tool_call_id")
    for message in reversed(messages[:-1]):
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == call_id:
                values["tool"] = (call.get("function") or {}).get("name")
                break
        if "tool" in values:
            break
    values["input"] = _text(last)
    return values


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
